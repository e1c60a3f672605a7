"""Compound scaling: a rule file (data) plus pure functions phi -> architecture.

A `ScalingRule` is loaded from a TOML file in `scaling_rules/`; it holds every coefficient,
base value and rounding mode. The functions below only apply them, one rounding rule per
function, so two rules can be compared by diffing their files. `generate_config(phi, rule)`
assembles the frozen `ModelConfig`.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from .config import (
    BUDGET_PHI_STEP,
    DECONV_KERNELS,
    HEAD_OUTPUT_STRIDES,
    MAX_PHI_VALUES,
    MIN_PROXY_INPUT,
    NETWORK_STRIDE,
    PHI_DECIMALS,
    BackboneConfig,
    HeadConfig,
    HRNetConfig,
    MBConvStage,
    ModelConfig,
)
from .keypoints import get_schema

RULES_DIR = Path(__file__).resolve().parent / "scaling_rules"
ROUNDING_MODES = ("ceil", "floor", "round", "none")
STAGE_ROW = ("expand_ratio", "channels", "repeats", "stride", "kernel")  # backbone.stages columns


# ----------------------------------------------------------------------------- phi values


def is_real(value: Any) -> bool:
    """True for Python and NumPy real scalars (int, float, np.float32, np.int64, ...), not bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, (bool, np.bool_))


def phi_range(start: float, stop: float, step: float) -> tuple[float, ...]:
    """start, start + step, ... towards stop: stop included when hit exactly, never passed.

    Descending when start > stop (step may then be given negative or positive); a step whose sign
    points away from stop is refused. Counting is float-safe: 0:1:0.6 gives (0, 0.6) and
    -1:0:0.1 gives 11 values, each rounded to PHI_DECIMALS so that ids stay stable. At most
    MAX_PHI_VALUES: a typo such as 0:4:1e-9 must not build a billion-entry list.
    """
    values = {"start": start, "stop": stop, "step": step}
    for name, value in values.items():
        if not is_real(value) or not math.isfinite(float(value)):
            raise ValueError(f"phi range {name} must be a finite number, got {value!r}")
    start, stop, step = float(start), float(stop), float(step)
    if step == 0:
        raise ValueError(f"phi range {start:g}:{stop:g}:{step:g}: step must not be 0")
    direction = -1.0 if stop < start else 1.0
    if step < 0 and stop > start:  # a positive step may count down: 0:-4:1 is 0, -1, ..., -4
        raise ValueError(f"phi range {start:g}:{stop:g}:{step:g}: step {step:g} moves away from stop {stop:g}; "
                         f"use {-step:g}")
    count = math.floor(abs(stop - start) / abs(step) + 1e-9) + 1
    if count > MAX_PHI_VALUES:
        raise ValueError(f"phi range {start:g}:{stop:g}:{step:g} has {count} values (at most "
                         f"{MAX_PHI_VALUES}); use a larger step")
    return tuple(round(start + i * direction * abs(step), PHI_DECIMALS) + 0.0 for i in range(count))  # no -0.0


# ----------------------------------------------------------------------------- the rule


@dataclass(frozen=True)
class PhiRange:
    min: float
    max: float


@dataclass(frozen=True)
class BackboneRule:
    stem_channels: int
    stem_stride: int
    stages: tuple[tuple[int, int, int, int, int], ...]
    tap_stages: tuple[int, ...]
    width_coefficient: float
    depth_coefficient: float
    multiplier_decimals: int | str
    multiplier_overrides: tuple[tuple[float, float, float], ...]
    channel_divisor: int
    channel_min: int
    channel_round_limit: float
    repeat_rounding: str
    se_ratio: float
    drop_connect_rate: float
    bn_eps: float
    bn_decay: float
    classifier_head_channels: int
    classifier_dropout: float
    classifier_resolution_base: int
    classifier_resolution_coefficient: float
    classifier_resolution_rounding: str


@dataclass(frozen=True)
class HRNetRule:
    branch_base_widths: tuple[int, ...]
    width_coefficient: float
    width_rounding: str
    branch_min_width: int
    base_modules: tuple[int, ...]
    modules_per_phi: float
    modules_rounding: str
    shrink_order: tuple[int, ...]
    grow_stage: int
    min_modules: int
    blocks_per_branch: int
    transition_bias: bool
    bn_eps: float
    bn_decay: float


