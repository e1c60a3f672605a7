"""Running a sweep's trials: one trial with its record (`execute_trial`), and the executors.

``local`` runs trials one after another in this process (compiling the next design's programs on
a background thread meanwhile, `CompileAhead`), or with ``[device] workers = N`` (or "auto") in N
worker processes whose XLA thread pools each get a share of the CPU cores, dearest design first
(`longest_first`); ``ray`` runs them as Ray tasks, submitted in the same order. All report to a
progress bar. `use_compilation_cache` points JAX's persistent cache where the spec says.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import logging
import os
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .sweep_expand import Trial, trial_settings
from .sweep_spec import SweepSpec
from .sweep_store import (
    RESULT_FILE,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_RUNNING,
    TRIALS_DIR,
    provenance,
    read_record,
    set_compute_cores,
    write_json_atomic,
)
from .sweep_tasks import TaskFn, get_task
from .tasks import compile_ahead_function, cost_estimate_function

_LOG = logging.getLogger(__name__)

EXECUTORS = ("local", "ray")
#: Environment variable naming a Ray cluster to join when the spec names none.
RAY_ADDRESS_ENV = "RAY_ADDRESS"


def _config_dict(trial: Trial) -> dict[str, Any] | None:
    try:
        return trial.model_config().to_dict()
    except Exception:  # the task itself reports a bad phi/rule with its traceback
        return None


COMPILATION_CACHE_DIR = ".jax_cache"


def use_compilation_cache(spec: SweepSpec, out_dir: str | os.PathLike) -> str | None:
    """Point JAX's persistent compilation cache where the spec says; returns the folder in use (None: off)."""
    import jax

    setting = spec.device.compilation_cache
    if setting is False:
        return None
    current = jax.config.jax_compilation_cache_dir
    if current:
        return current
    path = Path(out_dir) / COMPILATION_CACHE_DIR if setting is True else Path(setting).expanduser()
    jax.config.update("jax_compilation_cache_dir", str(path))
    return str(path)


def execute_trial(trial: Trial, spec: SweepSpec, out_dir: str | os.PathLike,
                  task_fn: TaskFn | None = None) -> dict[str, Any]:
    """Run one trial and write its record; never raises for a failure of the task itself.

    The record goes to OUT/trials/<trial_id>/result.json: first with status "running" (so an
    interrupted trial is visible), then "done" with the task's fields or "failed" with the error.
    """
    task_fn = task_fn or get_task(trial.task)
    use_compilation_cache(spec, out_dir)  # here, so that Ray workers use it too
    trial_dir = Path(out_dir) / TRIALS_DIR / trial.trial_id
    trial_dir.mkdir(parents=True, exist_ok=True)
    previous = read_record(trial_dir)
    record: dict[str, Any] = {
        "trial_id": trial.trial_id,
        "trial": dataclasses.asdict(trial),
        "sweep": spec.name,
        "settings": trial_settings(trial, spec),
        "device": dataclasses.asdict(spec.device),
        "config": _config_dict(trial),
        "attempt": (previous or {}).get("attempt", 0) + 1,
        "status": STATUS_RUNNING,
        "started_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "provenance": provenance(),
    }
    write_json_atomic(trial_dir / RESULT_FILE, record)
    start = time.perf_counter()
    try:
        result = dict(task_fn(trial, spec, trial_dir))
        record.update(status=STATUS_DONE, result=result, error=None, traceback=None)
    except Exception as err:  # one failing trial must not stop the sweep: record it and go on
        record.update(status=STATUS_FAILED, result={}, error=f"{type(err).__name__}: {err}",
                      traceback=traceback.format_exc())
    record["duration_s"] = time.perf_counter() - start
    record["finished_at"] = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    write_json_atomic(trial_dir / RESULT_FILE, record)
    return record


class _Progress:
    """Trials done / running / failed as a tqdm bar plus one log line per finished trial."""

    def __init__(self, total: int, already: int, enabled: bool, name: str):
        from tqdm.auto import tqdm

        self.enabled = enabled
        self.counts = {"done": already, "running": 0, "failed": 0}
        self.bar = tqdm(total=total, initial=already, desc=f"sweep {name}", unit="trial", disable=not enabled,
                        file=sys.stderr)
        self._show()

    def _show(self) -> None:
        self.bar.set_postfix(self.counts, refresh=True)

    def started(self, n: int = 1) -> None:
        self.counts["running"] += n
        self._show()

    def finished(self, record: dict[str, Any]) -> None:
        self.counts["running"] -= 1
        ok = record["status"] == STATUS_DONE
        self.counts["done" if ok else "failed"] += 1
        if self.enabled:
            line = f"{record['trial_id']}: {record['status']} in {record['duration_s']:.1f} s"
            self.bar.write(line if ok else f"{line}: {record['error']}", file=sys.stderr)
        self.bar.update(1)
        self._show()

    def close(self) -> None:
        self.bar.close()


