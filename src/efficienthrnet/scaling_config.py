"""Compound scaling assembled: phi + rule -> the frozen `ModelConfig` (`generate_config`), and
`explain`, every scaled quantity's formula value beside the value used."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .config import ModelConfig
from .keypoints import get_schema
from .scaling_formulas import (
    backbone_channels,
    backbone_config,
    backbone_multipliers,
    backbone_repeats,
    classifier_resolution,
    head_config,
    hr_width,
    hrnet_config,
    input_resolution,
    module_schedule,
    total_modules,
)
from .scaling_rule import ScalingRule, get_rule


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
