"""The demo's choice of the best design and its tables, on a constructed study table."""

from __future__ import annotations

import pandas as pd

from efficienthrnet.analysis import compare_rules, summarize_results
from efficienthrnet.demo import best_design, best_trial_of, comparison_view, demo_specs, format_ci, summary_view
from efficienthrnet.sweep import expand_trials


def _study() -> pd.DataFrame:
    rows = []
    for budget, phis in ((1.7e8, {"efficienthrnet": -3.01, "width_only": -5.69}),
                         (2.5e8, {"efficienthrnet": -2.34, "width_only": -4.59})):
        for rule, phi in phis.items():
            for seed, noise in ((0, 0.0), (1, 0.02)):
                ap = 0.3 + (0.1 if rule == "efficienthrnet" else 0.0) + (0.05 if budget > 2e8 else 0.0) + noise
                rows.append({"trial_id": f"{rule}-{budget:g}-{seed}", "task": "pose", "rule": rule,
                             "rule_name": rule, "budget_macs": budget, "phi": phi, "seed": seed, "status": "done",
                             "AP": ap, "AP50": ap + 0.3, "macs": budget * 0.97, "input_size": 96,
                             "train_time_s": 60.0})
    return pd.DataFrame(rows)


def test_best_design_is_the_highest_seed_mean_and_its_best_seed_is_drawn():
    table = _study()
    best = best_design(summarize_results(table))
    assert (best["rule"], best["budget_macs"], best["n_seeds"]) == ("efficienthrnet", 2.5e8, 2)
    assert best["AP_mean"] == 0.46
    assert best_trial_of(table, best)["trial_id"] == "efficienthrnet-2.5e+08-1"


def test_tables_show_means_with_intervals_and_the_probability():
    table = _study()
    view = summary_view(summarize_results(table))
    assert len(view) == 4 and view["AP [95% CI]"].str.contains(r"\[").all()
    comparison = comparison_view(compare_rules(table))
    assert list(comparison["P(A > B)"]) == ["1.00", "1.00"]
    assert comparison["A"].str.startswith("efficienthrnet (phi").all()
    assert format_ci(0.5, float("nan"), float("nan")) == "0.500"  # one seed: no interval to show


def test_demo_spec_is_a_two_rule_two_budget_two_seed_study(tmp_path):
    study, profile = demo_specs(tmp_path)
    trials = expand_trials(study)
    assert len({t.rule for t in trials}) >= 2 and len({t.budget_macs for t in trials}) >= 2
    assert len({t.seed for t in trials}) >= 2 and study.resolution_scale is not None
    assert study.data.dir == str(tmp_path / "data" / "synthetic") and profile.output == str(tmp_path / "profile_phi")
