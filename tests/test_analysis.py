"""Seed summaries, rule comparisons, EDFs and rank agreement on tables whose answer is known."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from efficienthrnet.analysis import compare_rules, error_edf, mean_ci, rank_agreement, summarize_results


def _table(rows):
    df = pd.DataFrame(rows)
    df["status"] = "done"
    df["task"] = "pose"
    return df


def _two_rules(margin: float, seeds: int = 6, noise: float = 0.01, seed: int = 0):
    """Rule `a` beats rule `b` by `margin` AP at each of two budgets, plus seed noise."""
    rng = np.random.default_rng(seed)
    rows = []
    for budget, base in ((1e8, 0.4), (4e8, 0.5)):
        for rule, phi, shift in (("a", -4.0, margin), ("b", -3.5, 0.0)):
            for s in range(seeds):
                rows.append({"rule": rule, "budget_macs": budget, "phi": phi + np.log2(budget / 1e8), "seed": s,
                             "AP": base + shift + rng.normal(0, noise), "macs": budget * 0.95})
    return _table(rows)


def test_summary_has_mean_std_and_ci_per_design():
    df = _table([{"rule": "a", "phi": -4.0, "seed": s, "AP": ap, "macs": 1e8} for s, ap in enumerate((0.4, 0.5, 0.6))]
                + [{"rule": "a", "phi": -3.0, "seed": 0, "AP": 0.7, "macs": 2e8}])
    summary = summarize_results(df)
    assert list(summary["phi"]) == [-4.0, -3.0]
    three, one = summary.iloc[0], summary.iloc[1]
    assert three["n_seeds"] == 3 and three["seeds"] == "0 1 2"
    assert three["AP_mean"] == pytest.approx(0.5)
    assert three["AP_std"] == pytest.approx(0.1)
    assert 0.4 <= three["AP_ci_low"] < 0.5 < three["AP_ci_high"] <= 0.6
    assert three["macs_ci_low"] == three["macs_ci_high"] == 1e8  # a constant column has no spread
    # One seed: the spread is unknown, so the std and CI are empty, not zero-width.
    assert one["n_seeds"] == 1 and one["AP_mean"] == pytest.approx(0.7)
    assert np.isnan(one["AP_std"]) and np.isnan(one["AP_ci_low"]) and np.isnan(one["AP_ci_high"])


def test_summary_ignores_failed_trials_and_groups_by_budget():
    df = _two_rules(0.05, seeds=2)
    failed = df.iloc[[0]].assign(status="failed", AP=np.nan)
    summary = summarize_results(pd.concat([df, failed], ignore_index=True))
    assert len(summary) == 4  # 2 rules x 2 budgets
    assert set(summary["n_seeds"]) == {2}
    assert {"budget_macs", "phi", "rule", "AP_mean", "AP_ci_low"} <= set(summary.columns)


def test_mean_ci_covers_the_mean_and_narrows_with_more_seeds():
    rng = np.random.default_rng(1)
    wide = mean_ci(rng.normal(0.5, 0.05, 6))
    narrow = mean_ci(rng.normal(0.5, 0.05, 40))
    assert wide[0] < wide[1] and narrow[0] < 0.5 < narrow[1]
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


def test_compare_rules_finds_a_clear_winner():
    comparison = compare_rules(_two_rules(margin=0.05), metric="AP")
    assert len(comparison) == 2  # one pair at each of two budgets
    for _, row in comparison.iterrows():
        assert (row["rule_a"], row["rule_b"]) == ("a", "b")
        assert row["diff"] == pytest.approx(0.05, abs=0.02)
        assert row["ci_low"] > 0  # the interval excludes "no difference"
        assert row["p_a_better"] > 0.99
        assert row["phi_a"] != row["phi_b"]  # matched by cost, not by phi
        assert row["cost_a"] == pytest.approx(row["cost_b"])


def test_compare_rules_identical_rules_are_a_coin_flip():
    df = _two_rules(margin=0.0, noise=0.0)
    row = compare_rules(df).iloc[0]
    assert row["diff"] == pytest.approx(0.0)
    assert row["p_a_better"] == pytest.approx(0.5)
    assert row["ci_low"] == row["ci_high"] == pytest.approx(0.0)


def test_compare_rules_one_seed_has_no_probability():
    row = compare_rules(_two_rules(margin=0.05, seeds=1)).iloc[0]
    assert row["n_a"] == 1 and np.isnan(row["p_a_better"]) and np.isnan(row["ci_low"])


def test_compare_rules_names_a_missing_metric():
    with pytest.raises(ValueError, match="'top1'"):
        compare_rules(_two_rules(0.05), metric="top1")


def _budgets(short_ap, long_ap, seeds=2):
    rows = []
    for steps, aps in ((150, short_ap), (500, long_ap)):
        for i, ap in enumerate(aps):
            for s in range(seeds):
                rows.append({"rule": "r", "phi": float(-5 + i), "steps": steps, "seed": s, "AP": ap + 0.001 * s})
    return _table(rows)


def test_rank_agreement_perfectly_preserved_ranking_is_tau_one():
    table = rank_agreement(_budgets([0.1, 0.2, 0.3, 0.4, 0.5], [0.3, 0.4, 0.5, 0.6, 0.7]))
    row = table.iloc[0]
    assert (row["steps"], row["steps_reference"], row["n_designs"]) == (150, 500, 5)
    assert row["tau"] == pytest.approx(1.0)
    assert row["ci_high"] == pytest.approx(1.0)


def test_rank_agreement_reversed_ranking_is_tau_minus_one():
    row = rank_agreement(_budgets([0.5, 0.4, 0.3, 0.2, 0.1], [0.3, 0.4, 0.5, 0.6, 0.7])).iloc[0]
    assert row["tau"] == pytest.approx(-1.0)


def test_rank_agreement_needs_two_budgets():
    df = _budgets([0.1, 0.2], [0.3, 0.4])
    with pytest.raises(ValueError, match="at least two values of 'steps'"):
        rank_agreement(df[df["steps"] == 500])


def test_error_edf_weights_each_rule_evenly_over_cost_bins():
    # Rule b has three cheap trials and one dear one; normalised, its dear trial weighs half.
    df = _table([{"rule": "a", "phi": p, "seed": 0, "AP": ap, "macs": m}
                 for p, ap, m in ((-4, 0.4, 1e8), (-3, 0.6, 1e9))]
                + [{"rule": "b", "phi": p, "seed": s, "AP": ap, "macs": m}
                   for p, s, ap, m in ((-4, 0, 0.3, 1e8), (-4, 1, 0.31, 1e8), (-4, 2, 0.32, 1e8), (-2, 0, 0.9, 1e9))])
    edf = error_edf(df, "AP", cost="macs")
    b = edf[edf["rule"] == "b"]
    assert list(b["error"]) == sorted(b["error"])
    assert b["cum_fraction"].iloc[-1] == pytest.approx(1.0)
    assert b["weight"].iloc[0] == pytest.approx(0.5)  # the dear trial: alone in its bin
    assert b["cum_fraction"].iloc[0] == pytest.approx(0.5)
    unweighted = error_edf(df, "AP", cost=None)
    assert unweighted[unweighted["rule"] == "b"]["cum_fraction"].iloc[0] == pytest.approx(0.25)
