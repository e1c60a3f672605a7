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
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from . import tasks

RESULT_FILE = "result.json"
TRIALS_DIR = "trials"
SPEC_FILE = "spec.json"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"  # one row per design: seed means, std and bootstrap CIs
PREDICTIONS_FILE = "predictions.json"  # COCO results list of a pose trial
STATUS_DONE, STATUS_FAILED, STATUS_RUNNING = "done", "failed", "running"
EXECUTORS = ("local", "ray")
DATA_KINDS = ("synthetic", "coco")
#: Environment variable naming a Ray cluster to join when the spec names none.
RAY_ADDRESS_ENV = "RAY_ADDRESS"

# ------------------------------------------------------------------------------------- the spec


@dataclass(frozen=True)
class DataSpec:
    """Which dataset a pose trial trains and evaluates on.

    Attributes:
      kind: "synthetic" (generated on first use into ``dir``) or "coco" (official layout in ``dir``).
      dir: dataset root; relative paths are relative to the current directory.
      synthetic: keyword arguments of `efficienthrnet.data.synthetic.make_synthetic_dataset`
        (num_images, image_size, seed, val_fraction) used when ``dir`` holds no dataset yet.
      keypoints: the registered keypoint schema of the data and the models ("coco17", "crowdpose").
    """

    kind: str
    dir: str
    synthetic: Mapping[str, Any] = field(default_factory=dict)
    keypoints: str = "coco17"

    @property
    def spec_string(self) -> str:
        """The dataset spec string that the data, train and evaluate modules take."""
        return f"{self.kind}:{self.dir}"


@dataclass(frozen=True)
class EvaluateSpec:
    """How a pose trial is evaluated: split ("val" / "train"), first ``limit`` images, flip test."""

    split: str = "val"
    limit: int | None = None
    flip: bool = True


@dataclass(frozen=True)
class LatencySpec:
    """Forward-pass latency measurement of each trial's network, on the device the trial runs on.

    Attributes:
      enabled: measure at all.
      phi: measure only for these phi values (None: every trial). Compiling a network for each of
        dozens of phi costs seconds each, so cheap sweeps time a subset.
      rules: measure only for trials of these scaling rules, named as in the spec's ``rules``
        (None: every rule).
      input_size: square input to time at (None: the trial's own input size).
      batch, warmup, repeats: passed to `efficienthrnet.complexity.measure_latency` (median reported).
      backend: "jax" (the jitted forward) or "onnxruntime": also time the trial's ONNX export in
        onnxruntime on the CPU (`efficienthrnet.export`, needs the 'export' extra), reported as
        ``latency_onnxruntime_ms`` / ``fps_onnxruntime`` beside ``latency_ms`` / ``fps``.
    """

    enabled: bool = True
    phi: tuple[float, ...] | None = None
    rules: tuple[str, ...] | None = None
    input_size: int | None = None
    batch: int = 1
    warmup: int = 3
    repeats: int = 10
    backend: str = "jax"

    def wants(self, phi: float, rule: str) -> bool:
        """Whether the trial of this phi and rule (as the spec names it) is timed."""
        phi_ok = self.phi is None or any(math.isclose(phi, p, abs_tol=1e-9) for p in self.phi)
        return self.enabled and phi_ok and (self.rules is None or rule in self.rules)


@dataclass(frozen=True)
class DeviceSpec:
    """Where trials run and what the device draws.

    Attributes:
      power_watts: the device's power draw in watts; when set, the results table gets the paper's
        accuracy-efficiency figure AP x FPS / W (Table 5).
      cpus_per_trial, gpus_per_trial: resources each Ray task asks for (``num_cpus``, ``num_gpus``).
      ray_address: Ray cluster to join; None: the RAY_ADDRESS environment variable, else a new
        local cluster.
      compilation_cache: JAX's persistent compilation cache, so that a resumed or repeated sweep
        (and every Ray worker) reuses compiled steps: True keeps it in OUT/.jax_cache, a path puts it
        there (e.g. one cache for many sweeps), False turns it off. A cache the process already
        uses (``jax_compilation_cache_dir`` set by the user) is left as it is.
    """

    power_watts: float | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    compilation_cache: bool | str = True


