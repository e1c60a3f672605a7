"""The high-resolution network of EfficientHRNet, exactly as the reference builds it.

Before every stage each existing branch passes through its own 3x3 conv (bias when
`transition_bias`) + BN + ReLU, and the stage's new lowest-resolution branch comes from the next
backbone tap (not from a strided conv of the previous branch, as in HRNet). Each stage runs
`modules_per_stage[k]` modules of `blocks_per_branch` BasicBlocks per branch followed by SUM
fusion; the last module of the last stage only produces the highest-resolution branch.

Parameter names: `transition<k>/branch_<b>/{conv,bn}`, `stage<k+1>/module_<m>/branch_<b>_block_<n>`
(`conv1`, `bn1`, `conv2`, `bn2`) and `stage<k+1>/module_<m>/fuse_<i>_<j>` (j > i: `conv`, `bn`;
j < i: `down_<s>/{conv,bn}`), with k = 1.. as in HigherHRNet's stage numbering.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from efficienthrnet.config import HRNetConfig
from efficienthrnet.nn.layers import Initializer, ModuleDef, conv_factory, he_normal, norm_factory
from efficienthrnet.nn.ops import torch_padding, upsample_nearest

# The HR network's convolutions: 3x3 everywhere except the 1x1 fuse projections. The reference
# pads them PyTorch-style (k // 2 on both sides), including the stride-2 fuse convs.
KERNEL = 3


def torch_conv(conv: ModuleDef, features: int, kernel: int = KERNEL, stride: int = 1, *,
               bias: bool = False, name: str | None = None) -> nn.Module:
    """A conv from the factory `conv` with PyTorch symmetric padding k // 2."""
    pad = torch_padding(kernel)
    return conv(features, (kernel, kernel), strides=stride, padding=(pad, pad), use_bias=bias, name=name)


class BasicBlock(nn.Module):
    """Two 3x3 convs with BN, ReLU between, identity residual, then ReLU (width is kept)."""

    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        width = x.shape[-1]
        h = torch_conv(self.conv, width, name="conv1")(x)
        h = nn.relu(self.norm(name="bn1")(h))
        h = torch_conv(self.conv, width, name="conv2")(h)
        h = self.norm(name="bn2")(h)
        return nn.relu(h + x)


class ConvBN(nn.Module):
    """conv -> BN -> optional ReLU, the unit of transitions and fuse layers."""

    features: int
    kernel: int
    stride: int
    bias: bool
    relu: bool
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = torch_conv(self.conv, self.features, self.kernel, self.stride, bias=self.bias, name="conv")(x)
        x = self.norm(name="bn")(x)
        return nn.relu(x) if self.relu else x


class FuseDown(nn.Module):
    """Branch j -> branch i (j < i): (i - j) stride-2 3x3 convs; BN+ReLU except the last (BN only)."""

    in_width: int
    out_width: int
    steps: int
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        for step in range(self.steps):
            last = step == self.steps - 1
            x = ConvBN(
                self.out_width if last else self.in_width,
                KERNEL,
                2,
                bias=False,
                relu=not last,
                conv=self.conv,
                norm=self.norm,
                name=f"down_{step}",
            )(x)
        return x


class HRModule(nn.Module):
    """Parallel BasicBlock branches followed by SUM fusion of every branch into every output."""

    widths: tuple[int, ...]
    blocks_per_branch: int
    single_output: bool
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
        layers = {"conv": self.conv, "norm": self.norm}
        branches = []
        for b, x in enumerate(xs):
            for n in range(self.blocks_per_branch):
                x = BasicBlock(**layers, name=f"branch_{b}_block_{n}")(x)
            branches.append(x)
        num_out = 1 if self.single_output else len(branches)
        outputs = []
        for i in range(num_out):
            total = branches[i]
            for j, xj in enumerate(branches):
                if j > i:
                    y = ConvBN(self.widths[i], 1, 1, bias=False, relu=False, **layers, name=f"fuse_{i}_{j}")(xj)
                    total = total + upsample_nearest(y, 2 ** (j - i))
                elif j < i:
                    total = total + FuseDown(
                        self.widths[j], self.widths[i], i - j, **layers, name=f"fuse_{i}_{j}"
                    )(xj)
            outputs.append(nn.relu(total))
        return tuple(outputs)


class Transition(nn.Module):
    """Per-branch 3x3 conv (+bias) + BN + ReLU mapping each input to its branch width."""

    widths: tuple[int, ...]
    bias: bool
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
        return tuple(
            ConvBN(w, KERNEL, 1, bias=self.bias, relu=True, conv=self.conv, norm=self.norm, name=f"branch_{b}")(x)
            for b, (w, x) in enumerate(zip(self.widths, xs))
        )


class Stage(nn.Module):
    """`num_modules` HRModules over the same branches; optionally the last is single-output."""

    widths: tuple[int, ...]
    num_modules: int
    blocks_per_branch: int
    single_output_last: bool
    conv: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, xs: Sequence[jax.Array]) -> tuple[jax.Array, ...]:
        for m in range(self.num_modules):
            xs = HRModule(
                self.widths,
                self.blocks_per_branch,
                single_output=self.single_output_last and m == self.num_modules - 1,
                conv=self.conv,
                norm=self.norm,
                name=f"module_{m}",
            )(xs)
        return xs


class HRNet(nn.Module):
    """Transitions and stages from the backbone taps to the highest-resolution feature map.

    `taps` are the backbone features at strides 4, 8, 16, 32 (one more than the number of stages):
    the first stage starts from the first two, every further stage adds the next one as its new branch.
    `kernel_init` initialises every conv kernel (He-normal by default).
    """

    config: HRNetConfig
    dtype: Any = jnp.float32
    kernel_init: Initializer = he_normal

    @nn.compact
    def __call__(self, taps: Sequence[jax.Array], train: bool = False) -> jax.Array:
        cfg = self.config
        num_stages = len(cfg.modules_per_stage)
        branch_counts = cfg.branches_per_stage
        if len(taps) != branch_counts[-1]:
            raise ValueError(
                f"HRNet with {num_stages} stages needs {branch_counts[-1]} backbone taps, got {len(taps)}; "
                "check the backbone's tap_stages"
            )
        if len(cfg.branch_widths) < branch_counts[-1]:
            raise ValueError(
                f"HRNet branch_widths {cfg.branch_widths} must list {branch_counts[-1]} widths"
            )
        layers = {
            "conv": conv_factory(self.dtype, self.kernel_init),
            "norm": norm_factory(cfg.bn_eps, cfg.bn_decay, train, self.dtype),
        }
        xs: tuple[jax.Array, ...] = ()
        for k in range(num_stages):
            n = branch_counts[k]
            widths = tuple(cfg.branch_widths[:n])
            # Existing branches keep their stream; the new ones start from the backbone taps.
            inputs = tuple(xs) + tuple(taps[len(xs) : n])
            xs = Transition(widths, bias=cfg.transition_bias, **layers, name=f"transition{k + 1}")(inputs)
            xs = Stage(
                widths,
                cfg.modules_per_stage[k],
                cfg.blocks_per_branch,
                single_output_last=k == num_stages - 1,
                **layers,
                name=f"stage{k + 2}",
            )(xs)
        return xs[0]