@dataclass(frozen=True)
class HeadRule:
    deconv_base_channels: int
    deconv_rounding: str
    deconv_kernel: int
    num_deconvs: int
    blocks_per_deconv: int
    tag_dim: int
    tags_at_half: bool


@dataclass(frozen=True)
class ResolutionRule:
    base: int
    step_per_phi: float
    multiple: int
    rounding: str
    min: int
    output_strides: tuple[int, ...]


@dataclass(frozen=True)
class ScalingRule:
    """Every coefficient and rounding rule of one compound-scaling strategy."""

    name: str
    description: str
    phi: PhiRange
    backbone: BackboneRule
    hrnet: HRNetRule
    head: HeadRule
    resolution: ResolutionRule
    source: str = "<memory>"

    def check_phi(self, phi: Any) -> float:
        """Return phi as a float, or raise naming the value and the valid range."""
        if not is_real(phi):
            raise ValueError(
                f"phi must be a real number in [{self.phi.min}, {self.phi.max}] for rule {self.name!r}; "
                f"got {phi!r} ({type(phi).__name__})"
            )
        value = float(phi)
        if not math.isfinite(value) or not self.phi.min <= value <= self.phi.max:
            raise ValueError(
                f"phi={phi!r} is outside the range [{self.phi.min}, {self.phi.max}] of rule {self.name!r} "
                f"({self.source}); pick a phi inside it or widen [phi] in the rule file"
            )
        return value


_SECTIONS = {
    "phi": PhiRange,
    "backbone": BackboneRule,
    "hrnet": HRNetRule,
    "head": HeadRule,
    "resolution": ResolutionRule,
}


def _merge(base: dict, override: dict) -> dict:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _freeze(value):
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _build_section(cls, table: Any, section: str, source: str):
    if not isinstance(table, dict):
        raise ValueError(f"rule file {source}: [{section}] must be a table")
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [n for n in names if n not in table]
    unknown = [k for k in table if k not in names]
    if missing:
        raise ValueError(f"rule file {source}: missing field(s) {', '.join(f'{section}.{m}' for m in missing)}")
    if unknown:
        raise ValueError(f"rule file {source}: unknown field(s) {', '.join(f'{section}.{u}' for u in unknown)}")
    for name in names:
        _check_value(section, name, table[name], source)
    return cls(**{n: _freeze(table[n]) for n in names})