@dataclass(frozen=True)
class SweepSpec:
    """A sweep: which phis and rules, which task, data, budget and outputs (one experiments/*.toml).

    ``train`` holds `efficienthrnet.train.TrainConfig` fields (the trial's seed replaces ``seed``);
    ``options`` holds task-specific settings that the runner passes through untouched.
    """

    name: str
    task: str
    rules: tuple[str, ...]
    output: str
    phi: tuple[float, ...] = ()
    budgets_macs: tuple[float, ...] = ()
    seeds: tuple[int, ...] = (0,)
    description: str = ""
    data: DataSpec | None = None
    train: Mapping[str, Any] = field(default_factory=dict)
    evaluate: EvaluateSpec = field(default_factory=EvaluateSpec)
    latency: LatencySpec = field(default_factory=LatencySpec)
    device: DeviceSpec = field(default_factory=DeviceSpec)
    options: Mapping[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))

    @classmethod
    def from_dict(cls, table: Mapping[str, Any], source: str = "<memory>") -> "SweepSpec":
        return _spec_from_table(dict(table), source)

    @property
    def resolution_scale(self) -> float | None:
        """The proxy scale of each rule's own input size (``[train] resolution_scale``), or None."""
        return self.train.get("resolution_scale")

    @property
    def step_budgets(self) -> tuple[int | None, ...]:
        """The training budgets a sweep compares (``[train] steps = [150, 500]``); (None,) for one budget."""
        steps = self.train.get("steps")
        return tuple(steps) if isinstance(steps, (list, tuple)) else (None,)

    def replace(self, **changes) -> "SweepSpec":
        """A copy with some fields changed (e.g. ``output`` or ``data``)."""
        return dataclasses.replace(self, **changes)


_REQUIRED = ("name", "task", "rules", "output")  # and one of phi / budgets_macs
_SECTIONS = {"data": DataSpec, "evaluate": EvaluateSpec, "latency": LatencySpec, "device": DeviceSpec}


def _phi_values(value: Any, where: str) -> tuple[float, ...]:
    """A list of phis, or a {start, stop, step} table (`scaling.phi_range`: stop included when hit)."""
    from .scaling import phi_range

    if isinstance(value, Mapping):
        keys = {"start", "stop", "step"}
        if set(value) != keys:
            raise ValueError(f"{where}: phi range needs exactly the keys {sorted(keys)}, got {sorted(value)}")
        try:  # the CLI's start:stop:step follows the same rule
            return phi_range(value["start"], value["stop"], value["step"])
        except ValueError as err:
            raise ValueError(f"{where}: phi = {dict(value)}: {err}") from None
    if isinstance(value, (list, tuple)) and value:
        if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in value):
            raise ValueError(f"{where}: phi list {value!r} must hold numbers only")
        return tuple(float(v) + 0.0 for v in value)  # + 0.0 turns -0.0 into 0.0
    raise ValueError(f"{where}: phi must be a non-empty list or a table {{start, stop, step}}, got {value!r}")


def _budgets(value: Any, where: str) -> tuple[float, ...]:
    """MACs budgets: a non-empty list of positive numbers, e.g. [2e8, 5e8]."""
    if not isinstance(value, (list, tuple)) or not value or any(
            isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0 for v in value):
        raise ValueError(f"{where}: budgets_macs must be a non-empty list of positive MACs counts, got {value!r}; "
                         f"e.g. budgets_macs = [2e8, 5e8]")
    return tuple(float(v) for v in value)


def _section(cls, table: Any, name: str, where: str):
    if not isinstance(table, Mapping):
        raise ValueError(f"{where}: [{name}] must be a table, got {table!r}")
    known = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(f'{name}.{u}' for u in unknown)}; "
                         f"known: {sorted(known)}")
    missing = [n for n, f in known.items()
               if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and n not in table]
    if missing:
        raise ValueError(f"{where}: missing field(s) {', '.join(f'{name}.{m}' for m in missing)}")
    values = {k: (tuple(v) if isinstance(v, list) else v) for k, v in table.items()}
    return cls(**values)


