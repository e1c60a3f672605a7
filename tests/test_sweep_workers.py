"""The local executor's worker processes: core sets, design groups, pinning, a worker that dies."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from efficienthrnet import sweep
from efficienthrnet.sweep import LatencySpec, SweepSpec, Trial, register_task, run_sweep
from efficienthrnet.sweep_executors import core_sets, design_groups, longest_first, worker_count
from efficienthrnet.sweep_expand import expand_trials
from efficienthrnet.sweep_spec import load_spec
from efficienthrnet.trials import estimate_pose_trial_cost

CORES = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []


# Module-level tasks: spawned workers import this module to find them.
def where_it_ran(trial, spec, trial_dir):
    import jax

    from efficienthrnet.sweep_store import usable_cpu_cores

    return {"pid": os.getpid(), "cores": ",".join(map(str, sorted(os.sched_getaffinity(0)))),
            "compute_cores": usable_cpu_cores(), "backend_up": bool(jax._src.xla_bridge._backends)}


def die_at_minus_three(trial, spec, trial_dir):
    if trial.phi == -3.0:
        os._exit(3)  # the whole worker process goes, as on an out-of-memory kill
    return {"pid": os.getpid()}


def cost_grows_with_phi(trial, spec):
    return {-4.0: 1.0, -3.0: 5.0, -2.0: 5.0, -1.0: 3.0}[trial.phi]


register_task("test_where_it_ran", where_it_ran, replace=True)
register_task("test_die_at_minus_three", die_at_minus_three, replace=True)
register_task("test_costed", where_it_ran, replace=True, cost_estimate=cost_grows_with_phi)


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


def test_workers_must_be_a_positive_integer_or_auto(tmp_path):
    table = {"name": "w", "task": "profile", "phi": [-4.0], "rules": ["efficienthrnet"], "output": "o",
             "device": {"workers": 0}}
    with pytest.raises(ValueError, match=r"device.workers 0 must be an integer >= 1"):
        SweepSpec.from_dict(table)
    with pytest.raises(ValueError, match=r"device.workers 'many' must be an integer >= 1 .* or \"auto\""):
        SweepSpec.from_dict({**table, "device": {"workers": "many"}})
    assert SweepSpec.from_dict({**table, "device": {"workers": "auto"}}).device.workers == "auto"


def test_auto_workers_are_one_per_core_but_no_more_than_the_designs():
    assert worker_count("auto", groups=4, cores=[0, 1]) == 2
    assert worker_count("auto", groups=1, cores=[0, 1, 2, 3]) == 1  # one design never spans workers
    assert worker_count("auto", groups=3, cores=[7]) == 1  # one core: trials run in this process
    assert worker_count("auto", groups=0, cores=[0, 1]) == 1
    assert worker_count(3, groups=1, cores=[0, 1]) == 3  # a number is taken as given


def test_longest_first_hands_out_the_dearest_design_first_and_keeps_ties_in_order():
    trials = [Trial("test_costed", "efficienthrnet", phi, seed) for phi in (-4.0, -3.0, -2.0, -1.0) for seed in (0, 1)]
    spec = SweepSpec(name="w", task="test_costed", phi=(-4.0, -3.0, -2.0, -1.0), rules=("efficienthrnet",),
                     output="o")
    order = [group[0].phi for group in longest_first(design_groups(trials), spec)]
    assert order == [-3.0, -2.0, -1.0, -4.0]  # costs 10, 10, 6, 2 (both seeds): -3 before -2 as listed
    untimed = dataclasses.replace(spec, task="test_where_it_ran")  # no estimate: the spec's order
    assert [g[0].phi for g in longest_first(design_groups(trials), untimed)] == [-4.0, -3.0, -2.0, -1.0]


def test_the_pose_cost_estimate_puts_the_demos_width_only_designs_first():
    spec = load_spec(Path(sweep.__file__).parent / "experiments" / "demo_study.toml")
    trials = expand_trials(spec)
    order = [(g[0].rule, g[0].budget_macs) for g in longest_first(design_groups(trials), spec)]
    # Measured on the 2-core VM: width-only at 128 px trained at 0.7x the compound rule's images/s.
    assert order == [("width_only", 2.4e8), ("width_only", 1.7e8), ("efficienthrnet", 2.4e8), ("efficienthrnet", 1.7e8)]
    trial = trials[0]
    longer = dataclasses.replace(spec, train={**spec.train, "steps": 2 * spec.train["steps"]})
    assert estimate_pose_trial_cost(trial, longer) == pytest.approx(2 * estimate_pose_trial_cost(trial, spec))


@pytest.mark.skipif(len(CORES) < 2, reason="splitting the cores between two workers needs two cores")
def test_two_workers_split_the_cores_and_keep_a_design_in_one_process(tmp_path):
    df = run_sweep(_spec(tmp_path, "test_where_it_ran"), progress=False)
    assert len(df) == 4 and set(df["status"]) == {"done"}
    assert os.getpid() not in set(df["pid"])
    for _, design in df.groupby("phi"):
        assert design["pid"].nunique() == 1  # both seeds in one worker: one compiled step
    # JAX's backend started at the worker's share of the cores (its thread pool's size), then the
    # worker got every core back for its host-side work; the table records the share.
    assert df["backend_up"].all()
    assert set(df["cores"]) == {",".join(map(str, CORES))}
    assert set(df["compute_cores"]) == set(df["cpu_cores"]) == {len(cores) for cores in core_sets(2)}


@pytest.mark.skipif(len(CORES) < 2, reason="splitting the cores between two workers needs two cores")
def test_a_worker_that_dies_fails_its_trials_and_a_rerun_retries_them(tmp_path):
    spec = _spec(tmp_path, "test_die_at_minus_three", seeds=(0,))
    df = run_sweep(spec, progress=False).set_index("phi")
    assert df.loc[-3.0, "status"] == "failed"
    assert "local worker lost" in df.loc[-3.0, "error"]
    assert set(df["status"]) <= {"done", "failed"}  # nothing is left looking like it still runs
    df2 = run_sweep(spec, progress=False).set_index("phi")
    assert df2.loc[-3.0, "attempt"] == 2
