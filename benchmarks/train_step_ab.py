"""The train step with and without this library's CPU rewrites, timed in one process, call by call.

On a shared VM whose speed drifts by 1.5x between launches, two launches of `train_step.py`
cannot resolve a 5-10 % change. Here every variant's step is compiled in one process and the
variants' steps alternate, so drift hits them alike; the figure is the median over rounds of the
per-round time ratio.

A variant is "current" (the library as it is) or a "+"-joined list of undone rewrites:

- ``flax_batch_norm``: `flax.linen.BatchNorm` (autodiff backward) instead of `nn.batch_norm.BatchNorm`;
- ``native_stem``: the RGB stem as XLA's convolution instead of one dot of its patches
  (`nn.ops.IM2COL_MAX_IN_CHANNELS` = 0).

    .venv/bin/python benchmarks/train_step_ab.py                       # flax_batch_norm+native_stem vs current
    .venv/bin/python benchmarks/train_step_ab.py --variants flax_batch_norm current --rounds 20

Prints one JSON object per variant (compile seconds, losses of its first three steps on the same
batch, step ms: median and min) and one per variant after the first with its speed-up over the first.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import tempfile
import time
from pathlib import Path

import jax
from flax import linen as nn

from efficienthrnet import train as T
from efficienthrnet.data.synthetic import make_synthetic_dataset
from efficienthrnet.nn import layers, ops
from efficienthrnet.nn.model import EfficientHRNet
from efficienthrnet.scaling import generate_config
from efficienthrnet.training.parallel import make_mesh

UNDO = {
    "flax_batch_norm": (layers, "BatchNorm", nn.BatchNorm),
    "native_stem": (ops, "IM2COL_MAX_IN_CHANNELS", 0),
}


@contextlib.contextmanager
def variant(name: str):
    """While active, the model is traced with the named rewrites undone."""
    undone = [] if name == "current" else name.split("+")
    unknown = [u for u in undone if u not in UNDO]
    if unknown:
        raise SystemExit(f"unknown variant part(s) {unknown}; use 'current' or '+'-joined {sorted(UNDO)}")
    saved = [(UNDO[u][0], UNDO[u][1], getattr(UNDO[u][0], UNDO[u][1])) for u in undone]
    try:
        for u in undone:
            module, attr, value = UNDO[u]
            setattr(module, attr, value)
        yield
    finally:
        for module, attr, value in saved:
            setattr(module, attr, value)


def compiled_step(name: str, model_config, config: T.TrainConfig, mesh, batch):
    """The variant's jitted step compiled for ``batch``, its fresh state, and its compile seconds."""
    with variant(name):
        jax.clear_caches()  # equal modules hash alike: without this the first variant's trace is reused
        model = EfficientHRNet(model_config, init_scheme=config.init_scheme)
        state = T.create_train_state(model, model_config, config)
        start = time.perf_counter()
        step = T.make_train_step(config, mesh).lower(state, batch).compile()
        return step, state, time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--phi", type=float, default=-4)
    p.add_argument("--rule", default="reference")
    p.add_argument("--input-size", type=int, default=256)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--variants", nargs="+", default=["flax_batch_norm+native_stem", "current"])
    args = p.parse_args(argv)
    config = T.TrainConfig(steps=3 + args.rounds, batch_size=args.batch, input_size=args.input_size, progress=False)
    model_config = T.effective_model_config(generate_config(args.phi, rule=args.rule), config)
    mesh = make_mesh()
    with tempfile.TemporaryDirectory() as tmp:
        make_synthetic_dataset(Path(tmp), num_images=args.batch, image_size=args.input_size, seed=0)
        batch = T.shard_batch(next(iter(T.make_train_loader(f"synthetic:{tmp}", model_config, config))), mesh)
    runs = {}
    for name in args.variants:
        step, state, compile_s = compiled_step(name, model_config, config, mesh, batch)
        losses = []
        for _ in range(3):
            state, metrics = jax.block_until_ready(step(state, batch))
            losses.append(float(metrics["loss"]))
        runs[name] = {"step": step, "state": state, "compile_s": compile_s, "losses": losses, "ms": []}
    for _ in range(args.rounds):
        for run in runs.values():
            start = time.perf_counter()
            run["state"], _ = jax.block_until_ready(run["step"](run["state"], batch))
            run["ms"].append((time.perf_counter() - start) * 1e3)
    common = {"phi": args.phi, "rule": args.rule, "input_size": args.input_size, "batch": args.batch,
              "rounds": args.rounds, "backend": jax.default_backend()}
    for name, run in runs.items():
        print(json.dumps({"variant": name, **common, "compile_s": round(run["compile_s"], 1),
                          "first_losses": run["losses"], "step_ms_median": round(statistics.median(run["ms"]), 1),
                          "step_ms_min": round(min(run["ms"]), 1)}), flush=True)
    first = runs[args.variants[0]]
    for name in args.variants[1:]:
        ratios = [a / b for a, b in zip(first["ms"], runs[name]["ms"], strict=True)]
        print(json.dumps({"variant": name, "speedup_over": args.variants[0],
                          "median_round_ratio": round(statistics.median(ratios), 3)}), flush=True)


if __name__ == "__main__":
    main()
