"""Exact complexity of an EfficientHRNet config: params, MACs and FLOPs per layer and per part.

Everything here is computed from the config and the input shape by a small layer walk that
mirrors the network block for block (stem, MBConv, transition, BasicBlock, fuse, HR module,
head), so nothing is compiled or built. Conventions (see DESIGN.md, "Costs always say what
they count"):

- ``params``: trainable parameters; BatchNorm running mean/variance are ``bn_stats``, apart.
- ``macs``: multiply-accumulates of every conv/dense kernel tap at every output position
  (depthwise convs per channel, SE convs and classifier dense included; the transposed conv
  at its *input* resolution, in_h*in_w*k*k*cin*cout). BatchNorm, activations, pooling,
  resampling and biases are not counted. ``flops`` = 2 * ``macs``.
- ``unpadded_macs``: the same MACs without the kernel taps that land on zero padding (or, for
  the transposed conv, on the holes of the dilated input). XLA's cost analysis counts exactly
  these, at 2 FLOPs each, so ``xla_conv_flops`` = 2 * ``unpadded_macs`` is what
  ``jax.jit(f).lower(x).compile().cost_analysis()["flops"]`` reports for the convolutions.
- ``paper_params`` / ``paper_macs``: what the authors' ``get_model_summary`` prints, i.e. the
  paper's "as reported" figures. It counts every parameter inside an MBConv block twice (the
  block's class name contains "Conv") and costs the transposed conv at its output size.

Layer names are the parameter paths of the Flax model (`efficienthrnet.nn`), so the walk can be
checked leaf by leaf against ``jax.eval_shape(model.init, ...)``.

Also here: the paper's tables as reported (`AS_REPORTED`, `AS_REPORTED_CLASSIFIERS`), a
side-by-side table for the CLI (`profile_table`, `format_profile_table`) and `measure_latency`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from .config import BackboneConfig, HeadConfig, HRNetConfig, ModelConfig

PARTS = ("backbone", "transitions", "stage2", "stage3", "stage4", "head")
CLASSIFIER_PARTS = ("backbone", "classifier")

RGB_CHANNELS = 3
STEM_KERNEL = 3  # every EfficientNet stem is a 3x3 conv
HR_KERNEL = 3  # BasicBlocks, transitions and the stride-2 fuse convs
FUSE_UP_KERNEL = 1  # fuse projections from a lower-resolution branch
FINAL_KERNEL = 1  # the head's prediction convs
DECONV_STRIDE = 2  # each deconv doubles the resolution (1/4 -> 1/2)
# PyTorch (padding, output_padding) of a stride-2 ConvTranspose2d that exactly doubles the size.
_DECONV_TORCH_PADDING = {2: (0, 0), 3: (1, 1), 4: (1, 0)}

HW = tuple[int, int]


# ----------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Layer:
    """Cost of one parameterised layer (a conv, a transposed conv, a dense or a BatchNorm)."""

    name: str  # the layer's parameter path in the Flax model, e.g. "backbone/block_3/dw_conv"
    part: str  # one of PARTS (or CLASSIFIER_PARTS)
    kind: str  # "conv", "depthwise", "deconv", "dense" or "batchnorm"
    out_hw: HW
    params: int
    bn_stats: int
    macs: int
    unpadded_macs: int
    paper_params: int
    paper_macs: int


@dataclass(frozen=True)
class Profile:
    """Exact costs of one network at one input size (batch 1, one forward pass)."""

    name: str
    input_size: HW
    params: int
    bn_stats: int
    macs: int
    unpadded_macs: int
    paper_params: int
    paper_macs: int
    parts: dict[str, tuple[int, int]]  # part -> (params, macs)
    layers: tuple[Layer, ...]

    @property
    def flops(self) -> int:
        """2 FLOPs per multiply-accumulate."""
        return 2 * self.macs

    @property
    def xla_conv_flops(self) -> int:
        """What XLA's cost analysis counts for the convolutions and dense layers alone."""
        return 2 * self.unpadded_macs

    def part_layers(self, part: str) -> tuple[Layer, ...]:
        if part not in self.parts:
            raise ValueError(f"unknown part {part!r}; this profile has parts {tuple(self.parts)}")
        return tuple(layer for layer in self.layers if layer.part == part)

    def to_dict(self, with_layers: bool = False) -> dict[str, Any]:
        """Plain JSON-able dict (layers only on request: there are hundreds)."""
        out = {
            "name": self.name,
            "input_size": list(self.input_size),
            "params": self.params,
            "bn_stats": self.bn_stats,
            "macs": self.macs,
            "flops": self.flops,
            "unpadded_macs": self.unpadded_macs,
            "paper_params": self.paper_params,
            "paper_macs": self.paper_macs,
            "parts": {p: {"params": pm, "macs": m} for p, (pm, m) in self.parts.items()},
        }
        if with_layers:
            out["layers"] = [dataclasses.asdict(layer) for layer in self.layers]
        return out


