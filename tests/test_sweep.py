"""Sweep specs, trial expansion, the runner's records, resume, failures and the results table."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from efficienthrnet import sweep, trials
from efficienthrnet.sweep import (
    LatencySpec,
    SweepSpec,
    Trial,
    expand_trials,
    load_results,
    load_spec,
    register_task,
    run_sweep,
)

EXPERIMENTS = Path(__file__).resolve().parents[1] / "experiments"


def _spec(tmp_path: Path, task: str, phi=(-4.0, -3.0), **changes) -> SweepSpec:
    base = dict(name="t", task=task, phi=tuple(phi), rules=("efficienthrnet",), output=str(tmp_path / "out"),
                latency=LatencySpec(enabled=False))
    base.update(changes)
    return SweepSpec(**base)


# Module-level tasks (a registry entry must be importable, e.g. for Ray workers).
def fail_at_minus_three(trial, spec, trial_dir):
    if trial.phi == -3.0:
        raise RuntimeError("synthetic failure for phi -3")
    return {"AP": 0.1 * (trial.phi + 5), "fps": 20.0, "macs": 1e9 * (trial.phi + 5)}


register_task("test_fail_at_minus_three", fail_at_minus_three, replace=True)


# ------------------------------------------------------------------------------------- specs


def test_shipped_specs_parse_and_expand():
    profile = load_spec(EXPERIMENTS / "profile_phi.toml")
    assert profile.task == "profile"
    assert profile.phi[0] == -6.0 and profile.phi[-1] == 2.0 and len(profile.phi) == 33
    assert len(profile.rules) >= 2
    assert len(expand_trials(profile)) == 33 * len(profile.rules)

    paper = load_spec(EXPERIMENTS / "coco_paper.toml")
    assert paper.data.kind == "coco" and paper.evaluate.flip and paper.evaluate.split == "val"
    assert paper.rules == ("reference",)
    ids = [t.trial_id for t in expand_trials(paper)]
    assert ids == [f"pose-reference-phi{p}-seed0" for p in (-4, -3, -2, -1, 0)]
    assert "input_size" not in paper.train  # full input size: each model's own
    assert trials.pose_train_config(expand_trials(paper)[0], paper).steps == paper.train["steps"]

    quick = load_spec(EXPERIMENTS / "quickstart.toml")
    assert quick.task == "pose" and quick.data.kind == "synthetic" and len(quick.phi) >= 2
    assert quick.train["input_size"] == 128


def test_trial_id_is_stable_and_readable():
    assert Trial("pose", "reference", -2.5, 0).trial_id == "pose-reference-phi-2.5-seed0"
    assert Trial("profile", "rules/my_rule.toml", 0.25, 3).trial_id == "profile-my_rule-phi0.25-seed3"


def test_phi_range_table_includes_stop_without_float_noise():
    spec = SweepSpec.from_dict({"name": "r", "task": "profile", "phi": {"start": -6, "stop": -5, "step": 0.1},
                                "rules": ["efficienthrnet"], "output": "x"})
    assert spec.phi == (-6.0, -5.9, -5.8, -5.7, -5.6, -5.5, -5.4, -5.3, -5.2, -5.1, -5.0)


def test_bad_specs_name_the_file_and_field(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "b"\ntask = "profile"\nphi = [0]\nrules = ["efficienthrnet"]\noutput = "o"\nfoo = 1\n')
    with pytest.raises(ValueError, match=r"bad\.toml.*unknown field.*foo"):
        load_spec(path)
    path.write_text('name = "b"\ntask = "profile"\nphi = [0]\noutput = "o"\n')
    with pytest.raises(ValueError, match=r"bad\.toml.*missing field.*rules"):
        load_spec(path)
    path.write_text('name = "b"\ntask = "profile"\nphi = [0]\nrules = ["efficienthrnet"]\noutput = "o"\n'
                    '[latency]\nrepeat = 3\n')
    with pytest.raises(ValueError, match=r"latency\.repeat"):
        load_spec(path)
    path.write_text('name = "b"\ntask = "pose"\nphi = [0]\nrules = ["efficienthrnet"]\noutput = "o"\n'
                    '[data]\nkind = "synthetic"\ndir = "d"\n[train]\nstep = 3\n')
    with pytest.raises(ValueError, match=r"bad\.toml.*TrainConfig.*step"):
        load_spec(path)
    with pytest.raises(FileNotFoundError, match="nowhere.toml"):
        load_spec(tmp_path / "nowhere.toml")
    out_of_range = _spec(tmp_path, "profile", phi=(-9.0,))
    with pytest.raises(ValueError, match=r"phi=-9\.0 is outside"):
        expand_trials(out_of_range)
    with pytest.raises(ValueError, match="unknown sweep task 'nope'.*register_task"):
        run_sweep(_spec(tmp_path, "nope"), progress=False)


# ------------------------------------------------------------------------------------- runner


def test_profile_sweep_records_and_results_table(tmp_path):
    spec = _spec(tmp_path, "profile", phi=(-4.0, -3.0, 0.0), rules=("efficienthrnet", "reference"))
    df = run_sweep(spec, progress=False)
    assert len(df) == 6 and set(df["status"]) == {"done"}
    record = json.loads((tmp_path / "out/trials/profile-reference-phi0-seed0/result.json").read_text())
    # The reference rule at phi 0 is the released H0: 19,725,359 trainable params (reference page 8.1).
    assert record["result"]["params"] == 19_725_359
    assert record["result"]["flops"] == 2 * record["result"]["macs"]
    assert record["config"]["phi"] == 0.0 and record["config"]["rule"] == "reference"
    for key in ("library_version", "jax_version", "device_kind", "hostname", "timestamp", "git_commit"):
        assert key in record["provenance"]
    assert record["provenance"]["jax_version"]
    csv = pd.read_csv(tmp_path / "out/results.csv")
    assert list(csv["trial_id"]) == list(df["trial_id"])
    assert {"params", "macs", "flops", "jax_version", "device_kind", "hostname"} <= set(csv.columns)
    # MACs grow with phi under each rule.
    for _, group in df.groupby("rule"):
        assert group.sort_values("phi")["macs"].is_monotonic_increasing
    assert (tmp_path / "out/spec.json").is_file()


def test_failing_trial_is_recorded_and_others_finish_then_retried(tmp_path):
    spec = _spec(tmp_path, "test_fail_at_minus_three", phi=(-4.0, -3.0, -2.0),
                 device=sweep.DeviceSpec(power_watts=15.0))
    df = run_sweep(spec, progress=False).set_index("phi")
    assert df.loc[-4.0, "status"] == "done" and df.loc[-2.0, "status"] == "done"
    assert df.loc[-3.0, "status"] == "failed"
    assert "synthetic failure for phi -3" in df.loc[-3.0, "error"]
    failed = json.loads((tmp_path / "out/trials/test_fail_at_minus_three-efficienthrnet-phi-3-seed0/result.json")
                        .read_text())
    assert "RuntimeError" in failed["traceback"] and failed["status"] == "failed"
    # Table 5 of the paper: AP x FPS / W with AP in percent (AP 0.3 at 20 FPS on 15 W -> 40.0).
    assert df.loc[-2.0, "ap_fps_per_watt"] == pytest.approx(100 * 0.3 * 20.0 / 15.0)

    done_file = tmp_path / "out/trials/test_fail_at_minus_three-efficienthrnet-phi-4-seed0/result.json"
    mtime = done_file.stat().st_mtime_ns
    df2 = run_sweep(spec, progress=False).set_index("phi")
    assert done_file.stat().st_mtime_ns == mtime  # a finished trial is not run again
    assert df2.loc[-4.0, "attempt"] == 1 and df2.loc[-3.0, "attempt"] == 2
    assert df2.loc[-3.0, "status"] == "failed"


def test_finished_trial_with_other_settings_is_refused(tmp_path):
    spec = _spec(tmp_path, "profile", phi=(-4.0,))
    run_sweep(spec, progress=False)
    changed = spec.replace(options={"something": 1})
    with pytest.raises(ValueError, match="other settings.*options.*delete"):
        run_sweep(changed, progress=False)
    # Extending a sweep with more phis reuses the finished trial.
    extended = spec.replace(phi=(-4.0, -3.5))
    df = run_sweep(extended, progress=False)
    assert list(df["attempt"]) == [1, 1] and len(df) == 2


def test_full_profile_phi_sweep_costs_every_config_and_times_the_latency_subset(tmp_path):
    # Its one-minute budget is measured by benchmarks/profile_sweep.py, not asserted here.
    spec = load_spec(EXPERIMENTS / "profile_phi.toml")
    df = run_sweep(spec, out_dir=tmp_path / "profile", progress=False)
    assert len(df) == 33 * len(spec.rules) and set(df["status"]) == {"done"}
    assert (df["macs"] > 0).all() and (df["params"] > 0).all()
    timed = df[df["latency_ms"].notna()]
    expected = {(rule, phi) for rule in spec.latency.rules for phi in spec.latency.phi}
    assert set(zip(timed["rule"], timed["phi"])) == expected
    assert (timed["latency_ms"] > 0).all() and (timed["fps"] == 1e3 / timed["latency_ms"]).all()
    assert set(timed["latency_input_size"]) == {spec.latency.input_size}


def test_latency_subset_names_only_rules_the_sweep_runs(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('name = "x"\ntask = "profile"\nphi = [-4.0]\nrules = ["efficienthrnet"]\n'
                    'output = "out"\n[latency]\nrules = ["referense"]\n')
    with pytest.raises(ValueError, match=r"latency\.rules.*'referense'.*efficienthrnet"):
        load_spec(path)


def test_load_results_on_empty_dir_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="run a sweep"):
        load_results(tmp_path)