def _read_rule_table(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path in seen:
        raise ValueError(f"rule file {path}: 'base' chain loops through {[str(p) for p in seen]}")
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ValueError(f"rule file {path} is not valid TOML: {e}") from None
    base = table.pop("base", None)
    if base is None:
        return table
    return _merge(_read_rule_table(_rule_path(base, relative_to=path.parent), seen + (path,)), table)


def _rule_path(name_or_path: str | Path, relative_to: Path = RULES_DIR) -> Path:
    candidate = Path(name_or_path)
    if candidate.suffix == ".toml" or candidate.is_file():
        path = candidate if candidate.is_absolute() or candidate.exists() else relative_to / candidate
    else:
        path = relative_to / f"{name_or_path}.toml"
        if not path.is_file():  # a base named by rule name resolves to the shipped rules
            path = RULES_DIR / f"{name_or_path}.toml"
    if not path.is_file():
        raise FileNotFoundError(
            f"scaling rule {str(name_or_path)!r} not found (looked for {path}); "
            f"known rules: {', '.join(list_rules())}, or pass a path to a .toml file"
        )
    return path


def load_rule(path: str | Path) -> ScalingRule:
    """Load and validate a rule file (following its optional `base = "<rule>"` parent)."""
    path = Path(path)
    table = _read_rule_table(path)
    top = {f.name for f in dataclasses.fields(ScalingRule)} - {"source"}
    missing = [k for k in sorted(top) if k not in table]
    unknown = [k for k in table if k not in top]
    if missing or unknown:
        raise ValueError(f"rule file {path}: missing field(s) {missing}, unknown field(s) {unknown}")
    sections = {s: _build_section(cls, table[s], s, str(path)) for s, cls in _SECTIONS.items()}
    rule = ScalingRule(name=table["name"], description=table["description"], source=str(path), **sections)
    _check_rule(rule)
    return rule


def _check_rule(rule: ScalingRule) -> None:
    where = f"rule file {rule.source}"
    _check_structure(rule, where)
    _check_not_degenerate(rule, where)


def _check_structure(rule: ScalingRule, where: str) -> None:
    """Fields that must agree with each other (each field alone was checked by _check_value)."""
    if rule.phi.min > rule.phi.max:
        raise ValueError(f"{where}: phi.min {rule.phi.min} > phi.max {rule.phi.max}")
    if len(rule.hrnet.branch_base_widths) != len(rule.hrnet.base_modules) + 1:
        raise ValueError(
            f"{where}: hrnet.branch_base_widths has {len(rule.hrnet.branch_base_widths)} entries, "
            f"needs len(base_modules) + 1 = {len(rule.hrnet.base_modules) + 1}"
        )
    if len(rule.backbone.tap_stages) != len(rule.hrnet.branch_base_widths):
        raise ValueError(f"{where}: backbone.tap_stages needs one stage per HR branch")
    if sorted(rule.hrnet.shrink_order) != list(range(len(rule.hrnet.base_modules))):
        raise ValueError(f"{where}: hrnet.shrink_order {rule.hrnet.shrink_order} is not a permutation of stages")
    b, h = rule.backbone, rule.hrnet
    if list(b.tap_stages) != sorted(set(b.tap_stages)) or not set(b.tap_stages) <= set(range(1, len(b.stages) + 1)):
        raise ValueError(f"{where}: backbone.tap_stages = {list(b.tap_stages)} must be increasing stage numbers "
                         f"in 1..{len(b.stages)} (the rows of backbone.stages)")
    strides = _tap_strides(b)
    wanted = tuple(NETWORK_STRIDE >> (len(strides) - 1 - i) for i in range(len(strides)))
    if strides != wanted or wanted[0] != HEAD_OUTPUT_STRIDES[0]:
        raise ValueError(f"{where}: backbone.tap_stages = {list(b.tap_stages)} tap strides {list(strides)}; the "
                         f"network supports taps at strides {[HEAD_OUTPUT_STRIDES[0] << i for i in range(len(strides))]}"
                         f" ending at the network stride {NETWORK_STRIDE}: change the tap stages, "
                         "backbone.stem_stride or the stage strides")
    if not h.grow_stage < len(h.base_modules):
        raise ValueError(f"{where}: hrnet.grow_stage = {h.grow_stage} must index hrnet.base_modules "
                         f"(0..{len(h.base_modules) - 1})")
    if min(h.base_modules) < h.min_modules:
        raise ValueError(f"{where}: hrnet.base_modules = {list(h.base_modules)} has a stage below "
                         f"hrnet.min_modules = {h.min_modules}")
    override_phis = [row[0] for row in b.multiplier_overrides]
    if len(set(override_phis)) != len(override_phis):
        raise ValueError(f"{where}: backbone.multiplier_overrides lists a phi twice: {override_phis}")


def _tap_strides(b: BackboneRule) -> tuple[int, ...]:
    cumulative, total = [], b.stem_stride
    for row in b.stages:
        total *= row[STAGE_ROW.index("stride")]
        cumulative.append(total)
    return tuple(cumulative[i - 1] for i in b.tap_stages)


def _check_not_degenerate(rule: ScalingRule, where: str) -> None:
    """Refuse a rule whose smallest model (at phi.min) has collapsed: all widths at the clamp, or no depth.

    Rules are monotone in phi, so the smallest model is the worst case of the whole range.
    """
    phi = rule.phi.min
    fix = f"raise phi.min (now {phi:g}) or change the coefficient"
    widths = tuple(hr_width(base, phi, rule) for base in rule.hrnet.branch_base_widths)
    if all(w == rule.hrnet.branch_min_width for w in widths):
        raise ValueError(f"{where}: at phi.min = {phi:g} every HR branch width is clamped to "
                         f"hrnet.branch_min_width = {rule.hrnet.branch_min_width} (hrnet.width_coefficient = "
                         f"{rule.hrnet.width_coefficient}); the rule would build a degenerate model: {fix}")
    backbone = backbone_config(phi, rule)
    if all(stage.channels == rule.backbone.channel_min for stage in backbone.stages):
        raise ValueError(f"{where}: at phi.min = {phi:g} every backbone stage is clamped to backbone.channel_min = "
                         f"{rule.backbone.channel_min} (backbone.width_coefficient = "
                         f"{rule.backbone.width_coefficient}); the rule would build a degenerate model: {fix}")
    deep = any(row[STAGE_ROW.index("repeats")] > 1 for row in rule.backbone.stages)
    if deep and all(stage.repeats == 1 for stage in backbone.stages):
        raise ValueError(f"{where}: at phi.min = {phi:g} every backbone stage has one repeat "
                         f"(backbone.depth_coefficient = {rule.backbone.depth_coefficient}); the rule would build "
                         f"a degenerate model: {fix}")


# ----------------------------------------------------------------------------- field values


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite(value: Any) -> bool:
    return is_real(value) and math.isfinite(float(value))


def _int_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: _is_int(v) and v >= low), f"an integer >= {low}"


