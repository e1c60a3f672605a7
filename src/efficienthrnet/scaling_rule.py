"""A scaling rule: the TOML file format of `scaling_rules/`, its loading and validation.

`load_rule(path)` reads a rule file (following its optional ``base = "<rule>"`` parent) into a
frozen `ScalingRule` and refuses, naming the file and the field, any value the code cannot use
and any rule whose smallest model is degenerate; `get_rule` finds a rule by name or path
(cached) and `list_rules` names the shipped ones.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from .config import DECONV_KERNELS, HEAD_OUTPUT_STRIDES, NETWORK_STRIDE
from .scaling_formulas import backbone_config, hr_width, is_real

RULES_DIR = Path(__file__).resolve().parent / "scaling_rules"
ROUNDING_MODES = ("ceil", "floor", "round", "none")
STAGE_ROW = ("expand_ratio", "channels", "repeats", "stride", "kernel")  # backbone.stages columns

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


@cache
def _load_named(path: str) -> ScalingRule:
    return load_rule(path)


def get_rule(rule: str | Path | ScalingRule) -> ScalingRule:
    """A rule by name (a file in scaling_rules/), by path, or passed through."""
    if isinstance(rule, ScalingRule):
        return rule
    return _load_named(str(_rule_path(rule)))
