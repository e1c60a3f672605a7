"""`make demo`'s job end to end on tiny settings: the study's tables, plots and the best design's picture."""

from pathlib import Path

import pandas as pd

from efficienthrnet import demo

STUDY = """
name = "demo_study"
task = "pose"
budgets_macs = [3e7]
# the two shallowest rules at this budget: the test checks the wiring, compiles dominate its time
rules = ["efficienthrnet", "reference"]
seeds = [0, 1]
output = "unused"
[data]
kind = "synthetic"
dir = "unused"
[data.synthetic]
num_images = 10
image_size = 64
seed = 0
val_fraction = 0.2
max_people = 2
min_height = 0.55
[train]
steps = 2
batch_size = 2
resolution_scale = 0.125
checkpoint_every = 2
log_every = 1
progress = false
[evaluate]
split = "val"
flip = false
[latency]
enabled = false
"""

def test_demo_runs_the_study_and_writes_its_tables_plots_and_picture(tmp_path, capsys):
    experiments = tmp_path / "experiments"
    experiments.mkdir()
    (experiments / demo.STUDY).write_text(STUDY)
    out = tmp_path / "out"

    assert demo.main(["--out", str(out), "--experiments", str(experiments)]) == 0

    printed = capsys.readouterr().out
    study = out / "study"
    results = pd.read_csv(study / "results.csv")
    assert len(results) == 4 and (results["status"] == "done").all()
    # each rule has its own phi for the one budget, and trains at its own proxy size
    phis = results.groupby("rule_name")["phi"].first()
    assert phis["efficienthrnet"] == -4.89 and phis["reference"] == -4.97
    summary = pd.read_csv(study / "summary.csv")
    assert sorted(summary["n_seeds"]) == [2, 2]
    assert {"AP_mean", "AP_ci_low", "AP_ci_high"} <= set(summary.columns)
    comparison = pd.read_csv(study / "comparison.csv")
    assert len(comparison) == 1 and 0.0 <= comparison["p_a_better"].iloc[0] <= 1.0
    best = summary.loc[summary["AP_mean"].idxmax()]
    assert f"best design: {best['rule']}" in printed and "comparison.csv" in printed
    plots = {p.name for p in (study / "plots").iterdir()}
    assert any(name.startswith("edf_") and name.endswith(".png") for name in plots)
    assert any("macs" in name and name.endswith(".png") for name in plots)
    picture = out / "best_predictions.png"
    assert picture.is_file() and picture.stat().st_size > 1000


def test_best_design_is_the_highest_seed_mean():
    summary = pd.DataFrame({"rule": ["a", "b"], "AP_mean": [0.3, 0.4], "budget_macs": [1e8, 1e8]})
    assert demo.best_design(summary)["rule"] == "b"


def test_shipped_demo_study_is_two_rules_two_budgets_two_seeds():
    spec = demo.load_spec(demo.experiment_path(demo.STUDY))
    assert len(spec.rules) >= 2 and "width_only" in spec.rules and len(spec.seeds) >= 2
    assert len(spec.budgets_macs) >= 2 and spec.train["resolution_scale"] > 0


def test_missing_spec_names_the_fix(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="--experiments"):
        demo.experiment_path("nope.toml", Path(tmp_path))
