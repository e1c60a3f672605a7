"""The HigherHRNet-style prediction head: heatmaps + tags at 1/4, a deconv block, heatmaps at 1/2.

Per deconv d (the reference has one): concat [features, previous predictions], PyTorch-style
transposed conv k s2 p(k-2)/2 (no bias) to `deconv_channels`, BN, ReLU, `blocks_per_deconv`
BasicBlocks, then a 1x1 conv (bias) to the next resolution's heatmaps.

Parameter names: `final_0` (1x1 at 1/4), `deconv_<d>/{deconv,bn,block_<n>}`, `final_<d+1>`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from efficienthrnet.config import HeadConfig
from efficienthrnet.nn.hrnet import BasicBlock
from efficienthrnet.nn.layers import Initializer, ModuleDef, conv_factory, he_normal, norm_factory
from efficienthrnet.nn.ops import TorchConvTranspose

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
    conv: ModuleDef
    norm: ModuleDef
    deconv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        cfg = self.config
        padding, output_padding = deconv_padding(cfg.deconv_kernel)
        x = self.deconv(cfg.deconv_channels, cfg.deconv_kernel, DECONV_STRIDE, padding, output_padding, name="deconv")(x)
        x = nn.relu(self.norm(name="bn")(x))
        for n in range(cfg.blocks_per_deconv):
            x = BasicBlock(conv=self.conv, norm=self.norm, name=f"block_{n}")(x)
        return x


class Head(nn.Module):
    """Returns (out_1/4 [B,h,w,quarter_channels], out_1/2 [B,2h,2w,half_channels], ...).

    `kernel_init` initialises the deconv blocks' kernels, `output_kernel_init` the prediction
    convs `final_*` (both He-normal by default).
    """

    config: HeadConfig
    dtype: Any = jnp.float32
    kernel_init: Initializer = he_normal
    output_kernel_init: Initializer = he_normal

    @nn.compact
    def __call__(self, features: jax.Array, train: bool = False) -> tuple[jax.Array, ...]:
        cfg = self.config
        final = conv_factory(self.dtype, self.output_kernel_init)
        layers = {
            "conv": conv_factory(self.dtype, self.kernel_init),
            "norm": norm_factory(cfg.bn_eps, cfg.bn_decay, train, self.dtype),
            "deconv": functools.partial(TorchConvTranspose, dtype=self.dtype, kernel_init=self.kernel_init),
        }
        x = features
        y = final(cfg.quarter_channels, (FINAL_KERNEL, FINAL_KERNEL), use_bias=True, name="final_0")(x)
        outputs = [y]
        for d in range(cfg.num_deconvs):
            x = jnp.concatenate([x, y.astype(x.dtype)], axis=-1)
            x = DeconvBlock(cfg, **layers, name=f"deconv_{d}")(x)
            y = final(cfg.half_channels, (FINAL_KERNEL, FINAL_KERNEL), use_bias=True, name=f"final_{d + 1}")(x)
            outputs.append(y)
        return tuple(outputs)
