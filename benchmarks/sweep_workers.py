"""The demo study's sweep in one process against worker processes, run alternately on this machine.

Each run is a whole sweep of `experiments/demo_study.toml` (both rules, both budgets, both seeds)
into its own empty folder, with the synthetic data made once beforehand, so every run pays its
compiles as a fresh `make demo` does. Prints one JSON line per run, then a summary line with the
mean wall time of each setting and their ratio:

    .venv/bin/python benchmarks/sweep_workers.py --steps 350 --pairs 1       # the demo as shipped
    .venv/bin/python benchmarks/sweep_workers.py --steps 100 --pairs 2 --workers 1 auto
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from efficienthrnet.demo import demo_spec
from efficienthrnet.sweep import run_sweep
from efficienthrnet.sweep_tasks import ensure_dataset


def _workers(text: str) -> int | str:
    return text if text == "auto" else int(text)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help="train steps per trial (default: the spec's)")
    parser.add_argument("--pairs", type=int, default=1, help="alternating rounds over the settings")
    parser.add_argument("--workers", type=_workers, nargs="+", default=[1, "auto"],
                        help='settings of [device] workers to compare (an integer or "auto")')
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        base = demo_spec(Path(tmp))
        ensure_dataset(base.data)
        if args.steps is not None:
            base = base.replace(train={**base.train, "steps": args.steps,
                                       "checkpoint_every": min(args.steps, base.train["checkpoint_every"])})
        times: dict[str, list[float]] = {str(w): [] for w in args.workers}
        for round_ in range(args.pairs):
            for workers in args.workers:
                out = Path(tmp) / f"run{round_}-{workers}"
                spec = base.replace(output=str(out), device=dataclasses.replace(base.device, workers=workers))
                start = time.perf_counter()
                df = run_sweep(spec, progress=False)
                wall = time.perf_counter() - start
                times[str(workers)].append(wall)
                done = df[df["status"] == "done"]
                print(json.dumps({"benchmark": "sweep_workers", "workers": workers, "round": round_,
                                  "cpu_cores": len(os.sched_getaffinity(0)), "trials": len(df),
                                  "failed": int((df["status"] != "done").sum()), "wall_s": round(wall, 1),
                                  "steps": base.train["steps"], "best_AP": round(float(done["AP"].max()), 4)}),
                      flush=True)
    means = {w: statistics.mean(t) for w, t in times.items()}
    first, *others = args.workers
    print(json.dumps({"benchmark": "sweep_workers", "summary": True, "mean_wall_s": means,
                      "speedup_vs_first": {str(w): round(means[str(first)] / means[str(w)], 3) for w in others}}))


if __name__ == "__main__":
    main()