def _spec_from_table(table: dict[str, Any], source: str) -> SweepSpec:
    where = f"sweep spec {source}"
    known = {f.name for f in dataclasses.fields(SweepSpec)} - {"source"}
    unknown = sorted(set(table) - known)
    missing = [k for k in _REQUIRED if k not in table]
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {unknown}; known: {sorted(known)}")
    if missing:
        raise ValueError(f"{where}: missing field(s) {missing}")
    values: dict[str, Any] = {"source": source}
    # A spec written back (spec.json) carries the unused one of phi / budgets_macs as an empty list.
    table = {k: v for k, v in table.items() if not (k in ("phi", "budgets_macs") and v in ([], ()))}
    for key, value in table.items():
        if key == "phi":
            values[key] = _phi_values(value, where)
        elif key == "budgets_macs":
            values[key] = _budgets(value, where)
        elif key in ("rules", "seeds"):
            if not isinstance(value, list) or not value:
                raise ValueError(f"{where}: {key} must be a non-empty list, got {value!r}")
            values[key] = tuple(value)
        elif key in _SECTIONS:
            values[key] = _section(_SECTIONS[key], value, key, where)
        elif key in ("train", "options"):
            if not isinstance(value, Mapping):
                raise ValueError(f"{where}: [{key}] must be a table, got {value!r}")
            values[key] = dict(value)
        else:
            values[key] = value
    spec = SweepSpec(**values)
    _check_spec(spec, where)
    return spec


def _check_spec(spec: SweepSpec, where: str) -> None:
    if bool(spec.phi) == bool(spec.budgets_macs):
        raise ValueError(f"{where}: give exactly one of phi (a list or {{start, stop, step}}) and budgets_macs "
                         f"(MACs budgets; each rule then gets its own phi per budget)")
    for name in ("name", "task", "output"):
        if not isinstance(getattr(spec, name), str) or not getattr(spec, name):
            raise ValueError(f"{where}: {name} must be a non-empty string, got {getattr(spec, name)!r}")
    if any(isinstance(s, bool) or not isinstance(s, int) for s in spec.seeds):
        raise ValueError(f"{where}: seeds {spec.seeds!r} must be integers")
    if any(not isinstance(r, str) or not r for r in spec.rules):
        raise ValueError(f"{where}: rules {spec.rules!r} must be rule names or paths to rule files")
    if spec.data is not None and spec.data.kind not in DATA_KINDS:
        raise ValueError(f"{where}: data.kind {spec.data.kind!r} must be one of {DATA_KINDS}")
    if spec.data is not None:
        _check_data_keypoints(spec.data, where)
    if spec.evaluate.split not in ("train", "val"):
        raise ValueError(f"{where}: evaluate.split {spec.evaluate.split!r} must be 'train' or 'val'")
    if spec.evaluate.limit is not None and spec.evaluate.limit < 1:
        raise ValueError(f"{where}: evaluate.limit {spec.evaluate.limit!r} must be >= 1 (or left out for all)")
    if spec.latency.backend not in ("jax", "onnxruntime"):
        raise ValueError(f"{where}: latency.backend {spec.latency.backend!r} must be 'jax' or 'onnxruntime'")
    timed_rules = spec.latency.rules
    if timed_rules is not None and not set(timed_rules) <= set(spec.rules):
        raise ValueError(f"{where}: latency.rules {list(timed_rules)} names rule(s) "
                         f"{sorted(set(timed_rules) - set(spec.rules))} that the sweep does not run; "
                         f"choose from rules = {list(spec.rules)}")
    cache = spec.device.compilation_cache
    if not isinstance(cache, bool) and not (isinstance(cache, str) and cache):
        raise ValueError(f"{where}: device.compilation_cache {cache!r} must be true, false or a folder path")
    power = spec.device.power_watts
    if power is not None and not power > 0:
        raise ValueError(f"{where}: device.power_watts {power!r} must be > 0 (or left out)")
    task = tasks.TASKS.get(spec.task)  # an unknown task is refused when the sweep runs (plug-ins register late)
    if task is not None:
        if task.needs_data and spec.data is None:
            raise ValueError(f"{where}: task {spec.task!r} needs a [data] table (kind, dir)")
        if task.check_train is not None:
            tasks.resolve(task.check_train)(spec.train, where)


#: [train] keys the sweep resolves per trial before the rest becomes a TrainConfig.
SWEEP_TRAIN_KEYS = ("seed", "resolution_scale")


def _check_data_keypoints(data: DataSpec, where: str) -> None:
    from .keypoints import get_schema

    try:
        get_schema(data.keypoints)
    except ValueError as err:
        raise ValueError(f"{where}: data.keypoints: {err}") from None
    if "schema" in data.synthetic:
        raise ValueError(f"{where}: data.synthetic.schema is not a field; set the schema with [data] keypoints")