def _ints_at_least(low: int) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: isinstance(v, list) and bool(v) and all(_is_int(x) and x >= low for x in v),
            f"a non-empty list of integers >= {low}")


_FINITE = (_is_finite, "a finite number")
_POSITIVE = (lambda v: _is_finite(v) and v > 0, "a finite number > 0")
_NON_NEGATIVE = (lambda v: _is_finite(v) and v >= 0, "a finite number >= 0 (a smaller phi must never grow the model)")
_FRACTION = (lambda v: _is_finite(v) and 0 < v <= 1, "a fraction in (0, 1]")
_RATE = (lambda v: _is_finite(v) and 0 <= v < 1, "a fraction in [0, 1)")
_ROUNDING = (lambda v: v in ROUNDING_MODES, f"one of {ROUNDING_MODES}")


def _stage_row_ok(row: Any) -> bool:
    if not (isinstance(row, list) and len(row) == len(STAGE_ROW) and all(_is_int(x) and x >= 1 for x in row)):
        return False
    values = dict(zip(STAGE_ROW, row))
    return values["stride"] in (1, 2) and values["kernel"] % 2 == 1


def _override_row_ok(row: Any) -> bool:
    return (isinstance(row, list) and len(row) == len(("phi", "width", "depth"))
            and all(_is_finite(x) for x in row) and row[1] > 0 and row[2] > 0)


def _unsupported(supported: Any, why: str) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v == supported and type(v) is type(supported)), f"{supported!r}: {why}"