def _run_local(todo: Sequence[Trial], spec: SweepSpec, out_dir: Path, progress: _Progress) -> None:
    if worker_count(spec.device.workers, len(design_groups(todo))) > 1:
        _run_workers(todo, spec, out_dir, progress)
        return
    ahead = CompileAhead(spec, todo) if spec.device.compile_ahead else None
    try:
        for i, trial in enumerate(todo):
            if ahead is not None:
                ahead.before(i)
            progress.started()
            progress.finished(execute_trial(trial, spec, out_dir))
    finally:
        if ahead is not None:
            ahead.close()


def design_of(trial: Trial) -> Trial:
    """The trial with its seed cleared: trials of one design share their compiled programs."""
    return dataclasses.replace(trial, seed=0)


class CompileAhead:
    """Compiles the next design's first programs on one background thread while trials run.

    Compiling is mostly one thread, and a small trial leaves cores idle, so the next design's
    compile (`tasks.Task.compile_ahead`) overlaps the current design: its first trial (which
    compiles its own programs on the sweep's thread meanwhile) and its other seeds. One design
    ahead at most, so compiled programs do not pile up. Before a trial starts, the compile of its
    own design, if one is under way, is waited for (never compiled twice); one that failed is only
    logged: the trial then compiles, and reports, by itself.
    """

    def __init__(self, spec: SweepSpec, todo: Sequence[Trial]):
        from concurrent.futures import ThreadPoolExecutor

        self.spec = spec
        self.todo = list(todo)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="compile-ahead")
        self.futures: dict[Trial, Any] = {}
        self.started: set[Trial] = set()  # designs whose trials ran (or run) here: compiled already

    def before(self, index: int) -> None:
        """Called as ``todo[index]`` is about to run."""
        design = design_of(self.todo[index])
        self.wait(design)
        self.started.add(design)
        upcoming = next((t for t in self.todo[index + 1:] if design_of(t) != design), None)
        if upcoming is None:
            return
        key = design_of(upcoming)
        fn = compile_ahead_function(upcoming.task)
        if fn is not None and key not in self.started and key not in self.futures:
            self.futures[key] = self.pool.submit(fn, upcoming, self.spec)

    def wait(self, design: Trial) -> None:
        future = self.futures.pop(design, None)
        if future is None:
            return
        try:
            future.result()
        except Exception as err:  # the trial itself compiles and reports a real problem
            _LOG.warning("compiling %s ahead failed (%s: %s); its trial compiles by itself",
                         design.trial_id, type(err).__name__, err)

    def close(self) -> None:
        for design in list(self.futures):
            self.wait(design)
        self.pool.shutdown(wait=True)


def design_groups(trials: Sequence[Trial]) -> list[list[Trial]]:
    """Trials grouped by everything but the seed, in first-seen order: one group, one compiled step."""
    groups: dict[Trial, list[Trial]] = {}
    for trial in trials:
        groups.setdefault(design_of(trial), []).append(trial)
    return list(groups.values())


def longest_first(groups: Sequence[Sequence[Trial]], spec: SweepSpec) -> list[list[Trial]]:
    """Design groups, dearest first by the task's `cost_estimate` (spec order among equals, and
    for tasks without one). Handing the dearest design to the first free worker is the
    longest-processing-time rule: the last design to start is a cheap one, so no worker idles
    long while another finishes (the demo's first two-worker run left one idle for 313 s of 1135)."""
    estimate = cost_estimate_function(spec.task)
    groups = [list(group) for group in groups]
    if estimate is None:
        return groups
    costs = [sum(estimate(trial, spec) for trial in group) for group in groups]
    order = sorted(range(len(groups)), key=lambda i: -costs[i])  # stable: ties keep the spec's order
    return [groups[i] for i in order]


def worker_count(setting: int | str, groups: int, cores: Sequence[int] | None = None) -> int:
    """The local worker processes to start: ``setting``, or for "auto" one per CPU core this process
    may use, but no more than there are design groups to run (one group never spans workers)."""
    if setting != "auto":
        return int(setting)
    if cores is None:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else range(os.cpu_count() or 1)
    return max(1, min(len(cores), groups))


def core_sets(workers: int, cores: Sequence[int] | None = None) -> list[tuple[int, ...]]:
    """Split the CPU cores (default: those this process may use) into ``workers`` near-equal sets."""
    if cores is None:
        if not hasattr(os, "sched_getaffinity"):
            return [()] * workers  # no affinity on this OS: workers share every core
        cores = os.sched_getaffinity(0)
    cores = sorted(cores)
    if workers > len(cores):
        raise ValueError(f"device.workers = {workers} but this process may use only {len(cores)} CPU core(s) "
                         f"{cores}; set workers to at most {len(cores)}")
    size, extra = divmod(len(cores), workers)
    bounds = [i * size + min(i, extra) for i in range(workers + 1)]
    return [tuple(cores[a:b]) for a, b in zip(bounds, bounds[1:])]