def load_spec(path: str | os.PathLike) -> SweepSpec:
    """Read and validate a sweep spec TOML file; errors name the file and the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} not found; shipped specs are in experiments/*.toml")
    try:
        with open(path, "rb") as f:
            table = tomllib.load(f)
    except tomllib.TOMLDecodeError as err:
        raise ValueError(f"sweep spec {path} is not valid TOML: {err}") from None
    return _spec_from_table(table, str(path))


# ------------------------------------------------------------------------------------- trials


@dataclass(frozen=True)
class Trial:
    """One point of a sweep: a task run for one phi under one rule with one seed.

    ``budget_macs`` is set when the sweep asked for a MACs budget (``phi`` is then the rule's
    `phi_for_budget`); ``steps`` when the sweep compares several training budgets.
    """

    task: str
    rule: str
    phi: float
    seed: int
    budget_macs: float | None = None
    steps: int | None = None
    keypoints: str = "coco17"  # the schema of the whole sweep, so not part of the trial id

    @property
    def rule_name(self) -> str:
        """The rule's name (a rule given as a path to a .toml file is named by its file stem)."""
        return Path(self.rule).stem if self.rule.endswith(".toml") else self.rule

    @property
    def trial_id(self) -> str:
        """Stable folder name, e.g. ``pose-reference-phi-2.5-seed0`` or ``pose-width_only-budget2e+08-phi-3.1-seed1``."""
        budget = "" if self.budget_macs is None else f"budget{self.budget_macs:.4g}-"
        steps = "" if self.steps is None else f"-steps{self.steps}"
        return f"{self.task}-{self.rule_name}-{budget}phi{self.phi:g}-seed{self.seed}{steps}"

    def model_config(self):
        """The trial's architecture at the rule's own input size."""
        from .scaling import generate_config

        return generate_config(self.phi, self.rule, keypoints=self.keypoints)


def design_points(spec: SweepSpec) -> list[tuple[str, float, float | None]]:
    """(rule, phi, budget or None) of every design, in the order phi (or budget), then rule.

    With ``budgets_macs`` each rule gets its own phi per budget: the largest whose MACs, at the
    size the trials run at (the rule's own size times ``[train] resolution_scale``, if set),
    fit the budget. Raises ValueError when a phi or budget lies outside a rule's range.
    """
    from .scaling import get_rule, phi_for_budget

    if spec.budgets_macs:
        scale = spec.resolution_scale or 1.0
        keypoints = spec.data.keypoints if spec.data else "coco17"
        return [(rule, phi_for_budget(budget, rule, scale, keypoints), budget)
                for budget in spec.budgets_macs for rule in spec.rules]
    for rule in spec.rules:
        loaded = get_rule(rule)
        for phi in spec.phi:
            loaded.check_phi(phi)
    return [(rule, phi, None) for phi in spec.phi for rule in spec.rules]


def expand_trials(spec: SweepSpec) -> list[Trial]:
    """Every (design, seed, training budget) of the spec: phi or budget, then rule, seed, steps.

    Raises ValueError when a phi lies outside a rule's valid range, a budget outside a rule's
    costs, or two trials would share an id.
    """
    keypoints = spec.data.keypoints if spec.data else "coco17"
    trials = []
    for rule, phi, budget in design_points(spec):
        for seed in spec.seeds:
            for steps in spec.step_budgets:
                trials.append(Trial(spec.task, rule, phi, seed, budget_macs=budget, steps=steps, keypoints=keypoints))
    ids = [t.trial_id for t in trials]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"sweep {spec.name!r} ({spec.source}) gives duplicate trial ids {duplicates}; "
                         f"list each phi, rule and seed once")
    return trials


_OPTIONAL_TRIAL_FIELDS = ("budget_macs", "steps")


def trial_settings(trial: Trial, spec: SweepSpec) -> dict[str, Any]:
    """Everything that determines a trial's result; a finished trial is reused only if it matches."""
    # Budget, steps and a non-default schema only when set, so folders of older sweeps still resume.
    trial_fields = {k: v for k, v in dataclasses.asdict(trial).items() if v is not None or k not in _OPTIONAL_TRIAL_FIELDS}
    settings = {"trial": _without_default_keypoints(trial_fields), "options": dict(spec.options)}
    if _trains(spec.task):
        settings.update(data=_without_default_keypoints(dataclasses.asdict(spec.data)) if spec.data else None,
                        train=dict(spec.train), evaluate=dataclasses.asdict(spec.evaluate))
    latency = dataclasses.asdict(spec.latency)
    latency["phi"] = latency["rules"] = None  # which trials are timed is settled by `enabled`
    latency["enabled"] = spec.latency.wants(trial.phi, trial.rule)
    settings["latency"] = latency
    return json.loads(json.dumps(settings))