# ----------------------------------------------------------------------------- shape arithmetic


def _input_hw(input_size: int | Sequence[int]) -> HW:
    """(h, w) from an int (square) or an (h, w) pair; raise on anything else."""
    if isinstance(input_size, bool):
        raise ValueError(f"input_size must be an int or an (h, w) pair of positive ints, got {input_size!r}")
    if isinstance(input_size, int):
        hw = (input_size, input_size)
    elif isinstance(input_size, Sequence) and len(input_size) == 2:
        hw = tuple(input_size)
    else:
        raise ValueError(f"input_size must be an int or an (h, w) pair of positive ints, got {input_size!r}")
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in hw):
        raise ValueError(f"input_size must be positive ints, got {input_size!r}; e.g. 512 or (384, 512)")
    return hw  # type: ignore[return-value]


def _tf_same(n_in: int, k: int, stride: int) -> tuple[int, int]:
    """(output size, low-side pad) of the model's TF-style padding (`nn.ops.tf_same_padding`).

    Like the reference, the total pad is fixed at max(k - s, 0), the low side getting the floor
    half; that is TF's SAME, out = ceil(in / stride), whenever the stride divides the size, and
    floor(in / stride) at odd sizes (the classifiers at 195, 169, 147), exactly as the model runs.
    """
    total = max(k - stride, 0)
    return (n_in + total - k) // stride + 1, total // 2


def _torch_pad(n_in: int, k: int, stride: int) -> tuple[int, int]:
    """(output size, low-side pad) of PyTorch padding k // 2 on both sides (odd k: same size as TF)."""
    pad = k // 2
    return (n_in + 2 * pad - k) // stride + 1, pad


