"""Train-step throughput of EfficientHRNet on the current JAX backend, as one JSON line.

Runs the real training loop (`efficienthrnet.train.train`: data pipeline, sharded jitted step,
metrics) for warm-up + measured steps and reports images/s and the share of wall time the loop
spent waiting for the next input batch, over the measured steps only (the warm-up holds the
compilation). Without --data it writes a small synthetic dataset to a temporary folder.

    .venv/bin/python benchmarks/train_step.py                 # phi=-4, 256 px, batch 8
    .venv/bin/python benchmarks/train_step.py --phi 0 --input-size 512 --batch 16 --steps 20
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import jax


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phi", type=float, default=-4)
    p.add_argument("--rule", default="efficienthrnet")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="measured steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the figures (compilation)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--data", default=None, help="dataset spec; default: a synthetic set in a temp dir")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    from efficienthrnet import train as T
    from efficienthrnet.data.synthetic import make_synthetic_dataset
    from efficienthrnet.scaling import generate_config

    args = parse_args(argv)
    if args.warmup < 1 or args.steps < 1:
        raise SystemExit(f"--warmup {args.warmup} and --steps {args.steps} must both be >= 1")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            make_synthetic_dataset(Path(tmp) / "data", num_images=40, image_size=args.input_size, seed=0)
            data = f"synthetic:{Path(tmp) / 'data'}"
        total = args.warmup + args.steps
        config = T.TrainConfig(
            steps=total,
            batch_size=args.batch,
            input_size=args.input_size,
            compute_dtype=args.dtype,
            num_workers=args.num_workers,
            # one metrics window for the warm-up and one for the measured steps
            log_every=args.warmup,
            checkpoint_every=total,
            keep_checkpoints=1,
            progress=False,
        )
        started = time.perf_counter()
        summary = T.train(generate_config(args.phi, rule=args.rule), config, data, Path(tmp) / "run")
        wall = time.perf_counter() - started
    device = jax.devices()[0]
    record = {
        "benchmark": "train_step",
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "phi": args.phi,
        "rule": args.rule,
        "input_size": args.input_size,
        "batch": args.batch,
        "dtype": args.dtype,
        "num_workers": args.num_workers,
        "measured_steps": args.steps,
        "images_per_s": round(summary["images_per_s"], 3),
        "step_ms": round(1000 * args.batch / summary["images_per_s"], 1),
        "input_wait_share": round(summary["input_wait_share"], 4),
        "final_loss": round(summary["metrics"]["loss"], 5),
        "wall_s_including_compile": round(wall, 1),
    }
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