def _without_default_keypoints(table: dict[str, Any]) -> dict[str, Any]:
    """COCO-17 is left out, so that sweep folders written before schemas were a choice still resume."""
    return {k: v for k, v in table.items() if not (k == "keypoints" and v == "coco17")}


# ------------------------------------------------------------------------------------- tasks

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


def _trains(name: str) -> bool:
    """Whether the task's results depend on [data], [train] and [evaluate] (unknown tasks: assume so)."""
    task = tasks.TASKS.get(name)
    return task is None or task.trains


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


# ------------------------------------------------------------------------------------- records


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the whole new one, never a partial one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _json_default(value: Any) -> Any:
    """numpy scalars/arrays and paths in result fields."""
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    raise TypeError(f"result field value {value!r} ({type(value).__name__}) is not JSON serialisable")


def read_record(trial_dir: Path) -> dict[str, Any] | None:
    path = Path(trial_dir) / RESULT_FILE
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); delete it to run that trial again") from None


@lru_cache(maxsize=1)
def _git_commit() -> str | None:
    here = Path(__file__).resolve().parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


def provenance() -> dict[str, Any]:
    """Library, JAX and device versions, git commit, host and time of this process."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lib_version = version("efficienthrnet")
    except PackageNotFoundError:
        from . import __version__ as lib_version
    info = {"library_version": lib_version, "python_version": sys.version.split()[0],
            "git_commit": _git_commit(), "hostname": socket.gethostname(), "pid": os.getpid(),
            "timestamp": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "jax_version": None, "backend": None, "device_kind": None, "device_count": None}
    import jax  # trials run JAX anyway; the device is part of what a latency figure means

    device = jax.devices()[0]
    info.update(jax_version=jax.__version__, backend=device.platform, device_kind=device.device_kind,
                device_count=jax.device_count())
    return info


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
        "started_at": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
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
    record["finished_at"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    write_json_atomic(trial_dir / RESULT_FILE, record)
    return record


def _check_reusable(record: dict[str, Any], trial: Trial, spec: SweepSpec, trial_dir: Path) -> None:
    """A finished trial run with other settings would silently mix budgets: refuse it."""
    stored, wanted = record.get("settings", {}), trial_settings(trial, spec)
    if stored != wanted:
        keys = sorted(k for k in set(stored) | set(wanted) if stored.get(k) != wanted.get(k))
        raise ValueError(
            f"{trial_dir} holds a finished trial run with other settings (differing: {keys}); "
            f"use another output directory for the changed sweep, or delete {trial_dir} to run it again"
        )


def pending_trials(spec: SweepSpec, out_dir: str | os.PathLike) -> tuple[list[Trial], list[Trial]]:
    """(finished trials, trials still to run: never started, failed or interrupted)."""
    finished, todo = [], []
    for trial in expand_trials(spec):
        trial_dir = Path(out_dir) / TRIALS_DIR / trial.trial_id
        record = read_record(trial_dir)
        if record is not None and record.get("status") == STATUS_DONE:
            _check_reusable(record, trial, spec, trial_dir)
            finished.append(trial)
        else:
            todo.append(trial)
    return finished, todo


# ------------------------------------------------------------------------------------- runner


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
    for trial in todo:
        progress.started()
        progress.finished(execute_trial(trial, spec, out_dir))


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
    refs = {remote.remote(trial, spec, str(out_dir.resolve()), get_task(trial.task)): trial for trial in todo}
    progress.started(len(refs))
    while refs:
        ready, _ = ray.wait(list(refs), num_returns=1)
        for ref in ready:
            trial = refs.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as err:  # the worker died (e.g. out of memory): record it like a failure
                record = _worker_lost_record(trial, spec, out_dir, err)
            progress.finished(record)


def _worker_lost_record(trial: Trial, spec: SweepSpec, out_dir: Path, err: Exception) -> dict[str, Any]:
    trial_dir = out_dir / TRIALS_DIR / trial.trial_id
    record = read_record(trial_dir) or {"trial_id": trial.trial_id, "trial": dataclasses.asdict(trial),
                                        "settings": trial_settings(trial, spec), "attempt": 1}
    record.update(status=STATUS_FAILED, error=f"Ray worker lost: {type(err).__name__}: {err}",
                  traceback="".join(traceback.format_exception(err)), result={}, duration_s=0.0)
    write_json_atomic(trial_dir / RESULT_FILE, record)
    return record


def _import_ray() -> None:
    """Fail before the sweep starts, not in the runner, when the 'ray' extra is missing."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise ImportError("executor 'ray' needs Ray: pip install 'efficienthrnet[ray]'") from None


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


