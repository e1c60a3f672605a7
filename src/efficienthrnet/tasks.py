"""The sweep's tasks as plain data: what a trial of each task runs, reports and draws.

A sweep spec names its task (``task = "pose"``); the sweep runner and the plots look the task
up here and nowhere else. Functions are named by import path ("module:function") and imported
on first use, so importing this table imports nothing heavy, and no module registers itself
anywhere when imported. Adding a task is one entry here plus its module; a third-party task
adds its entry at run time with `register_task`.

A run function is ``fn(trial, spec, trial_dir) -> dict`` (see `efficienthrnet.sweep.register_task`);
a plotter is ``fn(run_dir) -> list of paths``.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: A function given by import path ("package.module:function") or directly.
Ref = str | Callable[..., Any]


@dataclass(frozen=True)
class Task:
    """One sweep task.

    Attributes:
      name: the spec's ``task`` value.
      run: the trial function, ``fn(trial, spec, trial_dir) -> dict`` of result fields.
      fields: the result fields every trial of the task reports (the results table's columns;
        a trial may report more).
      plotter: ``fn(run_dir) -> paths`` drawing the task's sweep; None draws the standard plots
        (accuracy against each cost when the results have it, else each cost against phi).
      needs_data: the spec must have a [data] table; a synthetic dataset is generated once
        before the trials run.
      trains: the result depends on the spec's [data], [train] and [evaluate] tables, so a
        finished trial is reused only while they are unchanged (False: a task that only profiles).
      check_train: ``fn(train_table, where)`` refusing a bad [train] table when the spec loads;
        None leaves the check to the trial.
      compile_ahead: ``fn(trial, spec)`` compiling in this process what a trial of the task
        compiles before it starts work (a pose trial: its state init and train step), so that the
        local executor can compile the next design on a background thread while one trains
        (``[device] compile_ahead``); None: each trial compiles its own.
      cost_estimate: ``fn(trial, spec) -> float``, a trial's work in any unit shared by the
        task's trials, so that worker processes and Ray take the dearest designs first (the
        longest-processing-time rule: no worker is left idle while one runs a big design last);
        None keeps the spec's order.
    """

    name: str
    run: Ref
    fields: tuple[str, ...] = ()
    plotter: Ref | None = None
    needs_data: bool = False
    trains: bool = True
    check_train: Ref | None = None
    compile_ahead: Ref | None = None
    cost_estimate: Ref | None = None


_COSTS = ("params", "macs", "flops")

TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        Task("profile", "efficienthrnet.trials:run_profile_trial",
             fields=("input_size", *_COSTS, "latency_ms", "fps"), trains=False),
        Task("pose", "efficienthrnet.trials:run_pose_trial",
             fields=("AP", *_COSTS, "train_steps", "train_time_s", "eval_time_s", "final_loss", "latency_ms"),
             needs_data=True, check_train="efficienthrnet.trials:check_pose_train_table",
             compile_ahead="efficienthrnet.trials:compile_pose_trial",
             cost_estimate="efficienthrnet.trials:estimate_pose_trial_cost"),
        Task("classify", "efficienthrnet.trials:run_classify_trial",
             fields=("top1", "top5", *_COSTS, "resolution", "num_classes", "train_steps", "final_loss"),
             plotter="efficienthrnet.trials:plot_classify_sweep"),
    )
}


def resolve(ref: Ref) -> Callable[..., Any]:
    """The function an entry names: a callable as is, "module:function" imported now."""
    if callable(ref):
        return ref
    module, sep, attr = str(ref).partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"task function {ref!r} must be a callable or an import path 'package.module:function'")
    found = getattr(importlib.import_module(module), attr, None)
    if not callable(found):
        raise ValueError(f"task function {ref!r}: module {module!r} has no function {attr!r}")
    return found


def get_task(name: str) -> Task:
    """The table entry of a task; unknown names are refused with the list of known ones."""
    if name not in TASKS:
        raise ValueError(f"unknown sweep task {name!r}; registered tasks: {sorted(TASKS)}. "
                         f"Register a new one with efficienthrnet.sweep.register_task(name, fn)")
    return TASKS[name]


def run_function(name: str) -> Callable[..., Any]:
    """The trial function of a task, imported on first use."""
    return resolve(get_task(name).run)


def _optional_function(name: str, field: str) -> Callable[..., Any] | None:
    """A task's optional function ``field`` (imported on first use), or None when it has none."""
    ref = getattr(TASKS.get(name), field, None)
    return None if ref is None else resolve(ref)


def compile_ahead_function(name: str) -> Callable[..., Any] | None:
    """The task's compile-ahead function, or None when it has none."""
    return _optional_function(name, "compile_ahead")


def cost_estimate_function(name: str) -> Callable[..., Any] | None:
    """The task's cost estimate, or None when it has none."""
    return _optional_function(name, "cost_estimate")


def plotter(name: str) -> Callable[..., Any] | None:
    """The task's own plotter, or None for the standard plots (also for tasks not in the table)."""
    return _optional_function(name, "plotter")


def register_task(name: str, run: Ref, *, replace: bool = False, **settings: Any) -> Task:
    """Add (or with ``replace=True`` change) a table entry; ``settings`` are further `Task` fields.

    Registering the same function again under its name is allowed (a module imported twice).
    """
    if not isinstance(run, str) and not callable(run):
        raise ValueError(f"task {name!r}: {run!r} is not callable")
    unknown = set(settings) - {f.name for f in dataclasses.fields(Task)} - {"name", "run"}
    if unknown:
        raise ValueError(f"task {name!r}: unknown setting(s) {sorted(unknown)}; "
                         f"known: {[f.name for f in dataclasses.fields(Task)][2:]}")
    old = TASKS.get(name)
    if old is not None and not replace and old.run is not run:
        raise ValueError(f"task {name!r} is already registered ({old.run!r}); pass replace=True to override")
    TASKS[name] = Task(name, run, **settings)
    return TASKS[name]


def register_plotter(name: str, fn: Ref) -> None:
    """Draw sweeps of task ``name`` with ``fn(run_dir)`` instead of the standard plots."""
    TASKS[name] = dataclasses.replace(get_task(name), plotter=fn)
