"""The HigherHRNet-style prediction head: heatmaps + tags at 1/4, a deconv block, heatmaps at 1/2.

Per deconv d (the reference has one): concat [features, previous predictions], PyTorch-style
transposed conv k s2 p(k-2)/2 (no bias) to `deconv_channels`, BN, ReLU, `blocks_per_deconv`
BasicBlocks, then a 1x1 conv (bias) to the next resolution's heatmaps.

Parameter names: `final_0` (1x1 at 1/4), `deconv_<d>/{deconv,bn,block_<n>}`, `final_<d+1>`.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from efficienthrnet.config import HeadConfig
from efficienthrnet.nn.hrnet import BasicBlock, batch_norm
from efficienthrnet.nn.ops import TorchConvTranspose, conv_kernel_init

FINAL_KERNEL = 1  # the reference's FINAL_CONV_KERNEL
DECONV_STRIDE = 2  # each deconv doubles the resolution (1/4 -> 1/2)


def deconv_padding(kernel: int) -> tuple[int, int]:
    """(padding, output_padding) that make a stride-2 ConvTranspose2d exactly double the size."""
    if kernel == 4:
        return 1, 0
    if kernel == 3:
        return 1, 1
    if kernel == 2:
        return 0, 0
    raise ValueError(f"deconv_kernel {kernel} is not supported; use 2, 3 or 4 (HigherHRNet's choices)")


class DeconvBlock(nn.Module):
    """Transposed conv + BN + ReLU, then BasicBlocks at the new resolution."""

    config: HeadConfig
    dtype: Any = jnp.float32

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = self.config
        padding, output_padding = deconv_padding(cfg.deconv_kernel)
        x = TorchConvTranspose(
            cfg.deconv_channels,
            cfg.deconv_kernel,
            DECONV_STRIDE,
            padding,
            output_padding,
            dtype=self.dtype,
            name="deconv",
        )(x)
        x = nn.relu(batch_norm(cfg.bn_eps, cfg.bn_decay, train, self.dtype, "bn")(x))
        for n in range(cfg.blocks_per_deconv):
            x = BasicBlock(cfg.bn_eps, cfg.bn_decay, self.dtype, name=f"block_{n}")(x, train)
        return x


class Head(nn.Module):
    """Returns (out_1/4 [B,h,w,quarter_channels], out_1/2 [B,2h,2w,half_channels], ...)."""

    config: HeadConfig
    dtype: Any = jnp.float32

    def _final(self, channels: int, name: str) -> nn.Conv:
        return nn.Conv(
            channels, (FINAL_KERNEL, FINAL_KERNEL), use_bias=True, dtype=self.dtype,
            kernel_init=conv_kernel_init, name=name,
        )

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
        cfg = self.config
        x = features
        y = self._final(cfg.quarter_channels, "final_0")(x)
        outputs = [y]
        for d in range(cfg.num_deconvs):
            x = jnp.concatenate([x, y.astype(x.dtype)], axis=-1)
            x = DeconvBlock(cfg, self.dtype, name=f"deconv_{d}")(x, train)
            y = self._final(cfg.half_channels, f"final_{d + 1}")(x)
            outputs.append(y)
        return tuple(outputs)