_SUPPORTED_ONLY = "the only value the model, losses and decoder support"
_FIELD_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "phi.min": _FINITE,
    "phi.max": _FINITE,
    "backbone.stem_channels": _int_at_least(1),
    "backbone.stem_stride": _int_at_least(1),
    "backbone.stages": (lambda v: isinstance(v, list) and bool(v) and all(_stage_row_ok(r) for r in v),
                        (f"a non-empty list of rows [{', '.join(STAGE_ROW)}] of integers >= 1, "
                         "stride 1 or 2, odd kernel")),
    "backbone.tap_stages": _ints_at_least(1),
    "backbone.width_coefficient": _POSITIVE,
    "backbone.depth_coefficient": _POSITIVE,
    "backbone.multiplier_decimals": (lambda v: v == "none" or (_is_int(v) and v >= 0),
                                     'an integer >= 0 or "none"'),
    "backbone.multiplier_overrides": (lambda v: isinstance(v, list) and all(_override_row_ok(r) for r in v),
                                      "a list of rows [phi, width, depth] of finite numbers, width and depth > 0"),
    "backbone.channel_divisor": _int_at_least(1),
    "backbone.channel_min": _int_at_least(1),
    "backbone.channel_round_limit": _FRACTION,
    "backbone.se_ratio": (lambda v: _is_finite(v) and 0 <= v <= 1, "a fraction in [0, 1] (0: no squeeze-excite)"),
    "backbone.drop_connect_rate": _RATE,
    "backbone.bn_eps": _POSITIVE,
    "backbone.bn_decay": _RATE,
    "backbone.classifier_head_channels": _int_at_least(1),
    "backbone.classifier_dropout": _RATE,
    "backbone.classifier_resolution_base": _int_at_least(1),
    "backbone.classifier_resolution_coefficient": _POSITIVE,
    "hrnet.branch_base_widths": _ints_at_least(1),
    "hrnet.width_coefficient": _POSITIVE,
    "hrnet.branch_min_width": _int_at_least(1),
    "hrnet.base_modules": _ints_at_least(1),
    "hrnet.modules_per_phi": _NON_NEGATIVE,
    "hrnet.shrink_order": _ints_at_least(0),
    "hrnet.grow_stage": _int_at_least(0),
    "hrnet.min_modules": _int_at_least(1),
    "hrnet.blocks_per_branch": _int_at_least(1),
    "hrnet.transition_bias": (lambda v: isinstance(v, bool), "true or false"),
    "hrnet.bn_eps": _POSITIVE,
    "hrnet.bn_decay": _RATE,
    "head.deconv_base_channels": _int_at_least(1),
    "head.deconv_kernel": (lambda v: _is_int(v) and v in DECONV_KERNELS, f"one of {DECONV_KERNELS}"),
    "head.num_deconvs": _unsupported(len(HEAD_OUTPUT_STRIDES) - 1, "one deconv, from the 1/4 to the 1/2 output"),
    "head.blocks_per_deconv": _int_at_least(0),
    "head.tag_dim": _unsupported(1, f"one tag per keypoint ({_SUPPORTED_ONLY})"),
    "head.tags_at_half": _unsupported(False, f"tags at 1/4 only ({_SUPPORTED_ONLY})"),
    "resolution.base": _POSITIVE,
    "resolution.step_per_phi": _NON_NEGATIVE,
    "resolution.multiple": (lambda v: _is_int(v) and v > 0 and v % NETWORK_STRIDE == 0,
                            f"a positive multiple of the network stride {NETWORK_STRIDE}"),
    "resolution.min": (lambda v: _is_int(v) and v > 0 and v % NETWORK_STRIDE == 0,
                       f"a positive multiple of the network stride {NETWORK_STRIDE}"),
    "resolution.output_strides": (lambda v: isinstance(v, list) and tuple(v) == HEAD_OUTPUT_STRIDES,
                                  f"{list(HEAD_OUTPUT_STRIDES)}: the head predicts at 1/4 and 1/2 only"),
}


# List fields checked item by item: an error names the first bad item, e.g. backbone.stages[3].
_PER_ITEM = {"backbone.stages", "backbone.tap_stages", "backbone.multiplier_overrides", "hrnet.branch_base_widths",
             "hrnet.base_modules", "hrnet.shrink_order"}


def _check_value(section: str, name: str, value: Any, source: str) -> None:
    """Refuse a field value the code cannot use, naming the file, the field and the value."""
    key = f"{section}.{name}"
    ok, needs = _ROUNDING if name.endswith("rounding") else _FIELD_CHECKS.get(key, (lambda v: True, ""))
    if ok(value):
        return
    if key in _PER_ITEM and isinstance(value, list):
        bad = next((i for i, item in enumerate(value) if not ok([item])), None)
        if bad is not None:
            key, value = f"{key}[{bad}]", value[bad]
    raise ValueError(f"rule file {source}: {key} = {value!r} is not valid; it must be {needs}")


def list_rules() -> list[str]:
    return sorted(p.stem for p in RULES_DIR.glob("*.toml"))


@lru_cache(maxsize=None)
def _load_named(path: str) -> ScalingRule:
    return load_rule(path)


def get_rule(rule: str | Path | ScalingRule) -> ScalingRule:
    """A rule by name (a file in scaling_rules/), by path, or passed through."""
    if isinstance(rule, ScalingRule):
        return rule
    return _load_named(str(_rule_path(rule)))


