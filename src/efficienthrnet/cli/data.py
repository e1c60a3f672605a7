"""The ``make-synthetic`` command: write a synthetic multi-person dataset in COCO keypoints format."""

from __future__ import annotations

import json
from collections.abc import Callable

from .options import _add_keypoints_option, _keypoints


def _add_make_synthetic(sub) -> Callable:
    p = sub.add_parser("make-synthetic", help="write a synthetic multi-person dataset in COCO keypoints format")
    p.add_argument("--out", required=True, help="output folder (gets annotations/, train/, val/)")
    p.add_argument("--images", type=int, default=1000, help="number of images over both splits")
    p.add_argument("--size", type=int, default=128, help="image side in pixels")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--val-fraction", type=float, default=0.2, help="share of images in the val split")
    p.add_argument("--max-people", type=int, default=8, help="at most this many people per image (1..8)")
    p.add_argument("--min-height", type=float, default=0.35,
                   help="shortest person with keypoints, as a fraction of the image side (0.1..0.85)")
    _add_keypoints_option(p)
    return _run_make_synthetic


def _run_make_synthetic(args) -> int:
    from ..data.synthetic import make_synthetic_dataset

    summary = make_synthetic_dataset(
        out_dir=args.out, num_images=args.images, image_size=args.size, seed=args.seed,
        val_fraction=args.val_fraction, max_people=args.max_people, min_height=args.min_height,
        schema=_keypoints(args),
    )
    print(json.dumps(summary, indent=2, default=str))
    return 0
