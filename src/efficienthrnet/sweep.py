"""Phi sweeps: a spec file, one trial per (phi, rule, seed), a resumable runner and a results table.

A sweep is setup -> launch -> collect -> analyse:

- **setup**: `load_spec(path)` reads an ``experiments/*.toml`` file into a frozen `SweepSpec`;
  `expand_trials(spec)` lists its `Trial`s (phi x rule x seed), each with a stable id such as
  ``pose-reference-phi-2.5-seed0``.
- **launch**: `run_sweep(spec, out_dir, executor="local"|"ray")` runs every trial that is not
  finished yet, one after another in this process or as Ray tasks. A trial runs its *task*'s
  function, looked up in the task table `efficienthrnet.tasks` (which also says whether the task
  needs data and how its sweep is plotted). More tasks plug in through `register_task`.
- **collect**: each trial writes ``OUT/trials/<trial_id>/result.json`` atomically (temporary file
  plus ``os.replace``): status ``done`` or ``failed`` (with error and traceback), the task's result
  fields, the model config and provenance. A trial that is running has status ``running``.
  A finished trial is recognised by its result file alone, so re-running a sweep skips ``done``
  trials and runs failed or interrupted ones again, even after a SIGKILL.
- **analyse**: `load_results(out_dir)` gives one row per trial as a pandas DataFrame and writes
  ``OUT/results.csv``; `efficienthrnet.pareto` draws the fronts.

Relative paths in a spec (``output``, ``data.dir``) are relative to the current directory.

The pieces live in their own modules, all re-exported here: `efficienthrnet.sweep_spec` (the
spec), `efficienthrnet.sweep_expand` (trials), `efficienthrnet.sweep_tasks` (the task table's
hooks), `efficienthrnet.sweep_store` (records, resume, results) and
`efficienthrnet.sweep_executors` (local and Ray). This module holds `run_sweep`.
"""

from __future__ import annotations

import os
from pathlib import Path

from . import tasks
from .sweep_executors import (  # noqa: F401  (re-exported: the public sweep API)
    COMPILATION_CACHE_DIR,
    EXECUTORS,
    RAY_ADDRESS_ENV,
    _config_dict,
    _import_ray,
    _init_ray,
    _Progress,
    _run_local,
    _run_ray,
    _worker_lost_record,
    execute_trial,
    use_compilation_cache,
)
from .sweep_expand import (  # noqa: F401
    _OPTIONAL_TRIAL_FIELDS,
    Trial,
    _trains,
    _without_default_keypoints,
    design_points,
    expand_trials,
    trial_settings,
)
from .sweep_spec import (  # noqa: F401
    _REQUIRED,
    _SECTIONS,
    DATA_KINDS,
    SWEEP_TRAIN_KEYS,
    DataSpec,
    DeviceSpec,
    EvaluateSpec,
    LatencySpec,
    SweepSpec,
    _budgets,
    _check_data_keypoints,
    _check_spec,
    _phi_values,
    _section,
    _spec_from_table,
    load_spec,
)
from .sweep_store import (  # noqa: F401
    PREDICTIONS_FILE,
    PROVENANCE_COLUMNS,
    RESULT_FILE,
    RESULTS_CSV,
    SPEC_FILE,
    STATUS_DONE,
    STATUS_FAILED,
    STATUS_RUNNING,
    SUMMARY_CSV,
    TRIALS_DIR,
    _check_reusable,
    _git_commit,
    _json_default,
    _jsonable_to_table,
    load_results,
    load_sweep_spec,
    pending_trials,
    provenance,
    read_record,
    record_row,
    summarize_results,
    write_json_atomic,
)
from .sweep_tasks import TASKS, TaskFn, _latency_fields, ensure_dataset, get_task, register_task  # noqa: F401


def run_sweep(spec_or_path: SweepSpec | str | os.PathLike, out_dir: str | os.PathLike | None = None,
              executor: str = "local", progress: bool = True):
    """Run every unfinished trial of a sweep and return the results table (`load_results`).

    Args:
      spec_or_path: a `SweepSpec` or the path of an experiments/*.toml file.
      out_dir: output folder (default: the spec's ``output``); gets spec.json, trials/<id>/result.json,
        results.csv. Finished trials in it are kept, failed and interrupted ones run again.
      executor: "local" (one trial after another in this process) or "ray" (Ray tasks; a local
        cluster unless the spec's device.ray_address or RAY_ADDRESS names one).
      progress: show a progress bar and a line per finished trial on stderr.

    A failing trial is recorded as failed and the others still run; the returned table shows it.
    """
    from .files import check_output_dir

    spec = spec_or_path if isinstance(spec_or_path, SweepSpec) else load_spec(spec_or_path)
    if executor not in EXECUTORS:
        raise ValueError(f"executor {executor!r} must be one of {EXECUTORS}")
    get_task(spec.task)
    out = Path(out_dir if out_dir is not None else spec.output)
    # Everything is checked (trials expanded, finished records compared, the executor importable,
    # the dataset made) before the sweep folder is touched: a refused sweep leaves it as it was.
    check_output_dir(out, "sweep output folder")  # new, or an existing folder (a sweep to resume)
    finished, todo = pending_trials(spec, out)
    if executor == "ray" and todo:
        _import_ray()
    if tasks.get_task(spec.task).needs_data and spec.data.kind == "synthetic" and todo:
        ensure_dataset(spec.data)  # once, before trials (Ray tasks) that would race to generate it
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / SPEC_FILE, spec.to_dict())
    bar = _Progress(len(finished) + len(todo), len(finished), progress, spec.name)
    try:
        (_run_ray if executor == "ray" else _run_local)(todo, spec, out, bar)
    finally:
        bar.close()
    return load_results(out)