# ----------------------------------------------------------------------------- rounding rules


def round_by(value: float, mode: str) -> float:
    """Apply a rule's rounding mode; 'round' is half-up, so it is monotone."""
    if mode == "ceil":
        return math.ceil(value - 1e-9)  # guard against 1e-15 float noise above an integer
    if mode == "floor":
        return math.floor(value + 1e-9)
    if mode == "round":
        return math.floor(value + 0.5)
    return value


def make_divisible(value: float, divisor: int, min_value: int, round_limit: float) -> int:
    """EfficientNet channel rounding: nearest multiple of divisor, never 10 % below value."""
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return int(rounded)


# ----------------------------------------------------------------------------- backbone


def backbone_multipliers(phi: float, rule: ScalingRule) -> tuple[float, float, float, float]:
    """(raw width, raw depth, width used, depth used) for phi.

    Raw is the formula coefficient**phi; 'used' applies the rule's overrides (interpolated
    between listed phi values) and decimal rounding.
    """
    b = rule.backbone
    raw_w, raw_d = b.width_coefficient**phi, b.depth_coefficient**phi
    width, depth = raw_w, raw_d
    points = sorted(b.multiplier_overrides)
    if points and points[0][0] <= phi <= points[-1][0]:
        for (p0, w0, d0), (p1, w1, d1) in zip(points, points[1:] + [points[-1]]):
            if p0 <= phi <= p1:
                t = 0.0 if p1 == p0 else (phi - p0) / (p1 - p0)
                width, depth = w0 + t * (w1 - w0), d0 + t * (d1 - d0)
                break
    if b.multiplier_decimals != "none":
        width, depth = round(width, int(b.multiplier_decimals)), round(depth, int(b.multiplier_decimals))
    return raw_w, raw_d, width, depth


def backbone_channels(base: int, width: float, rule: ScalingRule) -> int:
    b = rule.backbone
    return make_divisible(base * width, b.channel_divisor, b.channel_min, b.channel_round_limit)


def backbone_repeats(base: int, depth: float, rule: ScalingRule) -> int:
    return max(1, int(round_by(base * depth, rule.backbone.repeat_rounding)))


def classifier_resolution(phi: float, rule: ScalingRule) -> int:
    b = rule.backbone
    raw = b.classifier_resolution_base * b.classifier_resolution_coefficient**phi
    return int(round_by(raw, b.classifier_resolution_rounding))


def backbone_config(phi: float, rule: ScalingRule) -> BackboneConfig:
    b = rule.backbone
    _, _, width, depth = backbone_multipliers(phi, rule)
    stages = tuple(
        MBConvStage(
            expand_ratio=expand,
            channels=backbone_channels(channels, width, rule),
            repeats=backbone_repeats(repeats, depth, rule),
            stride=stride,
            kernel=kernel,
        )
        for expand, channels, repeats, stride, kernel in b.stages
    )
    return BackboneConfig(
        width_mult=width,
        depth_mult=depth,
        stem_channels=backbone_channels(b.stem_channels, width, rule),
        stem_stride=b.stem_stride,
        stages=stages,
        tap_stages=tuple(b.tap_stages),
        se_ratio=b.se_ratio,
        drop_connect_rate=b.drop_connect_rate,
        bn_eps=b.bn_eps,
        bn_decay=b.bn_decay,
        classifier_head_channels=backbone_channels(b.classifier_head_channels, width, rule),
        classifier_dropout=b.classifier_dropout,
        classifier_resolution=classifier_resolution(phi, rule),
    )


# ----------------------------------------------------------------------------- HR network and head


def hr_width(base: int, phi: float, rule: ScalingRule, rounding: str | None = None) -> int:
    h = rule.hrnet
    raw = base * h.width_coefficient**phi
    return max(h.branch_min_width, int(round_by(raw, rounding or h.width_rounding)))


def total_modules(phi: float, rule: ScalingRule) -> int:
    h = rule.hrnet
    raw = sum(h.base_modules) + h.modules_per_phi * phi
    return int(round_by(raw, h.modules_rounding))


