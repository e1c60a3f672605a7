"""Sweep specs for a scaling study: MACs budgets, several training budgets, rule-following proxy sizes."""

from __future__ import annotations

import pandas as pd
import pytest

from efficienthrnet.scaling import phi_for_budget, proxy_input_size
from efficienthrnet.sweep import (
    LatencySpec,
    SweepSpec,
    Trial,
    expand_trials,
    load_sweep_spec,
    run_sweep,
)
from efficienthrnet.trials import pose_train_config

RULES = ("efficienthrnet", "width_only")  # their cost ranges overlap from 2.6 GMACs up


def _spec(tmp_path, **changes) -> SweepSpec:
    base = dict(name="study", task="profile", rules=RULES, budgets_macs=(3e9, 6e9), seeds=(0, 1),
                output=str(tmp_path / "out"), latency=LatencySpec(enabled=False))
    base.update(changes)
    return SweepSpec.from_dict({k: (list(v) if isinstance(v, tuple) else v) for k, v in base.items()
                                if k != "latency"} | {"latency": {"enabled": False}})


def test_budgets_give_each_rule_its_own_phi(tmp_path):
    trials = expand_trials(_spec(tmp_path))
    assert len(trials) == 2 * 2 * 2  # budgets x rules x seeds
    for t in trials:
        assert t.phi == phi_for_budget(t.budget_macs, t.rule)
        assert f"budget{t.budget_macs:.4g}-phi{t.phi:g}-seed{t.seed}" in t.trial_id
    phis = {(t.rule, t.budget_macs): t.phi for t in trials}
    assert phis[("efficienthrnet", 3e9)] != phis[("width_only", 3e9)]  # matched by cost, not phi


def test_budget_sweep_table_and_summary(tmp_path):
    df = run_sweep(_spec(tmp_path), progress=False)
    assert set(df["status"]) == {"done"} and set(df["budget_macs"]) == {3e9, 6e9}
    assert (df["macs"] <= df["budget_macs"]).all()
    summary = pd.read_csv(tmp_path / "out/summary.csv")
    assert len(summary) == 4 and set(summary["n_seeds"]) == {2}
    assert {"budget_macs", "phi", "rule", "macs_mean", "macs_ci_low", "macs_ci_high"} <= set(summary.columns)
    assert load_sweep_spec(tmp_path / "out").budgets_macs == (3e9, 6e9)  # spec.json reads back


def test_training_budgets_expand_and_reach_the_train_config(tmp_path):
    spec = _spec(tmp_path, task="pose", budgets_macs=(3e8,), seeds=(0,),
                 data={"kind": "synthetic", "dir": str(tmp_path / "d")},
                 train={"steps": [3, 9], "batch_size": 2, "resolution_scale": 0.25})
    trials = expand_trials(spec)
    assert sorted({t.steps for t in trials}) == [3, 9] and len(trials) == 4
    assert all(t.trial_id.endswith(f"-steps{t.steps}") for t in trials)
    for t in trials:
        config = pose_train_config(t, spec)
        assert config.steps == t.steps and config.seed == t.seed
        # The proxy follows the rule's own resolution: width_only keeps 512 px, the compound rule shrinks.
        assert config.input_size == proxy_input_size(t.model_config().input_size, 0.25)
    natives = {t.rule: t.model_config().input_size for t in trials}
    assert natives["width_only"] == 512 > natives["efficienthrnet"]
    assert {t.rule: pose_train_config(t, spec).input_size for t in trials}["width_only"] == 128


@pytest.mark.parametrize(("changes", "message"), [
    ({"phi": [-4.0]}, "exactly one of phi"),
    ({"budgets_macs": [0]}, "budgets_macs must be a non-empty list of positive"),
    ({"budgets_macs": [1e5]}, "lies outside rule 'efficienthrnet'"),
    ({"task": "pose", "data": {"kind": "synthetic", "dir": "d"}, "train": {"steps": [5, 5]}}, "distinct"),
    ({"task": "pose", "data": {"kind": "synthetic", "dir": "d"}, "train": {"input_size": 128, "resolution_scale": 0.5}},
     "both input_size = 128 and resolution_scale = 0.5"),
    ({"task": "pose", "data": {"kind": "synthetic", "dir": "d"}, "train": {"resolution_scale": -1}},
     "resolution_scale must be a positive real number, got -1"),
])
def test_bad_study_specs_are_refused_with_the_field(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        expand_trials(_spec(tmp_path, **changes))


def test_old_trial_ids_are_unchanged():
    assert Trial("pose", "reference", -2.5, 0).trial_id == "pose-reference-phi-2.5-seed0"


def _rule_gap_task(trial, spec, trial_dir):
    """A stand-in trained trial: rule `efficienthrnet` beats `width_only` by 0.1 AP, plus seed noise."""
    gap = 0.1 if trial.rule == "efficienthrnet" else 0.0
    return {"AP": 0.4 + gap + 0.01 * trial.seed + (trial.steps or 0) * 1e-4, "macs": trial.budget_macs * 0.9}


def test_compare_command_writes_the_comparison_and_rank_agreement(tmp_path, capsys):
    from efficienthrnet.cli import main
    from efficienthrnet.sweep import register_task

    register_task("test_rule_gap", _rule_gap_task, replace=True)
    spec = _spec(tmp_path, task="test_rule_gap", seeds=(0, 1, 2), train={"steps": [10, 20]})
    run_sweep(spec, progress=False)
    assert main(["compare", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "p_a_better" in out and "tau" in out
    comparison = pd.read_csv(tmp_path / "out/comparison.csv")
    assert len(comparison) == 4  # 2 budgets x 2 training budgets, one pair each
    assert (comparison["rule_a"] == "efficienthrnet").all()
    assert comparison["diff"].to_numpy() == pytest.approx([0.1] * 4)
    assert (comparison["p_a_better"] > 0.99).all()
    agreement = pd.read_csv(tmp_path / "out/rank_agreement.csv")
    assert agreement.loc[0, "tau"] == pytest.approx(1.0)  # the shorter budget ranks designs the same way


def test_sweep_keeps_a_persistent_compilation_cache_in_its_folder(tmp_path):
    import subprocess
    import sys

    # A fresh process: JAX's cache folder is set once per process, and the test session's stays untouched.
    code = (
        "from efficienthrnet.sweep import SweepSpec, run_sweep\n"
        "spec = SweepSpec.from_dict({'name': 'c', 'task': 'profile', 'phi': [-6.0], 'rules': ['efficienthrnet'],\n"
        f"    'output': {str(tmp_path / 'out')!r}, 'latency': {{'input_size': 64, 'warmup': 1, 'repeats': 1}}}})\n"
        "df = run_sweep(spec, progress=False)\n"
        "assert (df['status'] == 'done').all(), df['error'].tolist()\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=300, env={**__import__("os").environ,
                                                                                "JAX_PLATFORMS": "cpu"})
    cached = list((tmp_path / "out/.jax_cache").iterdir())
    assert any("forward" in p.name or "jit" in p.name for p in cached), cached


def test_compilation_cache_setting_is_checked(tmp_path):
    with pytest.raises(ValueError, match="device.compilation_cache 3 must be true, false or a folder path"):
        _spec(tmp_path, device={"compilation_cache": 3})