def _start_worker(slots) -> None:
    """Worker start-up: size XLA's CPU thread pool to one core set, then run on every core.

    JAX's CPU client sizes its thread pool from the process's affinity when it starts, so the
    worker takes its set, starts the backend, and gives the set back: its compute stays at its
    share, while its host-side work (input pipeline, Python, compiling) may use a core the other
    workers leave idle. On the 2-core VM (φ -2.46 @96, batch 4, `train_step.py`, 2026-12-07), a
    process whose pool was sized for one core and then unpinned reached its first step in 65-67 s
    against 76-97 s pinned throughout, and trained at 12.9-14.3 against 10.7-11.3 images/s, with
    the pinned run's losses (so the same one-thread pool)."""
    cores = slots.get()
    if not cores:
        return
    everything = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    import jax

    jax.devices()  # the CPU client and its thread pool start here, at this worker's share
    os.sched_setaffinity(0, everything)
    set_compute_cores(len(cores))


def _run_group(trials: Sequence[Trial], spec: SweepSpec, out_dir: str, task_fn: TaskFn) -> list[dict[str, Any]]:
    return [execute_trial(trial, spec, out_dir, task_fn) for trial in trials]


def _run_workers(todo: Sequence[Trial], spec: SweepSpec, out_dir: Path, progress: _Progress) -> None:
    """Design groups, dearest first, on a pool of worker processes, each computing on its share of the cores.

    Processes are spawned (not forked: this process may have started JAX). A worker that dies
    (e.g. out of memory) fails its group's trials with that error; a rerun resumes them.
    """
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor, as_completed

    groups = longest_first(design_groups(todo), spec)
    sets = core_sets(worker_count(spec.device.workers, len(groups)))
    context = multiprocessing.get_context("spawn")
    slots = context.Queue()
    for cores in sets:
        slots.put(cores)
    out = str(out_dir.resolve())
    with ProcessPoolExecutor(max_workers=len(sets), mp_context=context, initializer=_start_worker,
                             initargs=(slots,)) as pool:
        futures = {pool.submit(_run_group, group, spec, out, get_task(group[0].task)): group
                   for group in groups}
        progress.started(len(todo))  # submitted, as with Ray
        for future in as_completed(futures):
            group = futures[future]
            try:
                records = future.result()
            except Exception as err:  # the worker died: record it like a failure
                records = [_worker_lost_record(trial, spec, out_dir, err, "local") for trial in group]
            for record in records:
                progress.finished(record)


def _init_ray(spec: SweepSpec):
    import ray

    if not ray.is_initialized():
        address = spec.device.ray_address or os.environ.get(RAY_ADDRESS_ENV)
        # No address: start a local cluster in this process; the dashboard only costs start-up time.
        ray.init(address=address or None, include_dashboard=False, log_to_driver=True)
    return ray


def _run_ray(todo: Sequence[Trial], spec: SweepSpec, out_dir: Path, progress: _Progress) -> None:
    """Each trial a Ray task asking for the spec's CPUs/GPUs; workers write their own records,
    so the output directory must be on a filesystem that every node sees."""
    try:
        ray = _init_ray(spec)
    except ImportError:
        raise ImportError("executor 'ray' needs Ray: pip install 'efficienthrnet[ray]'") from None
    remote = ray.remote(num_cpus=spec.device.cpus_per_trial, num_gpus=spec.device.gpus_per_trial,
                        max_retries=0)(execute_trial)
    ordered = [trial for group in longest_first(design_groups(todo), spec) for trial in group]
    refs = {remote.remote(trial, spec, str(out_dir.resolve()), get_task(trial.task)): trial for trial in ordered}
    progress.started(len(refs))
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            trial = refs.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as err:  # the worker died (e.g. out of memory): record it like a failure
                record = _worker_lost_record(trial, spec, out_dir, err, "Ray")
            progress.finished(record)


def _worker_lost_record(trial: Trial, spec: SweepSpec, out_dir: Path, err: Exception,
                        executor: str) -> dict[str, Any]:
    trial_dir = out_dir / TRIALS_DIR / trial.trial_id
    record = read_record(trial_dir) or {"trial_id": trial.trial_id, "trial": dataclasses.asdict(trial),
                                        "settings": trial_settings(trial, spec), "attempt": 1}
    record.update(status=STATUS_FAILED, error=f"{executor} worker lost: {type(err).__name__}: {err}",
                  traceback="".join(traceback.format_exception(err)), result={}, duration_s=0.0)
    write_json_atomic(trial_dir / RESULT_FILE, record)
    return record


def _import_ray() -> None:
    """Fail before the sweep starts, not in the runner, when the 'ray' extra is missing."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ImportError("executor 'ray' needs Ray: pip install 'efficienthrnet[ray]'") from None
