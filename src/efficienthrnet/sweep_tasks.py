"""The sweep's side of the task table, and the helpers the built-in trial functions share.

`register_task` / `get_task` add and look up trial functions in `efficienthrnet.tasks`;
`ensure_dataset` makes a spec's synthetic dataset on first use; `_latency_fields` times a
trial's network as the spec's [latency] table asks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from . import tasks
from .sweep_expand import Trial
from .sweep_spec import DataSpec, SweepSpec

TaskFn = Callable[[Trial, SweepSpec, Path], Mapping[str, Any]]
#: The task table (name -> `efficienthrnet.tasks.Task`), shared with `efficienthrnet.tasks`.
TASKS = tasks.TASKS


def register_task(name: str, fn: TaskFn, *, replace: bool = False, **settings: Any) -> None:
    """Make ``fn`` runnable as ``task = "<name>"`` in sweep specs (an entry of the task table).

    ``fn(trial, spec, trial_dir) -> dict`` runs one trial: ``trial`` gives task, rule, phi and
    seed; ``spec`` the whole `SweepSpec` (task-specific settings go in its ``options`` table);
    ``trial_dir`` is the trial's own folder for checkpoints and files (resume from it if a
    previous attempt left something there). It returns the result fields: scalars become columns
    of the results table (use the names ``params``, ``macs``, ``flops``, ``latency_ms``, ``AP``,
    ... where they apply, so the Pareto plots find them); dicts and lists are kept in
    result.json only. Raising marks the trial failed, with the error and traceback recorded.
    Under the Ray executor the function is pickled to the workers, so define it at module level.
    ``settings`` are further `efficienthrnet.tasks.Task` fields (fields, plotter, needs_data, ...).
    """
    tasks.register_task(name, fn, replace=replace, **settings)


def get_task(name: str) -> TaskFn:
    """The trial function of a task in the table (imported on first use); unknown names are refused."""
    return tasks.run_function(name)


def _latency_fields(trial: Trial, spec: SweepSpec, cfg, variables: Any = None) -> dict[str, Any]:
    """Median forward latency (ms) and FPS on this process's default device, if the spec asks."""
    if not spec.latency.wants(trial.phi, trial.rule):
        return {"latency_ms": None, "fps": None}
    from .complexity import measure_latency

    lat = spec.latency
    timing = measure_latency(cfg, input_size=lat.input_size, batch=lat.batch, warmup=lat.warmup,
                             repeats=lat.repeats, seed=trial.seed, variables=variables)
    median = float(timing["median_ms"])
    out = {"latency_ms": median, "fps": 1e3 * lat.batch / median, "latency_input_size": timing["input_size"][0],
           "latency_backend": timing["backend"], "latency_detail": timing}
    if lat.backend == "onnxruntime":
        from .export import compare_latency

        ort = compare_latency(cfg, lat.input_size, lat.batch, lat.warmup, lat.repeats, trial.seed, variables,
                              backends=("onnxruntime",))
        ort_median = float(ort["onnxruntime"]["median_ms"])
        out.update(latency_onnxruntime_ms=ort_median, fps_onnxruntime=1e3 * lat.batch / ort_median,
                   latency_onnxruntime_detail=ort)
    return out


def ensure_dataset(data: DataSpec) -> str:
    """The dataset spec string for ``data``, generating the synthetic dataset if it is not there."""
    root = Path(data.dir)
    if data.kind == "synthetic":
        marker = root / "annotations" / "person_keypoints_val.json"
        if not marker.is_file():
            from .data.synthetic import make_synthetic_dataset

            if not data.synthetic:
                raise ValueError(f"synthetic dataset {root} does not exist and the spec's [data.synthetic] "
                                 f"table (num_images, image_size, seed) is empty: add it to generate one")
            make_synthetic_dataset(root, schema=data.keypoints, **dict(data.synthetic))
    elif not (root / "annotations").is_dir():
        raise FileNotFoundError(f"COCO dataset {root} has no annotations/ folder; point data.dir at the COCO 2017 "
                                f"root (annotations/person_keypoints_*2017.json, train2017/, val2017/)")
    return data.spec_string
