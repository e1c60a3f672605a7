"""The local executor's worker processes: core sets, design groups, pinning, a worker that dies."""

from __future__ import annotations

import os

import pytest

from efficienthrnet import sweep
from efficienthrnet.sweep import LatencySpec, SweepSpec, Trial, register_task, run_sweep
from efficienthrnet.sweep_executors import core_sets, design_groups

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


# Module-level tasks: spawned workers import this module to find them.
def where_it_ran(trial, spec, trial_dir):
    return {"pid": os.getpid(), "cores": ",".join(map(str, sorted(os.sched_getaffinity(0))))}


def die_at_minus_three(trial, spec, trial_dir):
    if trial.phi == -3.0:
        os._exit(3)  # the whole worker process goes, as on an out-of-memory kill
    return {"pid": os.getpid()}


register_task("test_where_it_ran", where_it_ran, replace=True)
register_task("test_die_at_minus_three", die_at_minus_three, replace=True)


def _spec(tmp_path, task, workers=2, seeds=(0, 1)):
    return SweepSpec(name="w", task=task, phi=(-4.0, -3.0), rules=("efficienthrnet",), seeds=seeds,
                     output=str(tmp_path / "out"), latency=LatencySpec(enabled=False),
                     device=sweep.DeviceSpec(workers=workers, compilation_cache=False))


def test_core_sets_split_evenly_and_refuse_more_workers_than_cores():
    assert core_sets(2, [0, 1, 2, 3]) == [(0, 1), (2, 3)]
    assert core_sets(2, [5, 1, 3]) == [(1, 3), (5,)]
    assert core_sets(1, [0, 1]) == [(0, 1)]
    with pytest.raises(ValueError, match=r"device.workers = 3 but this process may use only 2 CPU core"):
        core_sets(3, [0, 1])


def test_design_groups_keep_the_seeds_of_a_design_together():
    trials = [Trial("pose", "efficienthrnet", phi, seed) for seed in (0, 1) for phi in (-4.0, -3.0)]
    groups = design_groups(trials)
    assert [[(t.phi, t.seed) for t in g] for g in groups] == [[(-4.0, 0), (-4.0, 1)], [(-3.0, 0), (-3.0, 1)]]


def test_workers_must_be_a_positive_integer(tmp_path):
    table = {"name": "w", "task": "profile", "phi": [-4.0], "rules": ["efficienthrnet"], "output": "o",
             "device": {"workers": 0}}
    with pytest.raises(ValueError, match=r"device.workers 0 must be an integer >= 1"):
        SweepSpec.from_dict(table)


@pytest.mark.skipif(len(CORES) < 2, reason="splitting the cores between two workers needs two cores")
def test_two_workers_pin_their_cores_and_keep_a_design_in_one_process(tmp_path):
    df = run_sweep(_spec(tmp_path, "test_where_it_ran"), progress=False)
    assert len(df) == 4 and set(df["status"]) == {"done"}
    assert os.getpid() not in set(df["pid"])
    for _, design in df.groupby("phi"):
        assert design["pid"].nunique() == 1  # both seeds in one worker: one compiled step
    allowed = {",".join(map(str, cores)) for cores in core_sets(2)}
    assert set(df["cores"]) <= allowed  # each worker ran on its own half of the cores only
    assert set(df["cpu_cores"]) <= {len(cores) for cores in core_sets(2)}


@pytest.mark.skipif(len(CORES) < 2, reason="splitting the cores between two workers needs two cores")
def test_a_worker_that_dies_fails_its_trials_and_a_rerun_retries_them(tmp_path):
    spec = _spec(tmp_path, "test_die_at_minus_three", seeds=(0,))
    df = run_sweep(spec, progress=False).set_index("phi")
    assert df.loc[-3.0, "status"] == "failed"
    assert "local worker lost" in df.loc[-3.0, "error"]
    assert set(df["status"]) <= {"done", "failed"}  # nothing is left looking like it still runs
    df2 = run_sweep(spec, progress=False).set_index("phi")
    assert df2.loc[-3.0, "attempt"] == 2