@lru_cache(maxsize=4096)
def _unpadded_taps(n_in: int, n_out: int, k: int, stride: int, pad_lo: int, in_dilation: int = 1) -> int:
    """Number of (output position, kernel tap) pairs along one axis that read a real input pixel.

    Taps on the zero padding, and for a transposed conv (input dilated by `in_dilation`) taps on
    the inserted holes, multiply by zero; XLA's cost analysis leaves them out.
    """
    total = 0
    for t in range(k):
        if in_dilation == 1:
            # o * stride - pad_lo + t in [0, n_in)
            lo = max(0, -(-(pad_lo - t) // stride))
            hi = min(n_out - 1, (n_in - 1 + pad_lo - t) // stride)
        elif stride == 1:
            # o - pad_lo + t = in_dilation * i, i in [0, n_in), o in [0, n_out): count the i
            lo = max(0, -(-(t - pad_lo) // in_dilation))
            hi = min(n_in - 1, (n_out - 1 + t - pad_lo) // in_dilation)
        else:
            raise ValueError("a conv with both a window stride and an input dilation is not part of the model")
        total += max(0, hi - lo + 1)
    return total


# ----------------------------------------------------------------------------- the walk


class _Walk:
    """Collects Layer records; `part` and `in_mbconv` say where the walk currently is."""

    def __init__(self) -> None:
        self.layers: list[Layer] = []
        self.part = ""
        self.in_mbconv = False  # get_model_summary counts these parameters twice

    def add(self, name, kind, out_hw, params, bn_stats=0, macs=0, unpadded_macs=0, paper_macs=None):
        self.layers.append(
            Layer(
                name=name,
                part=self.part,
                kind=kind,
                out_hw=out_hw,
                params=params,
                bn_stats=bn_stats,
                macs=macs,
                unpadded_macs=unpadded_macs,
                paper_params=params * (2 if self.in_mbconv else 1),
                paper_macs=macs if paper_macs is None else paper_macs,
            )
        )


def _conv(walk: _Walk, name: str, hw: HW, cin: int, cout: int, k: int, stride: int = 1,
          groups: int = 1, bias: bool = False, padding: str = "tf_same") -> HW:
    """A k x k conv (`groups` == cin makes it depthwise); returns the output (h, w)."""
    shape = _tf_same if padding == "tf_same" else _torch_pad
    (oh, pad_h), (ow, pad_w) = shape(hw[0], k, stride), shape(hw[1], k, stride)
    per_tap = (cin // groups) * cout
    valid = _unpadded_taps(hw[0], oh, k, stride, pad_h) * _unpadded_taps(hw[1], ow, k, stride, pad_w)
    walk.add(
        name,
        "depthwise" if groups > 1 else "conv",
        (oh, ow),
        params=k * k * per_tap + (cout if bias else 0),
        macs=oh * ow * k * k * per_tap,
        unpadded_macs=valid * per_tap,
    )
    return oh, ow


def _deconv(walk: _Walk, name: str, hw: HW, cin: int, cout: int, k: int, stride: int = DECONV_STRIDE) -> HW:
    """Bias-free transposed conv that multiplies the size by `stride` (PyTorch padding/output_padding).

    True MACs at the input resolution (each input pixel meets k*k taps); the paper's counter
    multiplies the kernel size by the *output* positions instead (stride**2 times too many).
    """
    if k not in _DECONV_TORCH_PADDING or stride != DECONV_STRIDE:
        raise ValueError(f"deconv kernel {k} stride {stride}: supported kernels are {sorted(_DECONV_TORCH_PADDING)}, stride 2")
    pad, _ = _DECONV_TORCH_PADDING[k]
    out = (hw[0] * stride, hw[1] * stride)
    per_tap = cin * cout
    # computed as a stride-1 conv over the stride-dilated input padded by k - 1 - pad
    valid = math.prod(_unpadded_taps(n, o, k, 1, k - 1 - pad, stride) for n, o in zip(hw, out))
    walk.add(
        name, "deconv", out,
        params=k * k * per_tap,
        macs=hw[0] * hw[1] * k * k * per_tap,
        unpadded_macs=valid * per_tap,
        paper_macs=out[0] * out[1] * k * k * per_tap,
    )
    return out


def _batchnorm(walk: _Walk, name: str, hw: HW, channels: int) -> None:
    """scale + bias trainable, running mean + variance as statistics."""
    walk.add(name, "batchnorm", hw, params=2 * channels, bn_stats=2 * channels)


def _dense(walk: _Walk, name: str, cin: int, cout: int) -> None:
    walk.add(name, "dense", (1, 1), params=cin * cout + cout, macs=cin * cout, unpadded_macs=cin * cout)


def _conv_bn(walk, name, hw, cin, cout, k, stride=1, bias=False, padding="torch") -> HW:
    """`<name>/conv` + `<name>/bn`, the unit of transitions and fuse layers."""
    hw = _conv(walk, f"{name}/conv", hw, cin, cout, k, stride, bias=bias, padding=padding)
    _batchnorm(walk, f"{name}/bn", hw, cout)
    return hw


# ----------------------------------------------------------------------------- backbone


def _squeeze_excite(walk: _Walk, name: str, channels: int, reduced: int) -> None:
    """Two 1x1 convs with bias on the pooled (1 x 1) map."""
    _conv(walk, f"{name}/reduce", (1, 1), channels, reduced, 1, bias=True)
    _conv(walk, f"{name}/expand", (1, 1), reduced, channels, 1, bias=True)


def _mbconv(walk: _Walk, name: str, hw: HW, cin: int, cout: int, expand: int, k: int, stride: int,
            se_ratio: float) -> HW:
    """Expand 1x1 (unless expand == 1), depthwise k x k, squeeze-excite, project 1x1; all with BN."""
    walk.in_mbconv = True
    wide = cin * expand
    if expand != 1:
        _conv(walk, f"{name}/expand_conv", hw, cin, wide, 1)
        _batchnorm(walk, f"{name}/expand_bn", hw, wide)
    out = _conv(walk, f"{name}/dw_conv", hw, wide, wide, k, stride, groups=wide)
    _batchnorm(walk, f"{name}/dw_bn", out, wide)
    if se_ratio > 0:  # SE width from the block's input channels, as EfficientNet
        _squeeze_excite(walk, f"{name}/se", wide, max(1, int(cin * se_ratio)))
    _conv(walk, f"{name}/project_conv", out, wide, cout, 1)
    _batchnorm(walk, f"{name}/project_bn", out, cout)
    walk.in_mbconv = False
    return out


def _backbone(walk: _Walk, cfg: BackboneConfig, hw: HW, prefix: str = "backbone") -> list[tuple[HW, int]]:
    """Stem + MBConv stages; returns (hw, channels) of every stage output."""
    hw = _conv(walk, f"{prefix}/stem_conv", hw, RGB_CHANNELS, cfg.stem_channels, STEM_KERNEL, cfg.stem_stride)
    _batchnorm(walk, f"{prefix}/stem_bn", hw, cfg.stem_channels)
    channels, block, outputs = cfg.stem_channels, 0, []
    for stage in cfg.stages:
        for repeat in range(stage.repeats):
            stride = stage.stride if repeat == 0 else 1
            hw = _mbconv(walk, f"{prefix}/block_{block}", hw, channels, stage.channels, stage.expand_ratio,
                         stage.kernel, stride, cfg.se_ratio)
            channels, block = stage.channels, block + 1
        outputs.append((hw, channels))
    return outputs


# ----------------------------------------------------------------------------- HR network


def _basic_block(walk: _Walk, name: str, hw: HW, width: int) -> None:
    """Two 3x3 convs with BN; the identity residual needs no parameters."""
    for i in (1, 2):
        _conv(walk, f"{name}/conv{i}", hw, width, width, HR_KERNEL, padding="torch")
        _batchnorm(walk, f"{name}/bn{i}", hw, width)


def _transition(walk: _Walk, name: str, inputs: Sequence[tuple[HW, int]], widths: Sequence[int], bias: bool) -> None:
    """One 3x3 conv (+bias) + BN per branch, mapping each input to its branch width."""
    for b, ((hw, cin), width) in enumerate(zip(inputs, widths)):
        _conv_bn(walk, f"{name}/branch_{b}", hw, cin, width, HR_KERNEL, bias=bias)


def _fuse(walk: _Walk, name: str, hws: Sequence[HW], widths: Sequence[int], num_outputs: int) -> None:
    """SUM fusion: j > i is a 1x1 conv at branch j's resolution (then upsampled); j < i a chain of
    (i - j) stride-2 3x3 convs, keeping width j until the last one."""
    for i in range(num_outputs):
        for j, hw in enumerate(hws):
            if j > i:
                _conv_bn(walk, f"{name}/fuse_{i}_{j}", hw, widths[j], widths[i], FUSE_UP_KERNEL)
            elif j < i:
                for step in range(i - j):
                    cout = widths[i] if step == i - j - 1 else widths[j]
                    hw = _conv_bn(walk, f"{name}/fuse_{i}_{j}/down_{step}", hw, widths[j], cout, HR_KERNEL, 2)


def _hr_module(walk: _Walk, name: str, hws: Sequence[HW], widths: Sequence[int], blocks: int,
               single_output: bool) -> None:
    for b, (hw, width) in enumerate(zip(hws, widths)):
        for n in range(blocks):
            _basic_block(walk, f"{name}/branch_{b}_block_{n}", hw, width)
    _fuse(walk, name, hws, widths, 1 if single_output else len(hws))


def _hrnet(walk: _Walk, cfg: HRNetConfig, taps: Sequence[tuple[HW, int]]) -> tuple[HW, int]:
    """Transitions and stages; returns (hw, channels) of the highest-resolution output."""
    branches: list[tuple[HW, int]] = []
    num_stages = len(cfg.modules_per_stage)
    if len(taps) != cfg.branches_per_stage[-1]:
        raise ValueError(f"the HR network needs {cfg.branches_per_stage[-1]} backbone taps, the config gives {len(taps)}")
    for k, (modules, n) in enumerate(zip(cfg.modules_per_stage, cfg.branches_per_stage)):
        widths = cfg.branch_widths[:n]
        # existing branches continue from the previous stage; each new one starts at a backbone tap
        inputs = branches + list(taps[len(branches):n])
        walk.part = "transitions"
        _transition(walk, f"hrnet/transition{k + 1}", inputs, widths, cfg.transition_bias)
        walk.part = f"stage{k + 2}"
        hws = [hw for hw, _ in inputs]
        for m in range(modules):
            single = k == num_stages - 1 and m == modules - 1
            _hr_module(walk, f"hrnet/stage{k + 2}/module_{m}", hws, widths, cfg.blocks_per_branch, single)
        branches = list(zip(hws, widths))
    return branches[0]


# ----------------------------------------------------------------------------- head


def _head(walk: _Walk, cfg: HeadConfig, hw: HW, channels: int) -> None:
    """1x1 prediction at 1/4; per deconv: concat, transposed conv + BN, BasicBlocks, 1x1 prediction."""
    walk.part = "head"
    _conv(walk, "head/final_0", hw, channels, cfg.quarter_channels, FINAL_KERNEL, bias=True)
    predicted = cfg.quarter_channels
    for d in range(cfg.num_deconvs):
        hw = _deconv(walk, f"head/deconv_{d}/deconv", hw, channels + predicted, cfg.deconv_channels, cfg.deconv_kernel)
        _batchnorm(walk, f"head/deconv_{d}/bn", hw, cfg.deconv_channels)
        for n in range(cfg.blocks_per_deconv):
            _basic_block(walk, f"head/deconv_{d}/block_{n}", hw, cfg.deconv_channels)
        _conv(walk, f"head/final_{d + 1}", hw, cfg.deconv_channels, cfg.half_channels, FINAL_KERNEL, bias=True)
        channels, predicted = cfg.deconv_channels, cfg.half_channels


# ----------------------------------------------------------------------------- public API


def _summarise(name: str, hw: HW, layers: Sequence[Layer], parts: Sequence[str]) -> Profile:
    split = {p: (0, 0) for p in parts}
    for layer in layers:
        params, macs = split[layer.part]
        split[layer.part] = (params + layer.params, macs + layer.macs)
    return Profile(
        name=name,
        input_size=hw,
        params=sum(layer.params for layer in layers),
        bn_stats=sum(layer.bn_stats for layer in layers),
        macs=sum(layer.macs for layer in layers),
        unpadded_macs=sum(layer.unpadded_macs for layer in layers),
        paper_params=sum(layer.paper_params for layer in layers),
        paper_macs=sum(layer.paper_macs for layer in layers),
        parts=split,
        layers=tuple(layers),
    )


def _check_config(cfg: Any) -> ModelConfig:
    if not isinstance(cfg, ModelConfig):
        raise TypeError(
            f"expected a ModelConfig, got {type(cfg).__name__}; build one with "
            "efficienthrnet.scaling.generate_config(phi, rule)"
        )
    return cfg


def profile(cfg: ModelConfig, input_size: int | Sequence[int] | None = None) -> Profile:
    """Exact params, MACs (and paper-counter figures) of `EfficientHRNet(cfg)`.

    `input_size` is an int (square) or (h, w); it defaults to `cfg.input_size`. Every conv's
    output size follows the model's fixed max(k - s, 0) padding: ceil(in / stride) at every size
    the pose model accepts (multiples of 32), floor(in / stride) where a size is odd.

    >>> from efficienthrnet.scaling import generate_config
    >>> p = profile(generate_config(0, rule="reference"))
    >>> p.params, round(p.macs / 1e9, 2)
    (19725359, 23.96)
    """
    cfg = _check_config(cfg)
    hw = _input_hw(cfg.input_size if input_size is None else input_size)
    walk = _Walk()
    walk.part = "backbone"
    stage_outputs = _backbone(walk, cfg.backbone, hw)
    taps = [stage_outputs[i - 1] for i in cfg.backbone.tap_stages]
    top_hw, top_channels = _hrnet(walk, cfg.hrnet, taps)
    _head(walk, cfg.head, top_hw, top_channels)
    return _summarise(cfg.name, hw, walk.layers, PARTS)


def profile_classifier(cfg: ModelConfig, num_classes: int = 1000,
                       resolution: int | Sequence[int] | None = None) -> Profile:
    """Exact params and MACs of the backbone-alone classifier B(phi) (`EfficientNetClassifier`).

    Backbone, then a 1x1 conv to `classifier_head_channels` + BN, global pooling and a dense layer
    with bias to `num_classes`. `resolution` defaults to `cfg.backbone.classifier_resolution`.
    Sizes follow the model's padding as in `profile`: at the odd resolutions 195 / 169 / 147 that
    gives 0.254 / 0.147 / 0.088 G for B-1..B-3, as measured on the reference; the paper's 0.3B /
    0.2B / 0.1B round these (B-2's 0.2B only when rounded up).
    Parts are "backbone" and "classifier". The paper counted these models correctly, so the
    paper-counter fields equal the true ones here.
    """
    cfg = _check_config(cfg)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    bb = cfg.backbone
    hw = _input_hw(bb.classifier_resolution if resolution is None else resolution)
    walk = _Walk()
    walk.part = "backbone"
    last_hw, channels = _backbone(walk, bb, hw)[-1]
    walk.part = "classifier"
    _conv(walk, "head_conv", last_hw, channels, bb.classifier_head_channels, 1)
    _batchnorm(walk, "head_bn", last_hw, bb.classifier_head_channels)
    _dense(walk, "classifier", bb.classifier_head_channels, num_classes)
    layers = [dataclasses.replace(layer, paper_params=layer.params) for layer in walk.layers]
    return _summarise(f"B(phi={cfg.phi:g}) {cfg.rule} classifier/{num_classes}", hw, layers, CLASSIFIER_PARTS)


# ----------------------------------------------------------------------------- the paper, as reported


@dataclass(frozen=True)
class ReportedPoseModel:
    """One EfficientHRNet row of the paper, as reported (not recomputed).

    `flops` is the paper's "FLOPs" column: in fact multiply-accumulates from a counter that costs
    the transposed conv 4x (see `Profile.paper_macs`). `params` is inflated by the same counter.
    """

    model: str
    phi: int
    input_size: int
    params: float  # Table 3/4 "# Params"
    flops: float  # Table 3/4 "FLOPs" (really MACs, as reported)
    test_dev_ap: float  # Table 3, single-scale test
    test_dev_ap_multiscale: float  # Table 3, multi-scale test
    val_ap: float  # Table 4, COCO val2017
    fps_jetson_nx: float  # Table 4, TensorRT on the Jetson Xavier NX


# The paper's Tables 3 and 4 (reference/000_d900ee25c266dc4b.txt), as reported.
AS_REPORTED: dict[int, ReportedPoseModel] = {
    0: ReportedPoseModel("H0", 0, 512, 23.3e6, 25.6e9, 64.0, 67.1, 64.8, 22.95),
    -1: ReportedPoseModel("H-1", -1, 480, 16.0e6, 14.2e9, 59.1, 62.3, 59.2, 20.43),
    -2: ReportedPoseModel("H-2", -2, 448, 10.3e6, 7.7e9, 52.8, 55.0, 52.9, 24.53),
    -3: ReportedPoseModel("H-3", -3, 416, 6.9e6, 4.2e9, 44.5, 45.5, 44.8, 33.78),
    -4: ReportedPoseModel("H-4", -4, 384, 3.7e6, 2.1e9, 35.5, 39.7, 35.7, 50.96),
}


@dataclass(frozen=True)
class ReportedClassifier:
    """One compact-EfficientNet row of the paper's Table 2, as reported (None: not legible)."""

    model: str
    phi: int
    resolution: int
    flops: float  # "FLOPs" (MACs)
    imagenet_params: float
    imagenet_top1: float | None
    cifar100_params: float
    cifar100_top1: float | None
    note: str = ""


_DERIVED = "top-1 not legible in the table; derived from the drops stated in section 4.1.4 (3.7 and 2.1 points)"
AS_REPORTED_CLASSIFIERS: dict[int, ReportedClassifier] = {
    0: ReportedClassifier("B0", 0, 224, 0.4e9, 5.3e6, 75.0, 4.1e6, 81.9),
    -1: ReportedClassifier("B-1", -1, 195, 0.3e9, 4.5e6, 73.8, 3.5e6, 81.4),
    -2: ReportedClassifier("B-2", -2, 170, 0.2e9, 3.4e6, 71.3, 2.5e6, 79.8, _DERIVED),
    -3: ReportedClassifier("B-3", -3, 147, 0.1e9, 2.8e6, None, 1.9e6, None, "top-1 not legible in the table"),
    -4: ReportedClassifier("B-4", -4, 128, 0.05e9, 1.3e6, 65.6, 1.3e6, 74.3,
                           "ImageNet params 1.3M look copied from the CIFAR column; true 2.06M"),
}


# ----------------------------------------------------------------------------- tables for the CLI


def profile_table(phis: Iterable[float], rule: str = "efficienthrnet",
                  input_size: int | Sequence[int] | None = None, keypoints: str = "coco17"):
    """One row per phi: true params/MACs/FLOPs, the per-part split, the paper counter's figures and
    the paper's as-reported figures (for integer phi in `AS_REPORTED`, whatever the rule) side by side.

    Returns a pandas DataFrame with raw integer counts (params, MACs) and float reported values.
    """
    import pandas as pd

    from .scaling import generate_config

    rows = []
    for phi in phis:
        cfg = generate_config(phi, rule=rule, keypoints=keypoints)  # the schema sets the head's width
        p = profile(cfg, input_size)
        row: dict[str, Any] = {
            "phi": cfg.phi, "rule": cfg.rule, "input_h": p.input_size[0], "input_w": p.input_size[1],
            "params": p.params, "bn_stats": p.bn_stats, "macs": p.macs, "flops": p.flops,
        }
        for part, (params, macs) in p.parts.items():
            row[f"params_{part}"], row[f"macs_{part}"] = params, macs
        row["paper_counter_params"], row["paper_counter_macs"] = p.paper_params, p.paper_macs
        reported = AS_REPORTED.get(int(cfg.phi)) if float(cfg.phi).is_integer() else None
        row["reported_input"] = reported.input_size if reported else None
        row["reported_params"] = reported.params if reported else None
        row["reported_flops"] = reported.flops if reported else None
        rows.append(row)
    return pd.DataFrame(rows)


def _fmt(value, scale: float, digits: int) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value / scale:.{digits}f}"


def format_profile_table(df) -> str:
    """Text rendering of `profile_table` for the terminal: M params, G MACs/FLOPs, per-part MACs."""
    import pandas as pd

    view = pd.DataFrame({
        "phi": [f"{v:g}" for v in df["phi"]],
        "rule": df["rule"],
        "input": [f"{h}x{w}" for h, w in zip(df["input_h"], df["input_w"])],
        "params M": [_fmt(v, 1e6, 3) for v in df["params"]],
        "MACs G": [_fmt(v, 1e9, 3) for v in df["macs"]],
        "FLOPs G": [_fmt(v, 1e9, 3) for v in df["flops"]],
        **{f"{part} G": [_fmt(v, 1e9, 2) for v in df[f"macs_{part}"]] for part in PARTS},
        "paper-counter M/G": [f"{_fmt(a, 1e6, 3)}/{_fmt(b, 1e9, 3)}"
                              for a, b in zip(df["paper_counter_params"], df["paper_counter_macs"])],
        "as reported M/G@input": [f"{_fmt(a, 1e6, 1)}/{_fmt(b, 1e9, 1)}@{int(r)}" if pd.notna(a) else "-"
                                  for a, b, r in zip(df["reported_params"], df["reported_flops"],
                                                     df["reported_input"])],
    })
    legend = (
        "params: trainable (BatchNorm statistics apart); MACs: multiply-accumulates, batch 1, one pass; "
        "FLOPs = 2 x MACs.\npaper-counter: the authors' get_model_summary (MBConv params counted twice, "
        "deconv MACs at output size); as reported: the paper's Tables 3/4 (its 'FLOPs' are such MACs)."
    )
    return view.to_string(index=False) + "\n" + legend


def profile_command(phis: Iterable[float], rule: str = "efficienthrnet",
                    input_size: int | None = None, as_json: bool = False, keypoints: str = "coco17") -> str:
    """What `efficienthrnet profile --phi ... [--rule R] [--input-size S] [--keypoints K] [--json]` prints."""
    df = profile_table(list(phis), rule, input_size, keypoints)
    if as_json:
        return json.dumps(json.loads(df.to_json(orient="records")), indent=2)
    return format_profile_table(df)


# ----------------------------------------------------------------------------- latency


def _stand_in_variables(shapes, seed: int):
    """Weights for timing without running `model.init` (whose compile costs more than the forward's).

    Kernels ~ N(0, 1/fan_in) so activations stay O(1) through the depth (no inf/denormal slow
    paths), BN scales and running variances 1, biases and running means 0.
    """
    import jax
    import numpy as np

    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        if name in ("scale", "var"):
            return np.ones(leaf.shape, leaf.dtype)
        if name in ("bias", "mean") or len(leaf.shape) < 2:
            return np.zeros(leaf.shape, leaf.dtype)
        fan_in = math.prod(leaf.shape[:-1])
        return (rng.standard_normal(leaf.shape) / math.sqrt(fan_in)).astype(leaf.dtype)

    return jax.tree_util.tree_map_with_path(fill, shapes)


def measure_latency(cfg: ModelConfig, input_size: int | Sequence[int] | None = None, batch: int = 1,
                    warmup: int = 3, repeats: int = 10, backend: str | None = None,
                    depthwise_impl: str = "auto", seed: int = 0, variables: Any = None,
                    dtype: str = "float32") -> dict[str, Any]:
    """Wall-clock time of a jitted inference forward pass of `EfficientHRNet(cfg)`.

    Runs on the first device of `backend` (default: JAX's default backend). `variables` are the
    model's weights; by default stand-in weights of the right shapes (the time does not depend on
    the values). The first call compiles (reported as `compile_s`); `warmup` further untimed
    calls follow, then `repeats` timed calls, each waited for with `block_until_ready`. Returns
    median, min, max, mean, standard deviation and interquartile range in milliseconds, the
    median process CPU time (all threads: on a shared machine wall time rises with the load,
    this much less), plus what was measured. `dtype` is the compute dtype (e.g. "bfloat16").
    """
    import jax
    import jax.numpy as jnp

    from .nn.model import EfficientHRNet

    cfg = _check_config(cfg)
    h, w = _input_hw(cfg.input_size if input_size is None else input_size)
    for label, value, least in (("batch", batch, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{label} must be an int >= {least}, got {value!r}")
    device = jax.devices(backend)[0] if backend else jax.devices()[0]
    model = EfficientHRNet(cfg, dtype=jnp.dtype(dtype), depthwise_impl=depthwise_impl)
    x = jax.device_put(jax.random.normal(jax.random.key(seed), (batch, h, w, RGB_CHANNELS), jnp.float32), device)
    if variables is None:
        shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
        variables = _stand_in_variables(shapes, seed)
    variables = jax.device_put(variables, device)
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))

    start = time.perf_counter()
    jax.block_until_ready(forward(variables, x))
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(forward(variables, x))
    times_ms, cpu_ms = [], []
    for _ in range(repeats):
        start, cpu_start = time.perf_counter(), time.process_time()
        jax.block_until_ready(forward(variables, x))
        times_ms.append((time.perf_counter() - start) * 1e3)
        cpu_ms.append((time.process_time() - cpu_start) * 1e3)
    quartiles = statistics.quantiles(times_ms, n=4) if repeats > 1 else [times_ms[0]] * 3
    return {
        "config": cfg.name,
        "input_size": [h, w],
        "batch": batch,
        "backend": device.platform,
        "device": str(device),
        "depthwise_impl": depthwise_impl,
        "dtype": dtype,
        "warmup": warmup,
        "repeats": repeats,
        "compile_s": compile_s,
        "median_ms": statistics.median(times_ms),
        "min_ms": min(times_ms),
        "max_ms": max(times_ms),
        "mean_ms": statistics.fmean(times_ms),
        "std_ms": statistics.stdev(times_ms) if repeats > 1 else 0.0,
        "iqr_ms": quartiles[2] - quartiles[0],
        "times_ms": times_ms,
        "process_cpu_ms": statistics.median(cpu_ms),
    }
