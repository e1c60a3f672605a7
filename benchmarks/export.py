"""Latency of the deployed model: the ONNX export in onnxruntime (CPU) beside the JAX forward.

    .venv/bin/python benchmarks/export.py                         # H0..H-4 at their native sizes
    .venv/bin/python benchmarks/export.py --models=-4:384 --runs 20
    .venv/bin/python benchmarks/export.py --parity --models=-6:64x96,-4:128x192    # no timing

`--parity` instead prints, per model, the largest difference of each exported output from the Flax
model's (relative to the output's largest magnitude) for the StableHLO and onnxruntime artefacts.

For each model both forwards are timed alternately in one loop (so both see the same machine
load) at batch 1 after warm-up; prints one JSON object per line: phi, rule, input_size,
jax_ms and onnxruntime_ms (medians), their min, onnxruntime_over_jax (ratio of medians), the
ONNX export time and JAX compile time, load_avg_1min. Weights are random (latency does not
depend on them). Needs the 'export' extra.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
from pathlib import Path

import jax
import numpy as np

from efficienthrnet import export
from efficienthrnet.export import compare_latency
from efficienthrnet.nn.model import EfficientHRNet
from efficienthrnet.scaling import generate_config

DEFAULT_MODELS = ("0:512", "-1:480", "-2:448", "-3:416", "-4:384")


def parse_model(spec: str) -> tuple[float, tuple[int, int]]:
    """'phi:size' or 'phi:HxW' -> (phi, (H, W))."""
    try:
        phi, size = spec.rsplit(":", 1)
        h, _, w = size.partition("x")
        return float(phi), (int(h), int(w or h))
    except ValueError as err:
        raise SystemExit(f"model spec {spec!r} must be 'phi:size' or 'phi:HxW', e.g. -4:384 or -6:64x96") from err


def parity(phi: float, size: tuple[int, int], rule: str, seed: int = 0) -> dict:
    """max |export - flax| / max |flax| per output, for both artefacts (random weights, BN stats != identity)."""
    cfg = generate_config(phi, rule)
    variables = export.random_variables(cfg, seed)
    x = np.random.default_rng(seed).normal(size=(1, *size, 3)).astype(np.float32)
    reference = jax.jit(lambda v, x: EfficientHRNet(cfg).apply(v, x, train=False))(variables, x)
    with tempfile.TemporaryDirectory() as tmp:
        forward, _ = export.load_stablehlo(export.to_stablehlo(cfg, variables, Path(tmp) / "m.stablehlo", size))
        session = export.onnx_session(export.to_onnx(cfg, variables, Path(tmp) / "m.onnx", size))
        outputs = {"stablehlo": forward(x), "onnxruntime": export.run_onnx(session, x)}
    row = {"phi": phi, "rule": rule, "input_size": list(size)}
    for name, outs in outputs.items():
        for label, ref, out in zip(export.OUTPUT_NAMES, reference, outs):
            ref, out = np.asarray(ref), np.asarray(out)
            row[f"{name}_{label}_rel"] = float(f"{np.abs(out - ref).max() / np.abs(ref).max():.3g}")
    return row


def export_latency(phi: float, input_size: tuple[int, int], rule: str, runs: int, warmup: int, threads: int | None) -> dict:
    load_before = os.getloadavg()[0]
    m = compare_latency(generate_config(phi, rule), input_size, warmup=warmup, repeats=runs, threads=threads)
    return {
        "phi": phi,
        "rule": rule,
        "input_size": list(input_size),
        "jax_ms": round(m["jax"]["median_ms"], 2),
        "onnxruntime_ms": round(m["onnxruntime"]["median_ms"], 2),
        "jax_min_ms": round(m["jax"]["min_ms"], 2),
        "onnxruntime_min_ms": round(m["onnxruntime"]["min_ms"], 2),
        "onnxruntime_over_jax": round(m["onnxruntime_over_jax"], 3),
        "onnx_export_s": round(m["onnxruntime_export_s"], 1),
        "jax_compile_s": round(m["jax_first_call_s"], 1),
        "onnxruntime_threads": threads,
        "runs": runs,
        "load_avg_1min": round(load_before, 2),
        "cpu_count": os.cpu_count(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated phi:input_size")
    parser.add_argument("--rule", default="efficienthrnet")
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads")
    parser.add_argument("--parity", action="store_true", help="print parity of the exports instead of latency")
    args = parser.parse_args()
    for spec in args.models.split(","):
        phi, size = parse_model(spec)
        if args.parity:
            row = parity(phi, size, args.rule)
        else:
            row = export_latency(phi, size, args.rule, args.runs, args.warmup, args.threads)
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
