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


def test_best_predictions_picture_draws_the_trials_stored_predictions(tmp_path):
    """The picture is drawn from the trial's predictions.json (what its AP scored), with no
    checkpoint to load: one person stored on the first image changes only that tile."""
    import json

    import cv2
    import numpy as np

    from efficienthrnet.data.synthetic import make_synthetic_dataset
    from efficienthrnet.scaling import generate_config

    data = tmp_path / "data"
    make_synthetic_dataset(data, num_images=6, image_size=64, seed=0, val_fraction=0.5)
    run = tmp_path / "sweep" / "trials" / "t" / "run"
    run.mkdir(parents=True)
    (run / "config.json").write_text(json.dumps({"model": generate_config(-5.0).to_dict()}))
    predictions = run.parent / "predictions.json"
    first_val = 4  # image ids 1-3 are train, 4-6 val
    person = np.tile([20.0, 30.0, 0.9], (17, 1))
    person[:, 0] += np.arange(17)  # a line of joints across the image
    pictures = []
    for entries in ([], [{"image_id": first_val, "category_id": 1, "keypoints": person.ravel().tolist(),
                          "score": 0.8}]):
        predictions.write_text(json.dumps(entries))
        out = demo.draw_best_predictions(tmp_path / "sweep", "t", f"synthetic:{data}", tmp_path / "p.png",
                                         num_images=3)
        pictures.append(cv2.imread(str(out)))
    empty, drawn = pictures
    assert empty.shape == drawn.shape == (256, 3 * 256, 3)  # three 64 px tiles, enlarged 4x
    changed = np.any(empty != drawn, axis=2)
    assert changed[:, :256].sum() > 100 and not changed[:, 256:].any()

    stored = demo.stored_predictions(run.parent, 17)
    assert list(stored) == [first_val] and stored[first_val][0].shape == (1, 17, 3)
    np.testing.assert_allclose(stored[first_val][1], [0.8])


def test_best_predictions_picture_names_a_trial_never_evaluated(tmp_path):
    import pytest

    with pytest.raises(FileNotFoundError, match="predictions.json not found.*rerun the study"):
        demo.stored_predictions(tmp_path, 17)
