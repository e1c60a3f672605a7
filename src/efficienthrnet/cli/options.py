"""Argument types and options that several commands share: phi lists and ranges, --keypoints."""

from __future__ import annotations

import argparse


def _phi_list(text: str) -> list[float]:
    """'-4,-3.5' or '-4:0:0.5' (start:stop:step, the one range rule of `scaling.phi_range`) -> floats."""
    from ..scaling import phi_range

    parts = text.split(":") if ":" in text else [v for v in text.split(",") if v.strip()]
    try:
        values = [float(v) for v in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a list of numbers ('-4,-2.5') or a range "
                                         "'start:stop:step' ('0:-4:1')") from None
    if ":" not in text:
        if not values:
            raise argparse.ArgumentTypeError(f"{text!r} holds no value; give e.g. '-4,-2.5' or '0:-4:1'")
        return values
    if len(values) != 3:
        raise argparse.ArgumentTypeError(f"range {text!r} needs exactly start:stop:step, e.g. '0:-4:1'")
    try:
        return list(phi_range(*values))
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


# ----------------------------------------------------------------------------- keypoint schema


def _add_keypoints_option(p, from_run: bool = False) -> None:
    """--keypoints NAME: a registered keypoint schema (from_run: default the run's stored one)."""
    default = "the run's own" if from_run else "coco17"

    def schema_name(text: str) -> str:
        from ..keypoints import get_schema

        try:
            return get_schema(text).name
        except ValueError as err:
            raise argparse.ArgumentTypeError(str(err)) from None

    p.add_argument("--keypoints", type=schema_name, default=None, metavar="NAME",
                   help=f"keypoint schema: coco17, crowdpose or a registered one (default: {default})")


def _keypoints(args) -> str:
    """The schema name a command writes with: --keypoints, else COCO-17."""
    return args.keypoints or "coco17"
