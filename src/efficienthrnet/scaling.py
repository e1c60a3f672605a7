"""Compound scaling: a rule file (data) plus pure functions phi -> architecture.

A `ScalingRule` is loaded from a TOML file in `scaling_rules/`; it holds every coefficient,
base value and rounding mode. The functions only apply them, one rounding rule per
function, so two rules can be compared by diffing their files. `generate_config(phi, rule)`
assembles the frozen `ModelConfig`.

The pieces live in their own modules, all re-exported here: `efficienthrnet.scaling_rule` (rule
files: loading, validation, lookup), `efficienthrnet.scaling_formulas` (phi grids, rounding, each
part's numbers), `efficienthrnet.scaling_config` (`generate_config`, `explain`) and
`efficienthrnet.scaling_budget` (`proxy_input_size`, `phi_for_budget`).
"""

from __future__ import annotations

from .config import (  # noqa: F401  (re-exported for existing callers)
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
from .keypoints import get_schema  # noqa: F401
from .scaling_budget import _macs_at, phi_for_budget, proxy_input_size  # noqa: F401
from .scaling_config import explain, generate_config  # noqa: F401
from .scaling_formulas import (  # noqa: F401
    backbone_channels,
    backbone_config,
    backbone_multipliers,
    backbone_repeats,
    classifier_resolution,
    head_config,
    hr_width,
    hrnet_config,
    input_resolution,
    is_real,
    make_divisible,
    module_schedule,
    phi_range,
    round_by,
    total_modules,
)
from .scaling_rule import (  # noqa: F401
    _FIELD_CHECKS,
    _FINITE,
    _FRACTION,
    _NON_NEGATIVE,
    _PER_ITEM,
    _POSITIVE,
    _RATE,
    _ROUNDING,
    _SECTIONS,
    _SUPPORTED_ONLY,
    ROUNDING_MODES,
    RULES_DIR,
    STAGE_ROW,
    BackboneRule,
    HeadRule,
    HRNetRule,
    PhiRange,
    ResolutionRule,
    ScalingRule,
    _build_section,
    _check_not_degenerate,
    _check_rule,
    _check_structure,
    _check_value,
    _freeze,
    _int_at_least,
    _ints_at_least,
    _is_finite,
    _is_int,
    _load_named,
    _merge,
    _override_row_ok,
    _read_rule_table,
    _rule_path,
    _stage_row_ok,
    _tap_strides,
    _unsupported,
    get_rule,
    list_rules,
    load_rule,
)