def module_schedule(phi: float, rule: ScalingRule) -> tuple[int, ...]:
    """Modules per HR stage: shrink stages in shrink_order down to min_modules, grow grow_stage."""
    h = rule.hrnet
    modules = list(h.base_modules)
    change = total_modules(phi, rule) - sum(modules)
    if change > 0:
        modules[h.grow_stage] += change
    for stage in h.shrink_order:
        if change >= 0:
            break
        removable = min(-change, modules[stage] - h.min_modules)
        modules[stage] -= removable
        change += removable
    return tuple(modules)


def hrnet_config(phi: float, rule: ScalingRule) -> HRNetConfig:
    h = rule.hrnet
    return HRNetConfig(
        branch_widths=tuple(hr_width(base, phi, rule) for base in h.branch_base_widths),
        modules_per_stage=module_schedule(phi, rule),
        blocks_per_branch=h.blocks_per_branch,
        transition_bias=h.transition_bias,
        bn_eps=h.bn_eps,
        bn_decay=h.bn_decay,
    )


def head_config(phi: float, rule: ScalingRule, num_keypoints: int) -> HeadConfig:
    hd = rule.head
    return HeadConfig(
        num_keypoints=num_keypoints,
        tag_dim=hd.tag_dim,
        tags_at_half=hd.tags_at_half,
        deconv_channels=hr_width(hd.deconv_base_channels, phi, rule, hd.deconv_rounding),
        deconv_kernel=hd.deconv_kernel,
        num_deconvs=hd.num_deconvs,
        blocks_per_deconv=hd.blocks_per_deconv,
        bn_eps=rule.hrnet.bn_eps,
        bn_decay=rule.hrnet.bn_decay,
    )


def input_resolution(phi: float, rule: ScalingRule) -> int:
    r = rule.resolution
    raw = (r.base + r.step_per_phi * phi) / r.multiple
    return max(r.min, int(round_by(raw, r.rounding)) * r.multiple)


# ----------------------------------------------------------------------------- assembly


def generate_config(
    phi: float, rule: str | Path | ScalingRule = "efficienthrnet", keypoints: str = "coco17"
) -> ModelConfig:
    """The full EfficientHRNet architecture for a real phi under a scaling rule.

    >>> cfg = generate_config(phi=-2.5)
    >>> cfg.input_size, cfg.hrnet.branch_widths
    (416, (19, 37, 74, 147))
    """
    rule = get_rule(rule)
    phi = rule.check_phi(phi)
    schema = get_schema(keypoints)
    return ModelConfig(
        phi=phi,
        rule=rule.name,
        keypoints=schema.name,
        input_size=input_resolution(phi, rule),
        output_strides=tuple(rule.resolution.output_strides),
        backbone=backbone_config(phi, rule),
        hrnet=hrnet_config(phi, rule),
        head=head_config(phi, rule, schema.num_keypoints),
    )


def explain(phi: float, rule: str | Path | ScalingRule = "efficienthrnet") -> list[dict[str, Any]]:
    """Every scaled quantity of phi: its formula value before rounding and the value used."""
    rule = get_rule(rule)
    phi = rule.check_phi(phi)
    raw_w, raw_d, width, depth = backbone_multipliers(phi, rule)
    b, h, r = rule.backbone, rule.hrnet, rule.resolution
    rows = [
        {"quantity": "backbone width multiplier", "raw": raw_w, "used": width},
        {"quantity": "backbone depth multiplier", "raw": raw_d, "used": depth},
        {"quantity": "stem channels", "raw": b.stem_channels * width, "used": backbone_channels(b.stem_channels, width, rule)},
    ]
    for i, (_, ch, rep, _, _) in enumerate(b.stages, start=1):
        rows.append({"quantity": f"stage {i} channels", "raw": ch * width, "used": backbone_channels(ch, width, rule)})
        rows.append({"quantity": f"stage {i} repeats", "raw": rep * depth, "used": backbone_repeats(rep, depth, rule)})
    rows.append({"quantity": "HR width multiplier", "raw": h.width_coefficient**phi, "used": h.width_coefficient**phi})
    for i, base in enumerate(h.branch_base_widths, start=1):
        rows.append({"quantity": f"HR branch {i} width", "raw": base * h.width_coefficient**phi, "used": hr_width(base, phi, rule)})
    rows.append({"quantity": "HR modules total", "raw": sum(h.base_modules) + h.modules_per_phi * phi, "used": total_modules(phi, rule)})
    for i, m in enumerate(module_schedule(phi, rule), start=2):
        rows.append({"quantity": f"HR stage {i} modules", "raw": None, "used": m})
    rows.append({"quantity": "deconv channels", "raw": rule.head.deconv_base_channels * h.width_coefficient**phi,
                 "used": hr_width(rule.head.deconv_base_channels, phi, rule, rule.head.deconv_rounding)})
    rows.append({"quantity": "input resolution", "raw": r.base + r.step_per_phi * phi, "used": input_resolution(phi, rule)})
    rows.append({"quantity": "classifier resolution",
                 "raw": b.classifier_resolution_base * b.classifier_resolution_coefficient**phi,
                 "used": classifier_resolution(phi, rule)})
    return rows


