"""What a run reports while it trains: metric lines, the non-finite guard, throughput."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax

from efficienthrnet.training.run_dir import METRICS_FILE


def truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop metric lines written after the checkpoint so that no step appears twice."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


class MetricsWriter:
    """JSON lines in RUN_DIR/metrics.jsonl, mirrored to TensorBoard when tensorboardX is installed."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self._tb = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step":
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


def check_finite(step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Host copy of a step's metrics; stops the run on a non-finite loss, naming the step."""
    values = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
    if not math.isfinite(values["loss"]):
        parts = ", ".join(f"{k}={v:.6g}" for k, v in values.items() if k != "loss")
        raise FloatingPointError(
            f"non-finite loss {values['loss']} at step {step} ({parts}); lower the learning rate, "
            f"use compute_dtype='float32', or check the data of that step; the last checkpoint is intact"
        )
    return values


class ThroughputMeter:
    """Images/s and the share of wall time spent waiting for input, per logging window and
    over the run. The run's figures leave out the first window, which holds the compilation,
    unless it is the only one."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.windows = 0
        self.total = {"time": 0.0, "wait": 0.0, "images": 0}
        self._open_window()

    def _open_window(self) -> None:
        self.start, self.wait, self.images = time.perf_counter(), 0.0, 0

    def waited(self, seconds: float) -> None:
        self.wait += seconds

    def step_done(self) -> None:
        self.images += self.batch_size

    def close_window(self, last: bool) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        if self.windows > 0 or last:
            self.total["time"] += elapsed
            self.total["wait"] += self.wait
            self.total["images"] += self.images
        self.windows += 1
        figures = {"images_per_s": self.images / elapsed, "input_wait_share": self.wait / elapsed}
        self._open_window()
        return figures

    def summary(self) -> dict[str, float | None]:
        t = self.total["time"]
        return {
            "images_per_s": self.total["images"] / t if t else None,
            "input_wait_share": self.total["wait"] / t if t else None,
        }
