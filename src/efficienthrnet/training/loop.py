"""The training loop every task shares: folder checks, exact resume, steps, metrics, checkpoints.

A task (pose in `efficienthrnet.train`, classification in `efficienthrnet.classify`) describes
itself as a `TrainingTask`: its model config, the config.json record, how to build its loader and
initial state, its jitted step, and optional hooks (extra fields per metric line, work at chosen
steps such as evaluation). `run_training` does the rest, in the same order for every task:

1. check the run folder against the request (nothing is written yet);
2. build the loader and the state, restore the latest checkpoint on resume (state, input
   position), then write config.json: a run that fails on its inputs leaves the folder as it was;
3. drop metric lines past the restored step, then step until the end (or ``stop_after_steps``),
   checking each step's loss one step late so that dispatch stays asynchronous, logging every
   ``log_every`` steps and saving every ``checkpoint_every`` steps and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
from jax.sharding import Mesh

from efficienthrnet.config import ModelConfig
from efficienthrnet.training.checkpoints import (
    checkpoint_manager,
    checkpoint_steps,
    restore_checkpoint,
    save_checkpoint,
)
from efficienthrnet.training.host_memory import release_free_heap
from efficienthrnet.training.metrics import MetricsWriter, ThroughputMeter, check_finite, truncate_metrics
from efficienthrnet.training.parallel import check_batch_divisible, replicate, shard_batch
from efficienthrnet.training.run_dir import METRICS_FILE, check_run_dir, read_run_config, write_run_record
from efficienthrnet.training.state import TrainState


@dataclass(frozen=True)
class Cadence:
    """How long a run is and how often it reports and saves (fields of every task's config)."""

    steps: int  # the schedule's length: the last step of the run
    batch_size: int  # global batch, for the throughput figures
    log_every: int
    checkpoint_every: int
    keep_checkpoints: int
    progress: bool = True


@dataclass(frozen=True)
class TrainingTask:
    """What the loop needs from a task.

    Attributes:
      model_config: the architecture, stored in every checkpoint and checked on resume.
      record: the run's config.json (written once the folder, data and checkpoint are checked).
      cadence: length, batch, logging and checkpoint cadence.
      make_loader: builds the infinite batch iterator with get_state / set_state (and close);
        called after the folder check.
      make_state: the initial (unreplicated) train state.
      step_fn: the jitted ``(state, device batch) -> (state, metrics)`` with a "loss" metric.
      batch_keys: the batch entries the step needs on the device.
      desc: progress-bar label; postfix: the metrics shown beside it.
      read_record / check_stored: read the stored config.json on resume and refuse one whose
        task settings differ (see `check_run_dir`).
      log_fields: ``step -> dict`` of extra fields in each metric line (e.g. the epoch).
      at_step: ``(step, state) -> (state, fields or None)`` after each step; fields (e.g. an
        evaluation) force a metric line at that step. The returned state is the one saved.
    """

    model_config: ModelConfig
    record: Mapping[str, Any]
    cadence: Cadence
    make_loader: Callable[[], Any]
    make_state: Callable[[], TrainState]
    step_fn: Callable
    batch_keys: tuple[str, ...]
    desc: str = "train"
    postfix: tuple[str, ...] = ("loss",)
    read_record: Callable[[Path], Mapping[str, Any]] = read_run_config
    check_stored: Callable[[Mapping[str, Any]], None] | None = None
    log_fields: Callable[[int], dict[str, Any]] | None = None
    at_step: Callable[[int, TrainState], tuple[TrainState, dict[str, Any] | None]] | None = None


def _close(loader: Any) -> None:
    if hasattr(loader, "close"):
        loader.close()  # stops prefetch threads and worker processes


def _start(task: TrainingTask, run_dir: Path, mesh: Mesh, resume: bool):
    """(loader, state, checkpoint manager) of a new or resumed run; writes config.json last."""
    check_run_dir(run_dir, task.model_config, resume, task.check_stored, task.read_record)
    loader = task.make_loader()
    manager = None
    try:
        state = replicate(task.make_state(), mesh)
        if resume and checkpoint_steps(run_dir):
            manager = checkpoint_manager(run_dir, task.cadence)
            state, data_state = restore_checkpoint(manager, state, task.model_config)
            loader.set_state(data_state)
        write_run_record(run_dir, task.record)
        if manager is None:
            manager = checkpoint_manager(run_dir, task.cadence)
    except BaseException:
        if manager is not None:
            manager.close()
        _close(loader)
        raise
    return loader, state, manager


def run_training(
    task: TrainingTask,
    run_dir: str | Path,
    mesh: Mesh,
    resume: bool = False,
    stop_after_steps: int | None = None,
) -> tuple[dict[str, Any], TrainState]:
    """Train (or resume) one run of ``task`` in ``run_dir``; returns (summary, final state).

    The summary holds run_dir, step, start_step, the last metrics, images/s, input-wait share,
    the checkpoint steps and the model name.
    """
    from tqdm.auto import tqdm

    run_dir = Path(run_dir)
    cadence = task.cadence
    check_batch_divisible(cadence.batch_size, mesh)
    loader, state, manager = _start(task, run_dir, mesh, resume)
    release_free_heap()  # what compiling the state's init left in the heap, before the step compiles
    start = int(jax.device_get(state.step))
    is_chief = jax.process_index() == 0
    if is_chief:
        truncate_metrics(run_dir / METRICS_FILE, start)

    end = cadence.steps if stop_after_steps is None else min(stop_after_steps, cadence.steps)
    writer = MetricsWriter(run_dir, enabled=is_chief)
    progress = tqdm(total=end, initial=start, desc=task.desc, unit="step",
                    disable=not (cadence.progress and is_chief))
    meter = ThroughputMeter(cadence.batch_size)
    last: dict[str, float] = {}

    def finish(step: int, metrics, extra: dict[str, Any] | None = None) -> None:
        nonlocal last
        last = check_finite(step, metrics)
        meter.step_done()
        progress.update(step - progress.n)
        progress.set_postfix({k: f"{last[k]:.4g}" for k in task.postfix if k in last})
        if step % cadence.log_every == 0 or step == end or extra is not None:
            fields = task.log_fields(step) if task.log_fields else {}
            writer.write({"step": step, **fields, **last, **meter.close_window(last=step == end), **(extra or {})})

    pending = None  # (step, device metrics) checked one step late so that dispatch stays async
    try:
        iterator = iter(loader)
        for step in range(start + 1, end + 1):
            t0 = time.perf_counter()
            try:
                host_batch = next(iterator)
            except StopIteration:
                raise RuntimeError(f"the training data ran out at step {step}; the loader must repeat") from None
            meter.waited(time.perf_counter() - t0)
            state, metrics = task.step_fn(state, shard_batch(host_batch, mesh, task.batch_keys))
            if step == start + 1:
                release_free_heap()  # the step's compile (1.2 GB at φ -4 @256 batch 8) is done
            if pending is not None:
                finish(*pending)
            pending = (step, metrics)
            extra = None
            if task.at_step is not None:
                state, extra = task.at_step(step, state)
            saving = step % cadence.checkpoint_every == 0 or step == end
            if saving or extra is not None:
                finish(step, metrics, extra)
                pending = None
            if saving:
                save_checkpoint(manager, state, task.model_config, loader.get_state())
        if pending is not None:
            finish(*pending)
        manager.wait_until_finished()
    finally:
        progress.close()
        writer.close()
        manager.close()
        _close(loader)
    summary = {
        "run_dir": str(run_dir),
        "step": int(jax.device_get(state.step)),
        "start_step": start,
        "metrics": last,
        **meter.summary(),
        "checkpoints": checkpoint_steps(run_dir),
        "model": task.model_config.name,
    }
    return summary, state
