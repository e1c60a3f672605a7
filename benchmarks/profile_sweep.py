"""Wall time of the complexity-only sweep `experiments/profile_phi.toml`, as one JSON line.

Runs the whole spec (every phi x rule costed; the [latency] subset compiled and timed) into a
temporary folder and reports the wall time, the trial counts and the slowest timed trials. The
issue's budget for this sweep is one minute on a 2-core CPU.

    .venv/bin/python benchmarks/profile_sweep.py
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path

import jax

SPEC = Path(__file__).resolve().parents[1] / "experiments" / "profile_phi.toml"


def main() -> dict:
    from efficienthrnet.sweep import run_sweep

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        df = run_sweep(SPEC, out_dir=Path(tmp) / "profile", progress=False)
        wall = time.perf_counter() - start
    timed = df[df["latency_ms"].notna()]
    record = {
        "benchmark": "profile_sweep",
        "spec": SPEC.name,
        "backend": jax.default_backend(),
        "cpu_count": os.cpu_count(),
        "trials": len(df),
        "done": int((df["status"] == "done").sum()),
        "timed_trials": len(timed),
        "wall_s": round(wall, 1),
        "budget_s": 60,
        "latency_ms": {f"{r.rule} phi={r.phi:g}": round(r.latency_ms, 2) for r in timed.itertuples()},
    }
    print(json.dumps(record))
    return record


if __name__ == "__main__":
    main()
