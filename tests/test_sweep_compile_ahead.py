"""The local executor compiles the next design on a background thread while the current one runs.

(That `train.compile_ahead` then spares the real run both compiles is tested in test_train.py.)
"""

from __future__ import annotations

import logging
import threading
import time

import pytest

from efficienthrnet import sweep
from efficienthrnet.sweep import LatencySpec, SweepSpec, register_task, run_sweep

EVENTS: list[tuple] = []
FAIL_PHI: list[float] = []


def _record(kind, trial):
    EVENTS.append((kind, trial.phi, trial.seed, threading.current_thread().name, time.perf_counter()))


def compile_probe(trial, spec):
    _record("compile start", trial)
    time.sleep(0.3)
    if trial.phi in FAIL_PHI:
        raise RuntimeError("no compiler today")
    _record("compile end", trial)


def run_probe(trial, spec, trial_dir):
    _record("run", trial)
    time.sleep(0.5)
    _record("run end", trial)
    return {"ran_on": threading.current_thread().name}


register_task("test_compile_ahead", run_probe, replace=True, compile_ahead=compile_probe)


def _spec(tmp_path, ahead=True):
    return SweepSpec(name="ahead", task="test_compile_ahead", phi=(-4.0, -3.0, -2.0), rules=("efficienthrnet",),
                     seeds=(0, 1), output=str(tmp_path / "out"), latency=LatencySpec(enabled=False),
                     device=sweep.DeviceSpec(compilation_cache=False, compile_ahead=ahead))


@pytest.fixture(autouse=True)
def _fresh_events():
    EVENTS.clear()
    FAIL_PHI.clear()
    yield
    FAIL_PHI.clear()


def _first(kind, phi):
    return next(e for e in EVENTS if e[0] == kind and e[1] == phi)


def _at(kind, phi, seed):
    return next(e for e in EVENTS if e[0] == kind and e[1] == phi and e[2] == seed)[4]


def test_the_next_design_compiles_in_the_background_during_the_current_one(tmp_path):
    df = run_sweep(_spec(tmp_path), progress=False)
    assert len(df) == 6 and set(df["status"]) == {"done"}
    compiled = [(e[1], e[2]) for e in EVENTS if e[0] == "compile start"]
    assert compiled == [(-3.0, 0), (-2.0, 0)]  # each later design once; the first compiles in its own trial
    assert {e[3] for e in EVENTS if e[0].startswith("compile")} != {threading.current_thread().name}
    runs = [e for e in EVENTS if e[0] == "run"]
    assert {e[3] for e in runs} == {threading.current_thread().name}  # trials stay on the sweep's thread
    for phi, before in ((-3.0, -4.0), (-2.0, -3.0)):
        start = _first("compile start", phi)[4]
        assert _at("run end", before, 0) > start  # from the first trial of the design before ...
        assert _first("compile end", phi)[4] <= _at("run", phi, 0)  # ... and its own trial waited for it
    # One design ahead at most: -2 is not compiled before the trials of -3 begin.
    assert _first("compile start", -2.0)[4] >= _at("run end", -4.0, 1)


def test_a_failing_compile_ahead_leaves_the_trial_to_compile_by_itself(tmp_path, caplog):
    FAIL_PHI.append(-3.0)
    with caplog.at_level(logging.WARNING, logger="efficienthrnet.sweep_executors"):
        df = run_sweep(_spec(tmp_path), progress=False)
    assert set(df["status"]) == {"done"} and len(df) == 6
    assert any("no compiler today" in r.getMessage() and "compiles by itself" in r.getMessage()
               for r in caplog.records)


def test_compile_ahead_can_be_turned_off_and_is_checked(tmp_path):
    df = run_sweep(_spec(tmp_path, ahead=False), progress=False)
    assert set(df["status"]) == {"done"} and not [e for e in EVENTS if e[0].startswith("compile")]
    table = {"name": "a", "task": "profile", "phi": [-4.0], "rules": ["efficienthrnet"], "output": "o",
             "device": {"compile_ahead": "yes"}}
    with pytest.raises(ValueError, match=r"device.compile_ahead 'yes' must be true or false"):
        SweepSpec.from_dict(table)


def test_sweep_command_turns_compile_ahead_off(tmp_path):
    from efficienthrnet.cli import main

    spec = tmp_path / "ahead.toml"
    spec.write_text('name = "ahead"\ntask = "test_compile_ahead"\nphi = [-4.0, -3.0]\nrules = ["efficienthrnet"]\n'
                    f'output = "{tmp_path / "out"}"\n[latency]\nenabled = false\n')
    assert main(["sweep", str(spec), "--no-plots", "--no-compilation-cache", "--no-compile-ahead"]) == 0
    assert [e[0] for e in EVENTS if e[0] == "run"] == ["run", "run"]
    assert not [e for e in EVENTS if e[0].startswith("compile")]
    EVENTS.clear()
    assert main(["sweep", str(spec), "--out", str(tmp_path / "again"), "--no-plots", "--no-compilation-cache"]) == 0
    assert [e[1] for e in EVENTS if e[0] == "compile start"] == [-3.0]


def test_pose_compile_ahead_also_compiles_the_evaluation_network(tmp_path):
    """`compile_pose_trial` leaves the design's evaluation predictor compiled (on the split's
    first image); the trial's evaluation then reuses it: same cache entry, no new trace."""
    import jax

    from efficienthrnet import trials

    table = {"name": "ahead", "task": "pose", "phi": [-5.0], "rules": ["efficienthrnet"], "seeds": [0],
             "output": str(tmp_path / "out"), "latency": {"enabled": False},
             "data": {"kind": "synthetic", "dir": str(tmp_path / "data"),
                      "synthetic": {"num_images": 6, "image_size": 64, "val_fraction": 0.5}},
             "train": {"steps": 1, "batch_size": 2, "input_size": 64, "checkpoint_every": 1, "progress": False},
             "evaluate": {"split": "val", "flip": False}}
    spec = SweepSpec.from_dict(table)
    (trial,) = sweep.expand_trials(spec)
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # compile time dominates, not speed
    trials._PREDICTORS.clear()
    try:
        trials.compile_pose_trial(trial, spec)
        (warmed,) = trials._PREDICTORS.values()
        assert warmed.num_compilations == 1
        result = trials.run_pose_trial(trial, spec, tmp_path / "trial")
        (evaluated,) = trials._PREDICTORS.values()  # the trial's key found the warmed entry
        assert evaluated is not warmed and evaluated._traces is warmed._traces
        assert evaluated.num_compilations == 1 and result["num_images"] == 3
    finally:
        trials._PREDICTORS.clear()
        jax.config.update("jax_disable_most_optimizations", previous)