# ------------------------------------------------------------------------------------- results

PROVENANCE_COLUMNS = ("library_version", "jax_version", "backend", "device_kind", "git_commit", "hostname",
                      "timestamp")


def record_row(record: Mapping[str, Any]) -> dict[str, Any]:
    """One results-table row: trial fields, status, scalar result fields, provenance, derived figures."""
    trial = record.get("trial", {})
    row: dict[str, Any] = {"trial_id": record.get("trial_id"),
                           **{k: trial.get(k) for k in ("task", "rule", "phi", "seed", "budget_macs", "steps")}}
    row["rule_name"] = Trial(**trial).rule_name if trial else None
    row.update(status=record.get("status"), attempt=record.get("attempt"), duration_s=record.get("duration_s"),
               error=record.get("error"))
    for key, value in (record.get("result") or {}).items():
        if value is None or isinstance(value, (bool, int, float, str)):
            row[key] = value
    prov = record.get("provenance") or {}
    row.update({k: prov.get(k) for k in PROVENANCE_COLUMNS})
    power = (record.get("device") or {}).get("power_watts")
    row["power_watts"] = power
    ap, fps = row.get("AP"), row.get("fps")
    if power and isinstance(ap, (int, float)) and isinstance(fps, (int, float)):
        # Table 5 of the paper: accuracy-efficiency = AP (in percent) x FPS / W.
        row["fps_per_watt"] = fps / power
        row["ap_fps_per_watt"] = 100.0 * ap * fps / power
    return row


def load_results(out_dir: str | os.PathLike, write_csv: bool = True):
    """All trial records under OUT/trials as a DataFrame (one row per trial), also saved as OUT/results.csv.

    Rows are sorted by task, rule, phi and seed. Failed and interrupted trials are rows too,
    with their status and error, so nothing disappears from the table.
    """
    import pandas as pd

    out = Path(out_dir)
    trials_dir = out / TRIALS_DIR
    if not trials_dir.is_dir():
        raise FileNotFoundError(f"{out} holds no {TRIALS_DIR}/ folder; run a sweep into it first (run_sweep)")
    rows = []
    for trial_dir in sorted(p for p in trials_dir.iterdir() if p.is_dir()):
        record = read_record(trial_dir)
        if record is not None:
            rows.append(record_row(record))
    df = pd.DataFrame(rows)
    if not df.empty:
        df = df.sort_values(["task", "rule", "phi", "seed"], kind="stable").reset_index(drop=True)
    if write_csv:
        df.to_csv(out / RESULTS_CSV, index=False)
        if not df.empty:
            from .analysis import summarize_results

            summarize_results(df).to_csv(out / SUMMARY_CSV, index=False)
    return df


def summarize_results(df):
    """One row per design with `n_seeds` and each metric's mean, std and 95 % bootstrap CI over seeds.

    The table `load_results` also writes as OUT/summary.csv; see `efficienthrnet.analysis.summarize_results`
    (imported on use: pandas and scipy stay out of the sweep's import).
    """
    from .analysis import summarize_results as summarize

    return summarize(df)


def load_sweep_spec(out_dir: str | os.PathLike) -> SweepSpec | None:
    """The spec a sweep folder was run with (from OUT/spec.json), or None if it has none."""
    path = Path(out_dir) / SPEC_FILE
    if not path.is_file():
        return None
    table = json.loads(path.read_text())
    source = table.pop("source", str(path))
    return _spec_from_table(_jsonable_to_table(table), source)


def _jsonable_to_table(table: dict[str, Any]) -> dict[str, Any]:
    """spec.json back to the TOML-table shape (None fields dropped, as TOML has no null)."""
    def clean(value):
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        return value

    return clean(table)
