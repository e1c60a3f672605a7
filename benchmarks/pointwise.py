"""Pointwise (1x1) convolution: XLA's native conv against the matrix product `nn.ops.conv_general`
runs on CPU (and PyTorch), forward and forward+backward.

    .venv/bin/python benchmarks/pointwise.py
    .venv/bin/python benchmarks/pointwise.py --shapes 8x64x64x96:24 --runs 20 --rounds 5

Shapes are BxHxWxCin:Cout (default: expand and project convs of EfficientNet-style backbones at 256 px,
batch 8, and a 1x1 conv of HRNet width). Prints one JSON object per line: impl ("native" is
`lax.conv_general_dilated`, "matmul" `nn.ops.conv_general`, which on CPU runs a pointwise conv as
one 2-D dot), pass, shape, time_ms (median over all timed calls), gflops (2 x forward MACs / time), backend.

With PyTorch installed (the `torch` extra), `torch.nn.functional.conv2d` runs on the same numbers
and threads (`--torch-threads`, default 2) in rounds alternating with ours, and each row gains
torch_ms and ratio (torch_ms / time_ms: above 1 means ours is faster). --no-torch skips it.
"""

from __future__ import annotations

import argparse
import json
import statistics

import jax
import jax.numpy as jnp
import numpy as np
from depthwise import times_ms, torch_available  # the sibling script: same timing and torch set-up

from efficienthrnet.nn.ops import conv_general

NHWC = ("NHWC", "HWIO", "NHWC")
DEFAULT_SHAPES = ("8x128x128x16:96", "8x64x64x96:24", "8x64x64x24:144", "8x32x32x40:240", "8x16x16x480:80",
                  "8x8x8x1152:192", "8x64x64x32:32")


def parse_shape(spec: str) -> tuple[tuple[int, int, int, int], int]:
    try:
        dims, out = spec.split(":")
        shape = tuple(int(d) for d in dims.split("x"))
        if len(shape) != 4:
            raise ValueError
        return shape, int(out)
    except ValueError as err:
        raise SystemExit(f"shape spec {spec!r} must be BxHxWxCin:Cout, e.g. 8x64x64x96:24") from err


def _native(x, w):
    return jax.lax.conv_general_dilated(x, w, (1, 1), "VALID", dimension_numbers=NHWC)


def _matmul(x, w):
    if jax.default_backend() != "cpu":
        raise SystemExit("the matmul form is the CPU path of nn.ops.conv_general; use --impls native")
    return conv_general(x, w, (1, 1), "VALID", dimension_numbers=NHWC)


IMPLS = {"native": _native, "matmul": _matmul}


def jax_passes(x: np.ndarray, w: np.ndarray, impl: str) -> dict:
    """Zero-argument callables (forward, forward+backward), compiled and warm."""
    conv = IMPLS[impl]
    forward = jax.jit(conv)
    backward = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    passes = {
        "forward": lambda: jax.block_until_ready(forward(xj, wj)),
        "forward+backward": lambda: jax.block_until_ready(backward(xj, wj)),
    }
    for fn in passes.values():
        fn(), fn()
    return passes


def torch_passes(x: np.ndarray, w: np.ndarray) -> dict:
    """The same convolution in PyTorch (NCHW, OIHW weights)."""
    import torch
    import torch.nn.functional as F

    xt = torch.tensor(x.transpose(0, 3, 1, 2)).contiguous().requires_grad_(True)
    wt = torch.tensor(w.transpose(3, 2, 0, 1)).contiguous().requires_grad_(True)

    def forward():
        with torch.no_grad():
            F.conv2d(xt, wt)

    def backward():
        xt.grad = wt.grad = None
        (F.conv2d(xt, wt) ** 2).sum().backward()

    passes = {"forward": forward, "forward+backward": backward}
    for fn in passes.values():
        fn(), fn()
    return passes


def time_pointwise(shape, out: int, impl: str, runs: int = 10, rounds: int = 1,
                   with_torch: bool = False) -> list[dict]:
    """Median forward and forward+backward times of one pointwise conv, ours and optionally torch's,
    in `rounds` alternating rounds of `runs` calls each."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    w = (rng.normal(size=(1, 1, shape[3], out)) / np.sqrt(shape[3])).astype(np.float32)
    ours = jax_passes(x, w, impl)
    theirs = torch_passes(x, w) if with_torch else None
    flops = 2 * shape[0] * shape[1] * shape[2] * shape[3] * out
    rows = []
    for name in ours:
        ours_ms, torch_ms = [], []
        for _ in range(rounds):
            ours_ms += times_ms(ours[name], runs)
            if theirs is not None:
                torch_ms += times_ms(theirs[name], runs)
        ms = statistics.median(ours_ms)
        row = {"impl": impl, "pass": name, "shape": [*shape, out], "time_ms": round(ms, 3),
               "gflops": round(flops / ms / 1e6, 2), "backend": jax.default_backend()}
        if theirs is not None:
            row["torch_ms"] = round(statistics.median(torch_ms), 3)
            row["ratio"] = round(row["torch_ms"] / ms, 2)
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES))
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=list(IMPLS))
    parser.add_argument("--runs", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ours/torch rounds")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = parser.parse_args(argv)
    with_torch = not args.no_torch and torch_available(args.torch_threads)
    for spec in args.shapes:
        shape, out = parse_shape(spec)
        for impl in args.impls:
            for row in time_pointwise(shape, out, impl, args.runs, args.rounds, with_torch):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
