"""The `efficienthrnet` command. Each subcommand is a thin wrapper over a library call."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence


def _phi_list(text: str) -> list[float]:
    """'-4,-3.5' or '-4:0:0.5' (start:stop:step, inclusive) -> floats."""
    if ":" in text:
        start, stop, step = (float(v) for v in text.split(":"))
        if step <= 0:
            raise argparse.ArgumentTypeError(f"step in {text!r} must be positive")
        count = int(round((stop - start) / step)) + 1
        return [round(start + i * step, 10) for i in range(count)]
    return [float(v) for v in text.split(",") if v]


# ----------------------------------------------------------------------------- config


def _add_config(sub) -> Callable:
    p = sub.add_parser("config", help="print the architecture that a phi resolves to under a scaling rule")
    p.add_argument("--phi", type=float, required=True, help="compound coefficient (any real in the rule's range)")
    p.add_argument("--rule", default="efficienthrnet", help="rule name in scaling_rules/ or a path to a .toml")
    p.add_argument("--json", action="store_true", help="print the ModelConfig as JSON")
    return _run_config


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float) and not value.is_integer():
        return f"{value:.4f}"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _run_config(args) -> int:
    from .scaling import explain, generate_config

    cfg = generate_config(args.phi, args.rule)
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


# ----------------------------------------------------------------------------- make-synthetic


def _add_make_synthetic(sub) -> Callable:
    p = sub.add_parser("make-synthetic", help="write a synthetic multi-person dataset in COCO keypoints format")
    p.add_argument("--out", required=True, help="output folder (gets annotations/, train/, val/)")
    p.add_argument("--images", type=int, default=1000, help="number of images over both splits")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of images in the val split")
    return _run_make_synthetic


def _run_make_synthetic(args) -> int:
    from .data.synthetic import make_synthetic_dataset

    summary = make_synthetic_dataset(
        out_dir=args.out, num_images=args.images, image_size=args.size, seed=args.seed,
        val_fraction=args.val_fraction,
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0


COMMANDS: list[Callable] = [_add_config, _add_make_synthetic]


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = argparse.ArgumentParser(prog="efficienthrnet", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for add in COMMANDS:
        before = set(sub.choices)
        runner = add(sub)
        (name,) = set(sub.choices) - before
        runners[name] = runner
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    try:
        return runners[args.command](args) or 0
    except (ValueError, FileNotFoundError) as err:
        print(f"efficienthrnet {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
