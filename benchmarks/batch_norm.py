"""Training-mode BatchNorm forward+backward: flax's `nn.BatchNorm` (autodiff) against
`nn.batch_norm.BatchNorm` (hand-written backward), and PyTorch's `BatchNorm2d` when installed.

    .venv/bin/python benchmarks/batch_norm.py
    .venv/bin/python benchmarks/batch_norm.py --shapes 8x128x128x96 --runs 20 --rounds 5

Shapes are BxHxWxC (default: maps of the φ -4 backbone and HR network at 256 px, batch 8). Each
pass differentiates sum(BN(x) * g) in x, scale and bias. Rounds alternate flax / ours / torch.
Prints one JSON object per shape: median ms of each, and ratios (flax_ms / ours_ms; torch_ms / ours_ms).
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from depthwise import times_ms, torch_available  # the sibling script: same timing and torch set-up
from flax import linen as nn

from efficienthrnet.nn.batch_norm import BatchNorm

DEFAULT_SHAPES = ("8x128x128x96", "8x64x64x144", "8x32x32x240", "8x64x64x14", "8x32x32x27")


def jax_pass(cls, x: np.ndarray, g: np.ndarray):
    """Zero-argument callable: one compiled, warm forward+backward of a BatchNorm class."""
    module = cls(use_running_average=False, momentum=0.99, epsilon=1e-3)
    xj, gj = jnp.asarray(x), jnp.asarray(g)
    variables = module.init(jax.random.key(0), xj)

    def loss(params, x, g):  # g an argument: as a constant, XLA would fold part of the backward
        y, _ = module.apply({"params": params, "batch_stats": variables["batch_stats"]}, x, mutable=["batch_stats"])
        return jnp.sum(y * g)

    grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
    run = lambda: jax.block_until_ready(grad(variables["params"], xj, gj))
    run(), run()
    return run


def torch_pass(x: np.ndarray, g: np.ndarray):
    import torch

    xt = torch.tensor(x.transpose(0, 3, 1, 2)).contiguous().requires_grad_(True)
    gt = torch.tensor(g.transpose(0, 3, 1, 2)).contiguous()
    bn = torch.nn.BatchNorm2d(x.shape[3], eps=1e-3, momentum=0.01)

    def run():
        xt.grad = None
        bn.zero_grad()
        (bn(xt) * gt).sum().backward()

    run(), run()
    return run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES))
    parser.add_argument("--runs", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true")
    args = parser.parse_args(argv)
    with_torch = not args.no_torch and torch_available(args.torch_threads)
    for spec in args.shapes:
        shape = tuple(int(d) for d in spec.split("x"))
        if len(shape) != 4:
            raise SystemExit(f"shape {spec!r} must be BxHxWxC, e.g. 8x128x128x96")
        rng = np.random.default_rng(0)
        x, g = (rng.normal(size=shape).astype(np.float32) for _ in range(2))
        passes = {"flax": jax_pass(nn.BatchNorm, x, g), "ours": jax_pass(BatchNorm, x, g)}
        if with_torch:
            passes["torch"] = torch_pass(x, g)
        times = {name: [] for name in passes}
        for _ in range(args.rounds):
            for name, run in passes.items():
                times[name] += times_ms(run, args.runs)
        ms = {name: statistics.median(t) for name, t in times.items()}
        row = {"shape": list(shape), "pass": "forward+backward", "backend": jax.default_backend(),
               **{f"{name}_ms": round(v, 2) for name, v in ms.items()},
               "flax_over_ours": round(ms["flax"] / ms["ours"], 2)}
        if with_torch:
            row["torch_over_ours"] = round(ms["torch"] / ms["ours"], 2)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