# ----------------------------------------------------------------------------- proxy size and cost matching

def proxy_input_size(native: int, scale: float, multiple: int = NETWORK_STRIDE) -> int:
    """``native * scale`` rounded to the nearest multiple of the network stride, never below 64.

    A proxy that keeps each rule's own resolution: resolution-scaling rules then still differ in
    input size during cheap training, as they would at full size.
    """
    if isinstance(scale, bool) or not isinstance(scale, (int, float)) or not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"resolution_scale must be a positive real number, got {scale!r}; e.g. 0.25")
    return max(MIN_PROXY_INPUT, int(math.floor(native * scale / multiple + 1 / 2)) * multiple)


def _macs_at(phi: float, rule: ScalingRule, resolution_scale: float, keypoints: str = "coco17") -> int:
    from .complexity import profile  # costing sits above the pure rules; only this entry point needs it

    cfg = generate_config(phi, rule, keypoints)
    return profile(cfg, proxy_input_size(cfg.input_size, resolution_scale)).macs


def phi_for_budget(macs: float, rule: str | Path | ScalingRule = "efficienthrnet",
                   resolution_scale: float = 1.0, keypoints: str = "coco17") -> float:
    """The largest phi on a 0.01 grid inside the rule's range whose exact MACs fit ``macs``.

    MACs are counted by `efficienthrnet.complexity.profile` at the input size the model would run
    at: the rule's own resolution times ``resolution_scale`` (see `proxy_input_size`). Every rule's
    cost is monotone in phi (a smaller phi never gives a larger model), so a bisection over the
    grid is exact. Raises ValueError naming the rule and its cheapest and dearest models' MACs
    when the budget lies outside them.
    """
    rule = get_rule(rule)
    if isinstance(macs, bool) or not isinstance(macs, (int, float)) or not math.isfinite(macs) or macs <= 0:
        raise ValueError(f"a MACs budget must be a positive number, got {macs!r}; e.g. 2e9")
    lo = math.ceil(rule.phi.min / BUDGET_PHI_STEP - 1e-9)
    hi = math.floor(rule.phi.max / BUDGET_PHI_STEP + 1e-9)
    grid = lambda k: round(k * BUDGET_PHI_STEP, PHI_DECIMALS) + 0.0  # noqa: E731 - exact names, no -0.0
    cost = lambda k: _macs_at(grid(k), rule, resolution_scale, keypoints)  # noqa: E731 - the schema sets the head
    cheapest, dearest = cost(lo), cost(hi)
    if not cheapest <= macs <= dearest:
        raise ValueError(
            f"a budget of {macs:.4g} MACs lies outside rule {rule.name!r} at resolution_scale "
            f"{resolution_scale:g}: its cheapest model (phi={grid(lo):g}) costs {cheapest:.4g} MACs and its "
            f"dearest (phi={grid(hi):g}) {dearest:.4g}; pick a budget between them"
        )
    while lo < hi:  # invariant: grid(lo) fits the budget; find the last grid point that does
        mid = (lo + hi + 1) // 2
        if cost(mid) <= macs:
            lo = mid
        else:
            hi = mid - 1
    return grid(lo)
