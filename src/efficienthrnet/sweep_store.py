"""A sweep's folder: trial records written atomically, resume state and the results table.

Each trial writes ``OUT/trials/<trial_id>/result.json`` atomically (`write_json_atomic`), with
its provenance; `pending_trials` tells finished trials from those still to run (a finished
trial is recognised by its record alone); `load_results` gathers the records into one
DataFrame (OUT/results.csv, OUT/summary.csv) and `load_sweep_spec` reads back OUT/spec.json.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from .sweep_expand import Trial, expand_trials, trial_settings
from .sweep_spec import SweepSpec, _spec_from_table

RESULT_FILE = "result.json"
TRIALS_DIR = "trials"
SPEC_FILE = "spec.json"
RESULTS_CSV = "results.csv"
SUMMARY_CSV = "summary.csv"  # one row per design: seed means, std and bootstrap CIs
PREDICTIONS_FILE = "predictions.json"  # COCO results list of a pose trial
STATUS_DONE, STATUS_FAILED, STATUS_RUNNING = "done", "failed", "running"


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


#: In a sweep worker: the share of the cores its XLA thread pool was sized for (it then runs on all).
_compute_cores: int | None = None


def set_compute_cores(n: int | None) -> None:
    """Record that XLA's CPU thread pool in this process was sized for ``n`` cores (a sweep worker)."""
    global _compute_cores
    _compute_cores = n


def usable_cpu_cores() -> int:
    """How many CPU cores this process computes on: a sweep worker's share, else its affinity
    where the OS tells, else all."""
    if _compute_cores is not None:
        return _compute_cores
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def provenance() -> dict[str, Any]:
    """Library, JAX and device versions, git commit, host and time of this process."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        lib_version = version("efficienthrnet")
    except PackageNotFoundError:
        from . import __version__ as lib_version
    info = {"library_version": lib_version, "python_version": sys.version.split()[0],
            "git_commit": _git_commit(), "hostname": socket.gethostname(), "pid": os.getpid(),
            "timestamp": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "jax_version": None, "backend": None, "device_kind": None, "device_count": None,
            "cpu_cores": usable_cpu_cores()}
    import jax  # trials run JAX anyway; the device is part of what a latency figure means

    device = jax.devices()[0]
    info.update(jax_version=jax.__version__, backend=device.platform, device_kind=device.device_kind,
                device_count=jax.device_count())
    return info


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


PROVENANCE_COLUMNS = ("library_version", "jax_version", "backend", "device_kind", "cpu_cores", "git_commit",
                      "hostname", "timestamp")


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
