"""The sweep spec: one ``experiments/*.toml`` file read and validated into a frozen `SweepSpec`.

`load_spec(path)` reads a file; `SweepSpec.from_dict` a table. Its sections are the frozen
`DataSpec`, `EvaluateSpec`, `LatencySpec` and `DeviceSpec`; errors name the file and the field.
Relative paths in a spec (``output``, ``data.dir``) are relative to the current directory.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tasks

DATA_KINDS = ("synthetic", "coco")


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
      workers: the local executor's worker processes (1: trials one after another in this
        process), or "auto": one per CPU core this process may use, at most one per design. With
        N > 1 the CPU cores are split into N equal sets and each worker's XLA thread pool is sized
        to one set (the worker then runs on every core, for its host-side work); the seeds of one
        design go to one worker, which compiles their step once, and the dearest designs go first
        (the task's cost estimate). For small trials, which leave cores idle (README "Sweeps" for
        what it saved). Latency is then timed with a worker's share (``cpu_cores`` in each trial).
      compilation_cache: JAX's persistent compilation cache, so that a resumed or repeated sweep
        (and every Ray worker) reuses compiled steps: True keeps it in OUT/.jax_cache, a path puts it
        there (e.g. one cache for many sweeps), False turns it off. A cache the process already
        uses (``jax_compilation_cache_dir`` set by the user) is left as it is.
      compile_ahead: with one local process, compile the next design's first programs (the pose
        task: state init and train step) on a background thread while the current design trains,
        so that the next trial starts at once (README "Sweeps" for what it saved).
    """

    power_watts: float | None = None
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    ray_address: str | None = None
    workers: int | str = 1
    compilation_cache: bool | str = True
    compile_ahead: bool = True


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
    def from_dict(cls, table: Mapping[str, Any], source: str = "<memory>") -> SweepSpec:
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

    def replace(self, **changes) -> SweepSpec:
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
    workers = spec.device.workers
    if workers != "auto" and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 1):
        raise ValueError(f"{where}: device.workers {workers!r} must be an integer >= 1 (local worker processes) "
                         f"or \"auto\" (one per CPU core)")
    cache = spec.device.compilation_cache
    if not isinstance(cache, bool) and not (isinstance(cache, str) and cache):
        raise ValueError(f"{where}: device.compilation_cache {cache!r} must be true, false or a folder path")
    if not isinstance(spec.device.compile_ahead, bool):
        raise ValueError(f"{where}: device.compile_ahead {spec.device.compile_ahead!r} must be true or false")
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
