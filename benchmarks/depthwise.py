"""Depthwise convolution: native grouped conv against shifted multiply-adds, forward and forward+backward.

    .venv/bin/python benchmarks/depthwise.py
    .venv/bin/python benchmarks/depthwise.py --shapes 1x96x96x96:3:2 --runs 20

Shapes are BxHxWxC:kernel:stride (default: typical EfficientNet-B0 layers at 512 input). Prints
one JSON object per line: impl, pass ("forward" or "forward+backward"), shape, kernel, stride,
time_ms (median), gflops (2 x MACs of the forward conv / time; for forward+backward the same
forward FLOPs over the longer time, so it reads as an effective rate), backend.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import jax
import jax.numpy as jnp

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


def _median_ms(fn, *args, runs: int) -> float:
    jax.block_until_ready(fn(*args))  # compile
    jax.block_until_ready(fn(*args))  # warm-up
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append((time.perf_counter() - start) * 1e3)
    return statistics.median(times)


def time_depthwise(shape, kernel: int, stride: int, impl: str, runs: int = 10) -> list[dict]:
    """Forward and forward+backward median times of one depthwise conv with one implementation."""
    kx, kw = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, shape, jnp.float32)
    w = jax.random.normal(kw, (kernel, kernel, 1, shape[3]), jnp.float32)
    pad = tf_same_padding(kernel, stride)
    conv = lambda x, w: depthwise_conv2d(x, w, (stride, stride), (pad, pad), impl)  # noqa: E731
    forward = jax.jit(conv)
    backward = jax.jit(jax.grad(lambda x, w: jnp.sum(conv(x, w) ** 2), argnums=(0, 1)))
    out_hw = [(n + sum(pad) - kernel) // stride + 1 for n in shape[1:3]]
    flops = 2 * shape[0] * out_hw[0] * out_hw[1] * shape[3] * kernel * kernel
    rows = []
    for name, fn in (("forward", forward), ("forward+backward", backward)):
        ms = _median_ms(fn, x, w, runs=runs)
        rows.append(
            {
                "impl": impl,
                "pass": name,
                "shape": list(shape),
                "kernel": kernel,
                "stride": stride,
                "time_ms": round(ms, 3),
                "gflops": round(flops / ms / 1e6, 2),
                "backend": jax.default_backend(),
            }
        )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", nargs="+", default=list(DEFAULT_SHAPES))
    parser.add_argument("--impls", nargs="+", default=["native", "shifted"], choices=["native", "shifted"])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args(argv)
    for spec in args.shapes:
        shape, kernel, stride = parse_shape(spec)
        for impl in args.impls:
            for row in time_depthwise(shape, kernel, stride, impl, args.runs):
                print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
