"""Frozen architecture configs: the plain data `generate_config` produces and models consume.

A `ModelConfig` says everything the network needs and nothing about how it was derived;
`efficienthrnet.scaling` derives it from a scaling rule and phi. Configs round-trip through
plain dicts and JSON so that run folders and sweep records are self-describing.
"""

from __future__ import annotations

import dataclasses
import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

# Facts fixed by the code (not by a scaling rule): the deepest backbone tap, and so the factor every
# input side must be divisible by, is at stride 32; the head predicts at 1/4 and, after its one
# deconv, at 1/2. Rule files are checked against these (scaling.load_rule).
NETWORK_STRIDE = 32
HEAD_OUTPUT_STRIDES = (4, 2)
DECONV_KERNELS = (2, 3, 4)  # the kernels nn.head.deconv_padding can make exactly double the size
# Phi values from a start:stop:step range are rounded to this many decimals so that trial ids stay
# stable (0.1 steps would otherwise give -5.699999999999999); a range may hold at most MAX_PHI_VALUES.
PHI_DECIMALS = 10
MAX_PHI_VALUES = 100_000
# Proxy training (resolution_scale) never goes below this input size: at 64 px the 1/32 branch is 2 x 2.
MIN_PROXY_INPUT = 64
# phi_for_budget searches this grid, so a budget resolves to a phi a sweep id names exactly.
BUDGET_PHI_STEP = 0.01


def check_finite(obj: Any, owner: str) -> None:
    """Refuse NaN or infinity in any number field of a (nested) dataclass, naming owner.field and the value.

    Comparisons such as `weight_decay < 0` are False for NaN, so range checks alone let it through.
    """
    for f in dataclasses.fields(obj):
        value, where = getattr(obj, f.name), f"{owner}.{f.name}"
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            check_finite(value, where)
            continue
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, numbers.Real) and not isinstance(item, bool) and not math.isfinite(float(item)):
                raise ValueError(f"{where}={value!r}: {item!r} is not a finite number; give a finite value")


@dataclass(frozen=True)
class MBConvStage:
    """One row of the EfficientNet block table after scaling."""

    expand_ratio: int
    channels: int
    repeats: int
    stride: int
    kernel: int


@dataclass(frozen=True)
class BackboneConfig:
    """The compact EfficientNet: stem, MBConv stages, which stage outputs are tapped."""

    width_mult: float
    depth_mult: float
    stem_channels: int
    stem_stride: int
    stages: tuple[MBConvStage, ...]
    tap_stages: tuple[int, ...]  # 1-based stage numbers whose outputs feed the HR network
    se_ratio: float
    drop_connect_rate: float
    bn_eps: float
    bn_decay: float
    classifier_head_channels: int
    classifier_dropout: float
    classifier_resolution: int

    @property
    def num_blocks(self) -> int:
        return sum(s.repeats for s in self.stages)

    @property
    def stage_strides(self) -> tuple[int, ...]:
        """Cumulative output stride after each stage."""
        strides, total = [], self.stem_stride
        for stage in self.stages:
            total *= stage.stride
            strides.append(total)
        return tuple(strides)

    @property
    def tap_channels(self) -> tuple[int, ...]:
        return tuple(self.stages[i - 1].channels for i in self.tap_stages)

    @property
    def tap_strides(self) -> tuple[int, ...]:
        return tuple(self.stage_strides[i - 1] for i in self.tap_stages)

    @property
    def tap_block_ends(self) -> tuple[int, ...]:
        """End-exclusive index (over all MBConv blocks, stem excluded) of each tapped stage."""
        ends, total = [], 0
        for stage in self.stages:
            total += stage.repeats
            ends.append(total)
        return tuple(ends[i - 1] for i in self.tap_stages)


@dataclass(frozen=True)
class HRNetConfig:
    """The high-resolution network: branch widths and the module schedule of stages 2..4."""

    branch_widths: tuple[int, ...]
    modules_per_stage: tuple[int, ...]
    blocks_per_branch: int
    transition_bias: bool
    bn_eps: float
    bn_decay: float

    @property
    def branches_per_stage(self) -> tuple[int, ...]:
        """Stage k (0-based) runs k + 2 branches: the first stage already has two."""
        return tuple(range(2, 2 + len(self.modules_per_stage)))


@dataclass(frozen=True)
class HeadConfig:
    """HigherHRNet-style head: heatmaps+tags at 1/4, a deconv block, heatmaps at 1/2."""

    num_keypoints: int
    tag_dim: int
    tags_at_half: bool
    deconv_channels: int
    deconv_kernel: int
    num_deconvs: int
    blocks_per_deconv: int
    bn_eps: float
    bn_decay: float

    @property
    def quarter_channels(self) -> int:
        """Channels of the 1/4 output: heatmaps then tags."""
        return self.num_keypoints * (1 + self.tag_dim)

    @property
    def half_channels(self) -> int:
        return self.num_keypoints * (1 + self.tag_dim if self.tags_at_half else 1)


@dataclass(frozen=True)
class ModelConfig:
    """The full EfficientHRNet architecture for one phi under one scaling rule."""

    phi: float
    rule: str
    keypoints: str
    input_size: int
    output_strides: tuple[int, ...]
    backbone: BackboneConfig
    hrnet: HRNetConfig
    head: HeadConfig

    @property
    def num_keypoints(self) -> int:
        return self.head.num_keypoints

    @property
    def output_sizes(self) -> tuple[int, ...]:
        return tuple(self.input_size // s for s in self.output_strides)

    @property
    def name(self) -> str:
        return f"{self.rule}@phi={self.phi:g}"

    def with_input_size(self, input_size: int) -> ModelConfig:
        """The same network at another (square) input size, e.g. for cheap proxy runs."""
        if input_size <= 0 or input_size % NETWORK_STRIDE:
            raise ValueError(f"input_size {input_size} must be a positive multiple of {NETWORK_STRIDE} "
                             "(the network stride)")
        return dataclasses.replace(self, input_size=int(input_size))

    def same_architecture(self, other: ModelConfig) -> bool:
        """True when both configs build identical parameter trees (input size may differ)."""
        return dataclasses.replace(self, input_size=0) == dataclasses.replace(other, input_size=0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return _from_dict(cls, data, "ModelConfig")

    def to_json(self, **kwargs) -> str:
        return json.dumps(self.to_dict(), **kwargs)

    @classmethod
    def from_json(cls, text: str) -> ModelConfig:
        return cls.from_dict(json.loads(text))


_NESTED = {
    "backbone": BackboneConfig,
    "hrnet": HRNetConfig,
    "head": HeadConfig,
}


def _from_dict(cls, data: dict[str, Any], where: str):
    """Rebuild a (nested) frozen dataclass, converting lists back to tuples."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping, got {type(data).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    missing, unknown = names - set(data), set(data) - names
    if missing or unknown:
        raise ValueError(f"{where}: missing fields {sorted(missing)}, unknown fields {sorted(unknown)}")
    kwargs = {}
    for field in dataclasses.fields(cls):
        value = data[field.name]
        if field.name in _NESTED and cls is ModelConfig:
            value = _from_dict(_NESTED[field.name], value, f"{where}.{field.name}")
        elif field.name == "stages":
            value = tuple(_from_dict(MBConvStage, row, f"{where}.stages") for row in value)
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[field.name] = value
    return cls(**kwargs)
