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

from efficienthrnet.complexity import measure_latency
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
    load_before = os.getloadavg()[0]
    m = measure_latency(generate_config(phi, rule=rule), input_size, warmup=warmup, repeats=runs,
                        depthwise_impl=depthwise_impl, dtype=dtype)
    return {
        "phi": phi,
        "rule": rule,
        "input_size": input_size,
        "latency_ms": round(m["median_ms"], 2),
        "min_ms": round(m["min_ms"], 2),
        "process_cpu_ms": round(m["process_cpu_ms"], 2),
        "load_avg_1min": round(load_before, 2),
        "cpu_count": os.cpu_count(),
        "runs": runs,
        "backend": m["backend"],
        "device": m["device"],
        "depthwise_impl": resolve_depthwise_impl(depthwise_impl),
        "dtype": dtype,
        "compile_s": round(m["compile_s"], 2),
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
