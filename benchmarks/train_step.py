"""Train-step throughput, launch-to-first-step time and peak memory of EfficientHRNet, as one JSON line.

Runs the real training loop (`efficienthrnet.train.train`: data pipeline, sharded jitted step,
metrics) for warm-up + measured steps and reports:

- launch_to_first_step_s: from this script's start (before JAX is imported) until the first train
  step has run (model build, state init, compilation, first batch, first step);
- images_per_s / step_ms: steady throughput over the measured steps only (the warm-up holds the
  compilation), and the share of that time the loop waited for input;
- peak_rss_mb: peak resident memory of this process (``getrusage``'s ru_maxrss), and of the
  pipeline's worker processes separately when there are any.

Without --data it writes a small synthetic dataset to a temporary folder.

    .venv/bin/python benchmarks/train_step.py                 # phi=-4, 256 px, batch 8
    .venv/bin/python benchmarks/train_step.py --rule reference --freeze
    .venv/bin/python benchmarks/train_step.py --rule reference --fixed-batch   # as train_step_reference.py
    .venv/bin/python benchmarks/train_step.py --compilation-cache /tmp/jc   # twice: cold, then warm start
    .venv/bin/python benchmarks/train_step.py --phi 0 --input-size 512 --batch 16 --steps 20
"""

from __future__ import annotations

import time

LAUNCHED = time.perf_counter()  # before the heavy imports: they are part of a launch

import argparse
import json
import resource
import sys
import tempfile
from pathlib import Path

import jax


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phi", type=float, default=-4)
    p.add_argument("--rule", default="efficienthrnet", help="scaling rule name or .json file")
    p.add_argument("--freeze", action="store_true", help="freeze the backbone (zero updates), as the reference")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--steps", type=int, default=10, help="measured steps (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="steps left out of the figures (compilation)")
    p.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--fixed-batch", action="store_true",
                   help="step on the pipeline's first batch over and over, as train_step_reference.py does, "
                        "so that no input work shares the cores with the step")
    p.add_argument("--data", default=None, help="dataset spec; default: a synthetic set in a temp dir")
    p.add_argument("--compilation-cache", default=None, metavar="DIR",
                   help="JAX persistent compilation cache folder (run twice: the second launch is the warm one)")
    args = p.parse_args(argv)
    if args.warmup < 1 or args.steps < 1 or args.warmup + args.steps < 3:
        p.error(f"--warmup {args.warmup} and --steps {args.steps} must both be >= 1 and add up to >= 3")
    return args


class RepeatedBatch:
    """The loader's first batch, over and over; the loader is closed once it has given it.

    The reference's benchmark (`train_step_reference.py`) trains on one fixed batch, so its steps
    share the cores with no input pipeline; with --fixed-batch this side does the same.
    """

    def __init__(self, loader):
        self.loader = loader
        self.state = None

    def __iter__(self):
        batch = next(iter(self.loader))
        self.state = self.loader.get_state()
        self.close()
        while True:
            yield batch

    def get_state(self):
        return self.state

    def set_state(self, state):
        self.loader.set_state(state)

    def close(self):
        if hasattr(self.loader, "close"):
            self.loader.close()


class StampedLoader:
    """The training loader, noting when each batch is asked for.

    The loop asks for batch 3 only after it has read step 1's metrics (it checks each step's
    metrics one step late), so that request marks the end of the first step.
    """

    def __init__(self, loader):
        self.loader = loader
        self.asked: list[float] = []

    def __iter__(self):
        for batch in self.loader:
            self.asked.append(time.perf_counter())
            yield batch

    def get_state(self):
        return self.loader.get_state()

    def set_state(self, state):
        self.loader.set_state(state)

    def close(self):
        if hasattr(self.loader, "close"):
            self.loader.close()


def peak_rss_mb(who: int) -> float:
    """Peak resident set size in MiB (ru_maxrss is KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(who).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def main(argv=None) -> dict:
    from efficienthrnet import train as T
    from efficienthrnet.data.synthetic import make_synthetic_dataset
    from efficienthrnet.scaling import generate_config

    args = parse_args(argv)
    if args.compilation_cache:
        jax.config.update("jax_compilation_cache_dir", args.compilation_cache)
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
            freeze_backbone=args.freeze,
            num_workers=args.num_workers,
            # one metrics window for the warm-up and one for the measured steps
            log_every=args.warmup,
            checkpoint_every=total,
            keep_checkpoints=1,
            progress=False,
        )
        model_config = generate_config(args.phi, rule=args.rule)
        loader = T.make_train_loader(data, T.effective_model_config(model_config, config), config)
        loader = StampedLoader(RepeatedBatch(loader) if args.fixed_batch else loader)
        started = time.perf_counter()
        summary = T.train(model_config, config, data, Path(tmp) / "run", loader=loader)
        wall = time.perf_counter() - started
    device = jax.devices()[0]
    record = {
        "benchmark": "train_step",
        "backend": jax.default_backend(),
        "device": getattr(device, "device_kind", str(device)),
        "device_count": jax.device_count(),
        "phi": args.phi,
        "rule": args.rule,
        "freeze_backbone": args.freeze,
        "input_size": args.input_size,
        "batch": args.batch,
        "dtype": args.dtype,
        "num_workers": args.num_workers,
        "fixed_batch": args.fixed_batch,
        "compilation_cache": args.compilation_cache,
        "measured_steps": args.steps,
        "launch_to_first_step_s": round(loader.asked[2] - LAUNCHED, 2),
        "images_per_s": round(summary["images_per_s"], 3),
        "step_ms": round(1000 * args.batch / summary["images_per_s"], 1),
        "input_wait_share": round(summary["input_wait_share"], 4),
        "peak_rss_mb": round(peak_rss_mb(resource.RUSAGE_SELF), 1),
        "final_loss": round(summary["metrics"]["loss"], 5),
        "wall_s_including_compile": round(wall, 1),
    }
    if args.num_workers:
        record["peak_rss_mb_workers"] = round(peak_rss_mb(resource.RUSAGE_CHILDREN), 1)
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
