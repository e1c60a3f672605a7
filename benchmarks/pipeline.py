"""Input-pipeline throughput: 512x512 training crops with targets, batch 8.

Prints one JSON line: {"benchmark": "pipeline", "images_per_s": ..., ...}.
Data: the four real COCO val2017 samples in shared/data/coco_sample (typical COCO image sizes
and people), or --data SPEC ("coco:DIR" / "synthetic:DIR").

    .venv/bin/python benchmarks/pipeline.py --num-workers 0 --seconds 10
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from efficienthrnet.data.coco import CocoKeypoints
from efficienthrnet.data.pipeline import build_train_loader

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "coco_sample"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=None, help="dataset spec; default: the shared COCO samples")
    parser.add_argument("--input-size", type=int, default=512)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()

    if args.data is None:
        data = CocoKeypoints(SAMPLE / "test_coco.json", SAMPLE, skip_images_without_people=True)
        name = "coco_sample"
    else:
        data, name = args.data, args.data
    loader = build_train_loader(data, args.input_size, args.batch_size, seed=0, num_workers=args.num_workers,
                                num_threads=args.num_threads, shard_index=0, shard_count=1)
    next(loader)  # start-up (worker processes, first decode) is not throughput
    start, batches = time.perf_counter(), 0
    while time.perf_counter() - start < args.seconds:
        next(loader)
        batches += 1
    elapsed = time.perf_counter() - start
    loader.close()
    print(json.dumps({
        "benchmark": "pipeline",
        "data": name,
        "input_size": args.input_size,
        "batch_size": args.batch_size,
        "num_workers": args.num_workers,
        "num_threads": args.num_threads,
        "batches": batches,
        "seconds": round(elapsed, 2),
        "images_per_s": round(batches * args.batch_size / elapsed, 2),
        "cpu_count": os.cpu_count(),
    }))


if __name__ == "__main__":
    main()
