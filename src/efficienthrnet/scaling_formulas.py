"""The pure functions of phi: valid phi grids, the rounding rules, and each part's numbers under a rule.

`phi_range` lists a start:stop:step grid; `round_by` and `make_divisible` are the rounding rules;
`backbone_config`, `hrnet_config`, `head_config` and `input_resolution` give one part of the
architecture for a phi, applying a `ScalingRule`'s coefficients (one rounding rule per function).
Nothing here reads files: rules come from `efficienthrnet.scaling_rule`.
"""

from __future__ import annotations

import math
import numbers
from typing import TYPE_CHECKING, Any

import numpy as np

from .config import (
    MAX_PHI_VALUES,
    PHI_DECIMALS,
    BackboneConfig,
    HeadConfig,
    HRNetConfig,
    MBConvStage,
)

if TYPE_CHECKING:
    from .scaling_rule import ScalingRule


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
