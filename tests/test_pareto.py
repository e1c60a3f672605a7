"""Pareto fronts on hand-made tables with known answers, and the plots written to disk."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from efficienthrnet.pareto import (
    finished_points,
    front_table,
    log_axis_pays,
    pareto_front,
    pareto_mask,
    plot_results,
    plot_sweep,
)
from efficienthrnet.sweep import DataSpec, LatencySpec, SweepSpec, register_task, run_sweep


def test_front_of_a_known_table():
    df = pd.DataFrame({
        "name": ["a", "b", "c", "d", "e", "f"],
        "macs": [1.0, 2.0, 3.0, 4.0, 2.5, 5.0],
        "AP": [0.30, 0.50, 0.45, 0.70, 0.55, 0.70],
    })
    # c is beaten by e (cheaper, more accurate); f by d (same AP, cheaper).
    assert list(pareto_front(df)["name"]) == ["a", "b", "e", "d"]
    assert list(pareto_mask(df)) == [True, True, False, True, True, False]


def test_ties_missing_values_and_other_columns():
    df = pd.DataFrame({
        "name": ["a", "a2", "b", "c", "nan_ap", "nan_cost"],
        "params": [1.0, 1.0, 1.0, 2.0, 0.5, math.nan],
        "top1": [0.6, 0.6, 0.5, 0.6, math.nan, 0.99],
    })
    front = pareto_front(df, metric="top1", cost="params")
    # Exact ties are all kept; the same cost with a lower metric is not; c costs more for no gain.
    assert list(front["name"]) == ["a", "a2"]
    with pytest.raises(ValueError, match="column 'AP' is not in the table"):
        pareto_front(df)


def test_single_point_and_monotone_chain_are_fronts():
    chain = pd.DataFrame({"macs": [1, 2, 3], "AP": [0.1, 0.2, 0.3]})
    assert pareto_mask(chain).all()
    assert len(pareto_front(chain.iloc[:1])) == 1


def _pose_table():
    rows = []
    for rule, bonus in (("efficienthrnet", 0.0), ("reference", 0.02)):
        for phi, macs, params, lat in ((-4.0, 1.8e9, 2.7e6, 30.0), (-3.0, 3.7e9, 5.3e6, 40.0), (-2.0, 7.0e9, 8.2e6, 60.0)):
            for seed, noise in ((0, -0.01), (1, 0.01)):
                rows.append({"trial_id": f"{rule}{phi}{seed}", "task": "pose", "rule": rule, "rule_name": rule,
                             "phi": phi, "seed": seed, "status": "done", "macs": macs, "params": params,
                             "latency_ms": lat, "AP": 0.5 + 0.1 * (phi + 4) + bonus + noise})
    rows.append({"trial_id": "broken", "task": "pose", "rule": "reference", "rule_name": "reference", "phi": -1.0,
                 "seed": 0, "status": "failed", "macs": None, "params": None, "latency_ms": None, "AP": None})
    return pd.DataFrame(rows)


def test_seed_means_and_front_table():
    df = _pose_table()
    points = finished_points(df, ["AP", "macs"])
    assert len(points) == 6  # failed trial dropped, two seeds averaged
    point = points.set_index(["rule", "phi"]).loc[("reference", -2.0)]
    assert point["AP"] == pytest.approx(0.72) and point["n_seeds"] == 2
    assert point["AP_ci_low"] <= 0.72 <= point["AP_ci_high"]  # the seeds' spread, drawn as error bars
    front = front_table(df, "AP", "macs")
    assert list(zip(front["rule"], front["phi"])) == [("reference", -4.0), ("reference", -3.0), ("reference", -2.0)]


def test_tradeoff_plots_are_written(tmp_path):
    paths = plot_results(_pose_table(), tmp_path, with_reported=True)
    names = sorted(p.name for p in paths)
    assert names == sorted([f"AP_vs_{c}.{s}" for c in ("macs", "params", "latency_ms") for s in ("png", "svg")]
                           + ["edf_AP.png", "edf_AP.svg"])
    assert all(p.stat().st_size > 1000 for p in paths)
    svg = (tmp_path / "AP_vs_macs.svg").read_text()
    assert "H-4" in svg and "Pareto front" in svg and "paper, as reported" in svg


def fake_pose_task(trial, spec, trial_dir):
    return {"AP": 0.4 + 0.05 * (trial.phi + 4), "macs": 1e9 * 2 ** (trial.phi + 4), "params": 1e6 * (trial.phi + 5)}


register_task("test_fake_pose", fake_pose_task, replace=True)


def test_plot_sweep_on_a_run_folder(tmp_path):
    coco = SweepSpec(name="c", task="test_fake_pose", phi=(-4.0, -3.0), rules=("reference",),
                     output=str(tmp_path / "coco"), data=DataSpec(kind="coco", dir=str(tmp_path / "nodata")),
                     latency=LatencySpec(enabled=False))
    run_sweep(coco, progress=False)
    paths = plot_sweep(tmp_path / "coco")
    assert sorted(p.name for p in paths) == ["AP_vs_macs.png", "AP_vs_macs.svg", "AP_vs_params.png", "AP_vs_params.svg",
                                             "edf_AP.png", "edf_AP.svg"]
    assert "paper, as reported" in (tmp_path / "coco/plots/AP_vs_macs.svg").read_text()  # COCO: paper points

    synthetic = coco.replace(output=str(tmp_path / "syn"), data=DataSpec(kind="synthetic", dir=str(tmp_path / "d")))
    run_sweep(synthetic, progress=False)
    plot_sweep(tmp_path / "syn")
    assert "paper, as reported" not in (tmp_path / "syn/plots/AP_vs_macs.svg").read_text()
    assert json.loads((tmp_path / "syn/spec.json").read_text())["data"]["kind"] == "synthetic"


def test_profile_only_plots_cost_against_phi(tmp_path):
    spec = SweepSpec(name="p", task="profile", phi=(-4.0, -3.0, -2.0), rules=("efficienthrnet", "width_only"),
                     output=str(tmp_path / "p"), latency=LatencySpec(enabled=False))
    run_sweep(spec, progress=False)
    paths = plot_sweep(tmp_path / "p")
    assert sorted(p.name for p in paths) == ["macs_vs_phi.png", "macs_vs_phi.svg", "params_vs_phi.png",
                                             "params_vs_phi.svg"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_registered_plotter_draws_its_task(tmp_path, monkeypatch):
    from efficienthrnet import pareto, tasks

    spec = SweepSpec(name="f", task="test_fake_pose", phi=(-4.0,), rules=("reference",), output=str(tmp_path / "f"),
                     latency=LatencySpec(enabled=False))
    run_sweep(spec, progress=False)
    drawn = []
    monkeypatch.setitem(tasks.TASKS, "test_fake_pose", tasks.TASKS["test_fake_pose"])  # restored afterwards
    pareto.register_plotter("test_fake_pose", lambda run_dir: drawn.append(run_dir) or [run_dir / "custom.png"])
    assert plot_sweep(tmp_path / "f") == [tmp_path / "f" / "custom.png"]
    assert drawn == [tmp_path / "f"]


def test_task_functions_are_imported_on_first_use(monkeypatch):
    from efficienthrnet import sweep, tasks

    monkeypatch.setitem(tasks.TASKS, "test_plugin", tasks.Task("test_plugin", "tests_plugin_that_does_not_exist:run"))
    with pytest.raises(ModuleNotFoundError, match="tests_plugin_that_does_not_exist"):
        sweep.get_task("test_plugin")
    monkeypatch.setitem(tasks.TASKS, "test_plugin", tasks.Task("test_plugin", "efficienthrnet.trials:no_such_trial"))
    with pytest.raises(ValueError, match="'efficienthrnet.trials:no_such_trial'.*no function 'no_such_trial'"):
        sweep.get_task("test_plugin")
    assert sweep.get_task("classify").__name__ == "run_classify_trial"


def test_onnxruntime_latency_gets_its_own_tradeoff_plot(tmp_path):
    df = _pose_table()
    df["latency_onnxruntime_ms"] = df["latency_ms"] * 1.1  # a sweep timed with [latency] backend = "onnxruntime"
    names = {p.name for p in plot_results(df, tmp_path)}
    assert {"AP_vs_latency_onnxruntime_ms.png", "AP_vs_latency_ms.png"} <= names


def test_cost_axis_is_logarithmic_only_across_a_decade():
    # Inside one decade the log axis labelled every minor tick (the demo's 1.7e8 .. 2.4e8 overlapped).
    assert not log_axis_pays(pd.Series([1.69e8, 2.28e8, 2.36e8]))
    assert log_axis_pays(pd.Series([1.6e8, 5.4e9]))
    assert not log_axis_pays(pd.Series([0.0, 3e8]))
