"""Commands that describe architectures: ``config`` (what a phi resolves to), ``profile`` (params,
MACs, FLOPs per part) and ``table2`` (the classifiers beside the paper's Table 2)."""

from __future__ import annotations

import json
from collections.abc import Callable

from .options import _add_keypoints_option, _keypoints, _phi_list


def _add_config(sub) -> Callable:
    p = sub.add_parser("config", help="print the architecture that a phi resolves to under a scaling rule")
    p.add_argument("--phi", type=float, required=True, help="compound coefficient (any real in the rule's range)")
    p.add_argument("--rule", default="efficienthrnet", help="rule name in scaling_rules/ or a path to a .toml")
    p.add_argument("--json", action="store_true", help="print the ModelConfig as JSON")
    _add_keypoints_option(p)
    return _run_config


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _run_config(args) -> int:
    from ..scaling import explain, generate_config

    cfg = generate_config(args.phi, args.rule, keypoints=_keypoints(args))
    if args.json:
        print(json.dumps({"config": cfg.to_dict(), "scaling": explain(args.phi, args.rule)}, indent=2))
        return 0
    print(f"EfficientHRNet phi={cfg.phi:g} rule={cfg.rule} keypoints={cfg.keypoints}")
    print(f"input {cfg.input_size}x{cfg.input_size}  outputs {' '.join(map(str, cfg.output_sizes))}")
    rows = explain(args.phi, args.rule)
    width = max(len(r["quantity"]) for r in rows)
    print(f"\n{'quantity'.ljust(width)}  {'formula':>10}  {'used':>8}")
    for row in rows:
        print(f"{row['quantity'].ljust(width)}  {_fmt(row['raw']):>10}  {_fmt(row['used']):>8}")
    bb, hr = cfg.backbone, cfg.hrnet
    print(f"\nbackbone taps: stages {bb.tap_stages} -> channels {bb.tap_channels} at strides {bb.tap_strides}")
    print(f"HR branches {hr.branch_widths}, modules per stage {hr.modules_per_stage}, "
          f"{hr.blocks_per_branch} BasicBlocks per branch")
    print(f"head: {cfg.head.quarter_channels} channels at 1/4, deconv {cfg.head.deconv_channels}, "
          f"{cfg.head.half_channels} heatmaps at 1/2")
    return 0

def _add_profile(sub) -> Callable:
    p = sub.add_parser("profile", help="exact params / MACs / FLOPs per part, beside the paper's as-reported figures")
    p.add_argument("--phi", type=_phi_list, default=[0.0, -1.0, -2.0, -3.0, -4.0],
                   help="phi values: '-4,-2.5' or a range 'start:stop:step' (default 0,-1,-2,-3,-4)")
    p.add_argument("--rule", default="efficienthrnet")
    p.add_argument("--input-size", type=int, default=None, help="square input (default: each config's own)")
    p.add_argument("--json", action="store_true")
    _add_keypoints_option(p)
    return _run_profile


def _run_profile(args) -> int:
    from ..complexity import profile_command

    print(profile_command(args.phi, args.rule, args.input_size, as_json=args.json, keypoints=_keypoints(args)))
    return 0

def _add_table2(sub) -> Callable:
    p = sub.add_parser("table2", help="computed params / MACs of B0..B-4 beside the paper's Table 2")
    p.add_argument("--rule", default="reference")
    return _run_table2


def _run_table2(args) -> int:
    from ..classify import table2_comparison

    print(table2_comparison(args.rule).to_string(index=False))
    return 0
