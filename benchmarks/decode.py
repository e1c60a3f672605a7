"""Decode time per image on 512x512 maps (J=17, T=2 tags as with flip test), refine on.

Prints one JSON object per line: people, total_ms (median wall time over repeats), cpu_ms
(median process CPU time, robust to other jobs on the machine) and one <stage>_ms field per
decode stage, plus whether the output equals the literal reference port
(`tests/test_decode_oracle.py`). Run: .venv/bin/python benchmarks/decode.py
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from efficienthrnet.decode import STAGES, DecodeConfig, decode
from efficienthrnet.keypoints import COCO17
from test_decode_oracle import oracle_decode, render_people


def bench(num_people: int, size: int, repeats: int, check: bool, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    # sigma 4: the 1/2-resolution sigma-2 Gaussians after projection to input resolution.
    heat, tags = render_people(rng, size, size, num_people, sigma=4.0, missing=0.15)
    cfg = DecodeConfig()
    decode(heat, tags, COCO17, cfg)  # warm-up
    runs, cpu = [], []
    for _ in range(repeats):
        start = time.process_time()
        runs.append(decode(heat, tags, COCO17, cfg, return_timings=True))
        cpu.append((time.process_time() - start) * 1e3)
    row = {"people": num_people, "map": f"{size}x{size}", "found": runs[0].num_people}
    row["total_ms"] = round(float(np.median([r.timings_ms["total"] for r in runs])), 2)
    # CPU time of this process: what the decode costs when other jobs share the cores.
    row["cpu_ms"] = round(float(np.median(cpu)), 2)
    for stage in STAGES:
        row[f"{stage}_ms"] = round(float(np.median([r.timings_ms[stage] for r in runs])), 2)
    if check:
        start = time.perf_counter()
        people, scores = oracle_decode(heat, tags, COCO17.grouping_order, cfg)
        row["reference_port_ms"] = round((time.perf_counter() - start) * 1e3, 1)
        row["same_as_reference"] = bool(
            people.shape == runs[0].as_array().shape
            and np.allclose(people, runs[0].as_array(), atol=1e-5)
            and np.allclose(scores, runs[0].scores, atol=1e-6)
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, nargs="+", default=[5, 20])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-check", action="store_true", help="skip the comparison with the reference port")
    args = parser.parse_args()
    for n in args.people:
        print(json.dumps(bench(n, args.size, args.repeats, not args.no_check)), flush=True)


if __name__ == "__main__":
    main()
