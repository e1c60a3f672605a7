"""This library's train step against the authors' PyTorch one, side by side: alternating launches,
per-pair ratios and their median, as JSON lines.

Each pair runs `train_step.py --rule reference --fixed-batch` and `train_step_reference.py` in
fresh processes, one after the other (the order flips every pair, so a drift of the machine hits
both sides alike over the pairs). Both then step on the same first batch of this library's
pipeline, the same model (H-4 of the reference rule, φ -4) and Adam 1e-3. A ratio is ours over
the reference's for images/s (above 1: ours faster), and reference over ours for launch-to-first-
step seconds and peak RSS (below 1: ours slower / bigger).

    .venv/bin/python benchmarks/train_step_vs_reference.py /path/to/EfficientHRNet --pairs 4
    .venv/bin/python benchmarks/train_step_vs_reference.py /path/to/EfficientHRNet --pairs 3 --freeze

Needs the `torch` extra and a checkout of github.com/TeCSAR-UNCC/EfficientHRNet (see
`train_step_reference.py`). Prints one line per launch, then one summary line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

import train_step_reference  # this folder: run as a script, it is on sys.path

HERE = Path(__file__).resolve().parent


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reference", type=Path, help="checkout of TeCSAR-UNCC/EfficientHRNet")
    p.add_argument("--pairs", type=int, default=3)
    p.add_argument("--freeze", action="store_true", help="backbone frozen on both sides")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=5, help="measured steps of each launch")
    p.add_argument("--warmup", type=int, default=2, help="our warm-up steps (the reference's is 1: no compile)")
    args = p.parse_args(argv)
    if args.pairs < 1:
        p.error(f"--pairs {args.pairs} must be at least 1")
    train_step_reference.parse_args([str(args.reference)])  # a wrong checkout fails now, not after a launch
    return args


def commands(args: argparse.Namespace) -> dict[str, list[str]]:
    shared = ["--input-size", str(args.input_size), "--batch", str(args.batch), "--steps", str(args.steps)]
    shared += ["--freeze"] if args.freeze else []
    ours = [sys.executable, str(HERE / "train_step.py"), "--phi", "-4", "--rule", "reference", "--fixed-batch",
            "--warmup", str(args.warmup), *shared]
    reference = [sys.executable, str(HERE / "train_step_reference.py"), str(args.reference), "--warmup", "1", *shared]
    return {"ours": ours, "reference": reference}


def launch(command: list[str]) -> dict:
    """The JSON record a benchmark prints last; its stderr if it fails."""
    done = subprocess.run(command, check=False, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def spread(values: list[float]) -> dict:
    return {"per_pair": [round(v, 3) for v in values], "median": round(statistics.median(values), 3),
            "min": round(min(values), 3), "max": round(max(values), 3)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    cmds = commands(args)
    pairs = []
    for index in range(args.pairs):
        order = ("ours", "reference") if index % 2 == 0 else ("reference", "ours")
        pair = {}
        for side in order:
            pair[side] = launch(cmds[side])
            print(json.dumps({"pair": index, "side": side, **pair[side]}), flush=True)
        pairs.append(pair)
    ours = [p["ours"] for p in pairs]
    ref = [p["reference"] for p in pairs]
    summary = {
        "benchmark": "train_step_vs_reference",
        "pairs": args.pairs,
        "freeze_backbone": args.freeze,
        "input_size": args.input_size,
        "batch": args.batch,
        "images_per_s_ours_over_reference": spread([o["images_per_s"] / r["images_per_s"] for o, r in zip(ours, ref)]),
        "launch_reference_over_ours": spread(
            [r["launch_to_first_step_s"] / o["launch_to_first_step_s"] for o, r in zip(ours, ref)]),
        "peak_rss_ours_over_reference": spread([o["peak_rss_mb"] / r["peak_rss_mb"] for o, r in zip(ours, ref)]),
    }
    print(json.dumps(summary), flush=True)
    return summary


if __name__ == "__main__":
    main()
