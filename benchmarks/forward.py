"""Forward latency of EfficientHRNet (batch 1, jitted, after warm-up, median of N runs).

    .venv/bin/python benchmarks/forward.py                       # H0 @ 512 and H-4 @ 384
    .venv/bin/python benchmarks/forward.py --models=0:512,-2.5:416 --rule efficienthrnet --runs 20

Prints one JSON object per line: phi, rule, input_size, latency_ms (median wall time), min_ms,
process_cpu_ms (median CPU time over all threads), load_avg_1min, runs, backend, depthwise_impl,
dtype, compile_s. On a shared machine compare wall times only at similar load. Weights are
random (latency does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from efficienthrnet.nn import EfficientHRNet, init_shapes
from efficienthrnet.nn.ops import resolve_depthwise_impl
from efficienthrnet.scaling import generate_config

DEFAULT_MODELS = ("0:512", "-4:384")


def parse_model(spec: str) -> tuple[float, int]:
    """'phi:input_size' -> (phi, input_size)."""
    try:
        phi, size = spec.rsplit(":", 1)
        return float(phi), int(size)
    except ValueError as err:
        raise SystemExit(f"model spec {spec!r} must be 'phi:input_size', e.g. -4:384") from err


def random_variables(shapes, seed: int = 0):
    """Random arrays of the variables' shapes (BN variances positive), without compiling init."""
    rng = np.random.default_rng(seed)

    def fill(path, leaf):
        if path[-1].key == "var":
            return jnp.asarray(rng.uniform(0.5, 1.5, leaf.shape).astype(np.float32))
        return jnp.asarray((0.1 * rng.standard_normal(leaf.shape)).astype(np.float32))

    return jax.tree_util.tree_map_with_path(fill, shapes)


def forward_latency(
    phi: float,
    input_size: int,
    rule: str = "reference",
    runs: int = 10,
    warmup: int = 3,
    depthwise_impl: str = "auto",
    dtype: str = "float32",
) -> dict:
    """Median forward latency in ms of the jitted model at batch 1 on the default backend."""
    cfg = generate_config(phi, rule=rule)
    model = EfficientHRNet(cfg, dtype=jnp.dtype(dtype), depthwise_impl=depthwise_impl)
    x = jax.random.normal(jax.random.key(0), (1, input_size, input_size, 3), jnp.float32)
    variables = random_variables(init_shapes(cfg, input_size))
    forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
    start = time.perf_counter()
    jax.block_until_ready(forward(variables, x))
    compile_s = time.perf_counter() - start
    for _ in range(warmup):
        jax.block_until_ready(forward(variables, x))
    times, cpu_times = [], []
    load_before = os.getloadavg()[0]
    for _ in range(runs):
        start, cpu_start = time.perf_counter(), time.process_time()
        jax.block_until_ready(forward(variables, x))
        times.append((time.perf_counter() - start) * 1e3)
        cpu_times.append((time.process_time() - cpu_start) * 1e3)
    return {
        "phi": phi,
        "rule": rule,
        "input_size": input_size,
        "latency_ms": round(statistics.median(times), 2),
        "min_ms": round(min(times), 2),
        # CPU time of this process over all its threads: with other work on the machine, wall time
        # rises but this stays close to what the network needs
        "process_cpu_ms": round(statistics.median(cpu_times), 2),
        "load_avg_1min": round(load_before, 2),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "backend": jax.default_backend(),
        "device": str(jax.devices()[0].device_kind),
        "depthwise_impl": resolve_depthwise_impl(depthwise_impl),
        "dtype": dtype,
        "compile_s": round(compile_s, 2),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models",
        default=",".join(DEFAULT_MODELS),
        help="comma-separated phi:input_size items (write --models=... when a phi is negative)",
    )
    parser.add_argument("--rule", default="reference")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--depthwise-impl", default="auto", choices=["auto", "native", "shifted"])
    parser.add_argument("--dtype", default="float32")
    args = parser.parse_args(argv)
    for spec in args.models.split(","):
        phi, size = parse_model(spec)
        result = forward_latency(
            phi, size, args.rule, args.runs, args.warmup, args.depthwise_impl, args.dtype
        )
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
