"""Exact complexity of an EfficientHRNet config: params, MACs and FLOPs per layer and per part.

Everything here is computed from the config and the input shape by costing, layer by layer, the
network's description in `topology.py` (the list of layers the converter reads too), so nothing
is compiled or built, and a new block type needs no change here. Conventions (see DESIGN.md,
"Costs always say what they count"):

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

Layer names are the parameter paths of the Flax model (`efficienthrnet.nn`), so the costs can be
checked leaf by leaf against ``jax.eval_shape(model.init, ...)``.

Also here, beside the paper's tables as reported (`AS_REPORTED`, `AS_REPORTED_CLASSIFIERS`, from
`efficienthrnet.as_reported`): a side-by-side table for the CLI (`profile_table`,
`format_profile_table`) and `measure_latency`.
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

from .as_reported import (  # noqa: F401  (re-exported for existing callers)
    _DERIVED,
    AS_REPORTED,
    AS_REPORTED_CLASSIFIERS,
    ReportedClassifier,
    ReportedPoseModel,
)
from .config import ModelConfig
from .topology import (
    CLASSIFIER_PARTS,
    DECONV_STRIDE,
    HW,
    PARTS,
    RGB_CHANNELS,
    LayerSpec,
    classifier_layers,
    pose_layers,
)

__all__ = ["CLASSIFIER_PARTS", "DECONV_STRIDE", "PARTS", "Layer", "Profile", "layer_cost", "profile", "profile_classifier"]


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
    def activations(self) -> int:
        """Elements of every normalised feature map (each BatchNorm's output, batch 1): the
        memory traffic a small network's CPU step is bound by, more than by its MACs."""
        return sum(math.prod(layer.out_hw) * layer.params // 2 for layer in self.layers if layer.kind == "batchnorm")

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


# ----------------------------------------------------------------------------- costs of one layer


def _conv_cost(spec: LayerSpec) -> dict[str, int]:
    """A k x k conv (depthwise: one input channel per output channel), MACs at every output position."""
    k, (oh, ow) = spec.kernel, spec.out_hw
    per_tap = (1 if spec.kind == "depthwise" else spec.cin) * spec.cout
    valid = math.prod(_unpadded_taps(n, o, k, spec.stride, pad) for n, o, pad in zip(spec.in_hw, spec.out_hw, spec.pad))
    return {"params": k * k * per_tap + (spec.cout if spec.bias else 0), "macs": oh * ow * k * k * per_tap,
            "unpadded_macs": valid * per_tap}


def _deconv_cost(spec: LayerSpec) -> dict[str, int]:
    """Bias-free transposed conv: true MACs at the input resolution (each input pixel meets k*k
    taps); the paper's counter multiplies the kernel size by the *output* positions instead
    (stride**2 times too many). XLA runs it as a stride-1 conv over the stride-dilated input
    padded by k - 1 - pad, skipping the holes."""
    k, per_tap = spec.kernel, spec.cin * spec.cout
    valid = math.prod(_unpadded_taps(n, o, k, 1, k - 1 - pad, spec.stride)
                      for n, o, pad in zip(spec.in_hw, spec.out_hw, spec.pad))
    return {"params": k * k * per_tap, "macs": math.prod(spec.in_hw) * k * k * per_tap, "unpadded_macs": valid * per_tap,
            "paper_macs": math.prod(spec.out_hw) * k * k * per_tap}


def _dense_cost(spec: LayerSpec) -> dict[str, int]:
    macs = spec.cin * spec.cout
    return {"params": macs + spec.cout, "macs": macs, "unpadded_macs": macs}


def _batchnorm_cost(spec: LayerSpec) -> dict[str, int]:
    """scale + bias trainable, running mean + variance as statistics."""
    return {"params": 2 * spec.cout, "bn_stats": 2 * spec.cout}


_COSTS = {"conv": _conv_cost, "depthwise": _conv_cost, "deconv": _deconv_cost, "dense": _dense_cost,
          "batchnorm": _batchnorm_cost}


def layer_cost(spec: LayerSpec) -> Layer:
    """The costs of one layer of the topology (what the paper's counter prints, too)."""
    if spec.kind not in _COSTS:
        raise ValueError(f"layer {spec.name}: no cost rule for kind {spec.kind!r}; known kinds {sorted(_COSTS)}")
    cost = {"bn_stats": 0, "macs": 0, "unpadded_macs": 0, **_COSTS[spec.kind](spec)}
    cost.setdefault("paper_macs", cost["macs"])
    paper_params = cost["params"] * (2 if spec.in_mbconv else 1)  # get_model_summary counts these twice
    return Layer(name=spec.name, part=spec.part, kind=spec.kind, out_hw=spec.out_hw, paper_params=paper_params, **cost)


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
    return _summarise(cfg.name, hw, [layer_cost(spec) for spec in pose_layers(cfg, hw)], PARTS)


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
    costs = [layer_cost(spec) for spec in classifier_layers(bb, num_classes, hw)]
    layers = [dataclasses.replace(layer, paper_params=layer.params) for layer in costs]
    return _summarise(f"B(phi={cfg.phi:g}) {cfg.rule} classifier/{num_classes}", hw, layers, CLASSIFIER_PARTS)


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


@lru_cache(maxsize=8)
def _jitted_forward(cfg: ModelConfig, dtype, depthwise_impl: str):
    """The model and its jitted inference forward, one per (config, dtype, depthwise form)."""
    import jax

    from .nn.model import EfficientHRNet

    model = EfficientHRNet(cfg, dtype=dtype, depthwise_impl=depthwise_impl)
    return model, jax.jit(lambda v, x: model.apply(v, x, train=False))


def measure_latency(cfg: ModelConfig, input_size: int | Sequence[int] | None = None, batch: int = 1,
                    warmup: int = 3, repeats: int = 10, backend: str | None = None,
                    depthwise_impl: str = "auto", seed: int = 0, variables: Any = None,
                    dtype: str = "float32") -> dict[str, Any]:
    """Wall-clock time of a jitted inference forward pass of `EfficientHRNet(cfg)`.

    Runs on the first device of `backend` (default: JAX's default backend). `variables` are the
    model's weights; by default stand-in weights of the right shapes (the time does not depend on
    the values). The first call compiles (reported as `compile_s`; the jitted forward is kept per
    config, dtype and depthwise form, so timing a sweep's second seed compiles nothing); `warmup`
    further untimed calls follow, then `repeats` timed calls, each waited for with
    `block_until_ready`. Returns median, min, max, mean, standard deviation and interquartile
    range in milliseconds, the median process CPU time (all threads: on a shared machine wall
    time rises with the load, this much less), plus what was measured. `dtype` is the compute dtype (e.g. "bfloat16").
    """
    import jax
    import jax.numpy as jnp

    cfg = _check_config(cfg)
    h, w = _input_hw(cfg.input_size if input_size is None else input_size)
    for label, value, least in (("batch", batch, 1), ("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{label} must be an int >= {least}, got {value!r}")
    device = jax.devices(backend)[0] if backend else jax.devices()[0]
    model, forward = _jitted_forward(cfg, jnp.dtype(dtype), depthwise_impl)
    x = jax.device_put(jax.random.normal(jax.random.key(seed), (batch, h, w, RGB_CHANNELS), jnp.float32), device)
    if variables is None:
        shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
        variables = _stand_in_variables(shapes, seed)
    variables = jax.device_put(variables, device)

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
