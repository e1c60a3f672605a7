"""The compact EfficientNet backbone (B(phi)) and its classifier variant, built from a BackboneConfig.

Layer by layer as the reference builds it: a 3x3 stride-2 stem conv + BN + swish, then MBConv
blocks (optional 1x1 expand, k x k depthwise, squeeze-excite, 1x1 project, residual when the
shape is kept). Every width, repeat, kernel, stride, BN constant and drop-connect rate comes from
the config; the feature taps are the outputs of `config.tap_stages`, found from stage boundaries.

Parameter names (the same as `topology.py`'s, which the converter and the cost model read; a test
cross-checks the two trees): `stem_conv`, `stem_bn`,
`block_<i>` (i counts blocks over all stages, from 0) with `expand_conv`, `expand_bn` (absent when
expand ratio is 1), `dw_conv`, `dw_bn`, `se` (`reduce`, `expand`), `project_conv`, `project_bn`.
"""

from __future__ import annotations

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn

from efficienthrnet.config import BackboneConfig, ModelConfig
from efficienthrnet.nn.layers import Initializer, ModuleDef, conv_factory, he_normal, norm_factory
from efficienthrnet.nn.ops import DepthwiseConv, drop_connect, tf_same_padding

STEM_KERNEL = 3  # the stem is a 3x3 conv in every EfficientNet; its stride comes from the config


def _same(kernel: int, stride: int) -> tuple[tuple[int, int], tuple[int, int]]:
    pad = tf_same_padding(kernel, stride)
    return pad, pad


class SqueezeExcite(nn.Module):
    """Global average pool, 1x1 conv (bias) down, swish, 1x1 conv (bias) up, sigmoid gate."""

    reduced: int
    conv: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        s = jnp.mean(x, axis=(1, 2), keepdims=True)
        s = nn.swish(self.conv(self.reduced, (1, 1), use_bias=True, name="reduce")(s))
        s = self.conv(x.shape[-1], (1, 1), use_bias=True, name="expand")(s)
        return x * nn.sigmoid(s)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-excite (SE width from the block's input channels).

    `conv`, `depthwise` and `norm` are the backbone's layer factories (see `nn.layers`).
    """

    out_channels: int
    expand_ratio: int
    kernel: int
    stride: int
    se_ratio: float
    drop_connect_rate: float
    conv: ModuleDef
    depthwise: ModuleDef
    norm: ModuleDef

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        in_channels = x.shape[-1]
        h = x
        if self.expand_ratio != 1:
            h = self.conv(in_channels * self.expand_ratio, (1, 1), name="expand_conv")(h)
            h = nn.swish(self.norm(name="expand_bn")(h))
        h = self.depthwise(self.kernel, self.stride, _same(self.kernel, self.stride), name="dw_conv")(h)
        h = nn.swish(self.norm(name="dw_bn")(h))
        if self.se_ratio > 0:
            reduced = max(1, int(in_channels * self.se_ratio))
            h = SqueezeExcite(reduced, conv=self.conv, name="se")(h)
        h = self.conv(self.out_channels, (1, 1), name="project_conv")(h)
        h = self.norm(name="project_bn")(h)
        if self.stride == 1 and in_channels == self.out_channels:
            if train and self.drop_connect_rate > 0:
                h = drop_connect(h, self.drop_connect_rate, self.make_rng("dropout"))
            h = h + x
        return h


class EfficientNet(nn.Module):
    """Stem + MBConv stages. Returns the tapped stage outputs (or the last stage's output).

    `output="taps"` returns a tuple with the outputs of `config.tap_stages` (strides
    `config.tap_strides`); `output="last"` returns the final stage output (for the classifier).
    `kernel_init` initialises every conv kernel (He-normal by default).
    """

    config: BackboneConfig
    dtype: Any = jnp.float32
    depthwise_impl: str = "auto"
    output: str = "taps"
    kernel_init: Initializer = he_normal

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False):
        cfg = self.config
        if self.output not in ("taps", "last"):
            raise ValueError(f"EfficientNet output {self.output!r} must be 'taps' or 'last'")
        conv = conv_factory(self.dtype, self.kernel_init)
        norm = norm_factory(cfg.bn_eps, cfg.bn_decay, train, self.dtype)
        depthwise = functools.partial(
            DepthwiseConv, impl=self.depthwise_impl, dtype=self.dtype, kernel_init=self.kernel_init
        )
        x = conv(
            cfg.stem_channels,
            (STEM_KERNEL, STEM_KERNEL),
            strides=cfg.stem_stride,
            padding=_same(STEM_KERNEL, cfg.stem_stride),
            name="stem_conv",
        )(x.astype(self.dtype))
        x = nn.swish(norm(name="stem_bn")(x))
        stage_outputs = []
        block_index = 0
        for stage in cfg.stages:
            for repeat in range(stage.repeats):
                x = MBConv(
                    out_channels=stage.channels,
                    expand_ratio=stage.expand_ratio,
                    kernel=stage.kernel,
                    stride=stage.stride if repeat == 0 else 1,
                    se_ratio=cfg.se_ratio,
                    drop_connect_rate=cfg.drop_connect_rate,
                    conv=conv,
                    depthwise=depthwise,
                    norm=norm,
                    name=f"block_{block_index}",
                )(x, train=train)
                block_index += 1
            stage_outputs.append(x)
        if self.output == "last":
            return x
        return tuple(stage_outputs[i - 1] for i in cfg.tap_stages)


def _backbone_config(config: ModelConfig | BackboneConfig) -> BackboneConfig:
    if isinstance(config, ModelConfig):
        return config.backbone
    if isinstance(config, BackboneConfig):
        return config
    raise TypeError(f"expected a ModelConfig or BackboneConfig, got {type(config).__name__}")


class EfficientNetClassifier(nn.Module):
    """The backbone alone as an image classifier (the paper's Table 2 models B(phi)).

    Head: 1x1 conv to `classifier_head_channels` + BN + swish, global average pooling, dropout
    `classifier_dropout` (train mode, rng stream "dropout"), dense to `num_classes` logits.
    `config` may be a ModelConfig (its backbone is used) or a BackboneConfig.
    """

    config: ModelConfig | BackboneConfig
    num_classes: int
    dtype: Any = jnp.float32
    depthwise_impl: str = "auto"

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        cfg = _backbone_config(self.config)
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be at least 1, got {self.num_classes}")
        x = EfficientNet(
            cfg, dtype=self.dtype, depthwise_impl=self.depthwise_impl, output="last", name="backbone"
        )(x, train=train)
        x = conv_factory(self.dtype)(cfg.classifier_head_channels, (1, 1), name="head_conv")(x)
        x = norm_factory(cfg.bn_eps, cfg.bn_decay, train, self.dtype)(name="head_bn")(x)
        x = nn.swish(x)
        x = jnp.mean(x, axis=(1, 2))
        x = nn.Dropout(cfg.classifier_dropout, deterministic=not train)(x)
        return nn.Dense(self.num_classes, dtype=self.dtype, name="classifier")(x).astype(jnp.float32)
