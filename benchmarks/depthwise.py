"""Depthwise convolution: native grouped conv against shifted multiply-adds (and PyTorch), forward and
forward+backward.

    .venv/bin/python benchmarks/depthwise.py
    .venv/bin/python benchmarks/depthwise.py --shapes 1x96x96x96:3:2 --runs 20 --rounds 5

Shapes are BxHxWxC:kernel:stride (default: typical EfficientNet-B0 layers at 512 input) with
TF-'SAME' padding. Prints one JSON object per line: impl, pass ("forward" or "forward+backward"),
shape, kernel, stride, time_ms (median over all timed calls), gflops (2 x MACs of the forward conv /
time; for forward+backward the same forward FLOPs over the longer time, so it reads as an effective
rate), backend.

When PyTorch is installed (the `torch` extra) the same convolution runs as
`torch.nn.functional.conv2d(groups=C)` on the same numbers and threads (`--torch-threads`, default
2), timed in rounds alternating with ours so that load on a shared machine hits both alike; each
row then also carries torch_ms and ratio (torch_ms / time_ms: above 1 means ours is faster).
Without torch (or with --no-torch) only our times are printed. On a machine shared with other jobs,
PyTorch's thread pool suffers more from oversubscription than XLA's; a steadier comparison pins
both to one core: `taskset -c 1 python benchmarks/depthwise.py --torch-threads 1`.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from efficienthrnet.nn.ops import depthwise_conv2d, tf_same_padding

DEFAULT_SHAPES = ("1x256x256x96:3:2", "1x128x128x144:5:2", "1x32x32x480:3:1", "1x16x16x1152:5:1")


def parse_shape(spec: str) -> tuple[tuple[int, ...], int, int]:
    try:
        dims, kernel, stride = spec.split(":")
        shape = tuple(int(d) for d in dims.split("x"))
        if len(shape) != 4:
            raise ValueError
        return shape, int(kernel), int(stride)
    except ValueError as err:
        raise SystemExit(f"shape spec {spec!r} must be BxHxWxC:kernel:stride, e.g. 1x64x64x96:3:2") from err


def times_ms(fn, runs: int) -> list[float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def jax_passes(x: np.ndarray, w: np.ndarray, stride: int, impl: str) -> dict:
    """Zero-argument callables (forward, forward+backward) of our depthwise conv, compiled and warm."""
    kernel = w.shape[0]
    pad = tf_same_padding(kernel, stride)
    conv = lambda x, w: depthwise_conv2d(x, w, (stride, stride), (pad, pad), impl)
    forward = jax.jit(conv)
    backward = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
    xj, wj = jnp.asarray(x), jnp.asarray(w)
    passes = {
        "forward": lambda: jax.block_until_ready(forward(xj, wj)),
        "forward+backward": lambda: jax.block_until_ready(backward(xj, wj)),
    }
    for fn in passes.values():
        fn(), fn()  # compile, warm up
    return passes


def torch_passes(x: np.ndarray, w: np.ndarray, stride: int) -> dict:
    """The same convolution in PyTorch (NCHW, explicit TF-'SAME' zero pad, conv2d groups=C)."""
    import torch
    import torch.nn.functional as F

    kernel, channels = w.shape[0], w.shape[3]
    top, bottom = tf_same_padding(kernel, stride)
    xt = torch.tensor(x.transpose(0, 3, 1, 2)).contiguous().requires_grad_(True)
    wt = torch.tensor(w.transpose(3, 2, 0, 1)).contiguous().requires_grad_(True)  # [C, 1, kh, kw]

    def conv():
        return F.conv2d(F.pad(xt, (top, bottom, top, bottom)), wt, stride=stride, groups=channels)

    def forward():
        with torch.no_grad():
            conv()

    def backward():
        xt.grad = wt.grad = None
        (conv() ** 2).sum().backward()

    passes = {"forward": forward, "forward+backward": backward}
    for fn in passes.values():
        fn(), fn()
    return passes


def time_depthwise(shape, kernel: int, stride: int, impl: str, runs: int = 10, rounds: int = 1,
                   with_torch: bool = False) -> list[dict]:
    """Forward and forward+backward median times of one depthwise conv, ours and optionally torch's.

    Each of `rounds` rounds times `runs` calls of ours, then `runs` of torch's, so the two see the
    same machine load; the medians are over all rounds.
    """
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape).astype(np.float32)
    w = rng.normal(size=(kernel, kernel, 1, shape[3])).astype(np.float32)
    ours = jax_passes(x, w, stride, impl)
    theirs = torch_passes(x, w, stride) if with_torch else None
    pad = tf_same_padding(kernel, stride)
    out_hw = [(n + sum(pad) - kernel) // stride + 1 for n in shape[1:3]]
    flops = 2 * shape[0] * out_hw[0] * out_hw[1] * shape[3] * kernel * kernel
    rows = []
    for name in ours:
        ours_ms, torch_ms = [], []
        for _ in range(rounds):
            ours_ms += times_ms(ours[name], runs)
            if theirs is not None:
                torch_ms += times_ms(theirs[name], runs)
        ms = statistics.median(ours_ms)
        row = {
            "impl": impl,
            "pass": name,
            "shape": list(shape),
            "kernel": kernel,
            "stride": stride,
            "time_ms": round(ms, 3),
            "gflops": round(flops / ms / 1e6, 2),
            "backend": jax.default_backend(),
        }
        if theirs is not None:
            row["torch_ms"] = round(statistics.median(torch_ms), 3)
            row["ratio"] = round(row["torch_ms"] / ms, 2)
        rows.append(row)
    return rows


def torch_available(threads: int) -> bool:
    try:
        import torch
    except ImportError:
        return False
    torch.set_num_threads(threads)
    return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES))
    parser.add_argument("--impls", nargs="+", default=["native", "shifted"], choices=["native", "shifted"])
    parser.add_argument("--runs", type=int, default=10, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating ours/torch rounds")
    parser.add_argument("--torch-threads", type=int, default=2)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    args = parser.parse_args(argv)
    with_torch = not args.no_torch and torch_available(args.torch_threads)
    for spec in args.shapes:
        shape, kernel, stride = parse_shape(spec)
        for impl in args.impls:
            for row in time_depthwise(shape, kernel, stride, impl, args.runs, args.rounds, with_torch):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
