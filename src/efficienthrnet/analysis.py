"""Statistics over a sweep's results table: seed summaries, rule comparisons, EDFs, proxy fidelity.

A trained trial is one draw of a noisy process, so nothing here reports a single seed as a
result: a design's figure is a mean over seeds with a bootstrap confidence interval, a rule
comparison is a difference of means with its interval and the probability that one rule beats
the other over seed resamples, and a cheap training budget is trusted only as far as it ranks
designs the way the longest budget does (Kendall's tau). The error EDF per rule is the
design-space view of pycls (Radosavovic et al., "On Network Design Spaces for Visual
Recognition"). Every function takes and returns plain pandas tables.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy import stats

#: Columns that say which design a trial is (a seed is not a design); those present group the table.
DESIGN_COLUMNS = ("task", "rule", "budget_macs", "phi", "steps")
#: Numeric columns that describe the trial, not a measurement of it.
NOT_METRICS = ("seed", "attempt")
CONFIDENCE = 0.95
N_RESAMPLES = 2000
STATUS_DONE = "done"


def finished(df: pd.DataFrame) -> pd.DataFrame:
    """Finished trials only, with the rule named by `rule_name` (a rule file's stem) when the table has it."""
    done = df[df["status"] == STATUS_DONE] if "status" in df.columns else df
    if "rule_name" in done.columns:
        done = done.drop(columns="rule").rename(columns={"rule_name": "rule"})
    return done.reset_index(drop=True)


def design_columns(df: pd.DataFrame) -> list[str]:
    """The design columns this table has (a table without budgets has no `budget_macs`)."""
    return [c for c in DESIGN_COLUMNS if c in df.columns and df[c].notna().any()]


def metric_columns(df: pd.DataFrame, keys: Sequence[str]) -> list[str]:
    """Numeric columns that are measurements: everything numeric except the design keys and seeds."""
    skip = set(keys) | set(NOT_METRICS)
    return [c for c in df.columns if c not in skip and pd.api.types.is_numeric_dtype(df[c])
            and not pd.api.types.is_bool_dtype(df[c])]


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def mean_ci(values: Sequence[float], confidence: float = CONFIDENCE, seed: int = 0) -> tuple[float, float]:
    """Percentile-bootstrap CI of the mean; (nan, nan) for fewer than two values (no spread to resample)."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if x.size < 2:
        return float("nan"), float("nan")
    if np.all(x == x[0]):
        return float(x[0]), float(x[0])
    res = stats.bootstrap((x,), np.mean, confidence_level=confidence, n_resamples=N_RESAMPLES,
                          method="percentile", random_state=_rng(seed))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def summarize_results(df: pd.DataFrame, metrics: Sequence[str] | None = None) -> pd.DataFrame:
    """One row per design (task, rule, budget, phi, steps: those present) over its finished seeds.

    Columns: the design keys, `n_seeds`, `seeds`, and for every metric column m: `m_mean`, `m_std`
    (sample std, ddof 1), `m_ci_low`, `m_ci_high` (95 % percentile bootstrap of the mean over
    seeds). With one seed the std and CI columns are empty (NaN), never a zero-width interval.
    """
    done = finished(df)
    keys = design_columns(done)
    if done.empty or not keys:
        return pd.DataFrame(columns=[*keys, "n_seeds"])
    metrics = list(metrics) if metrics is not None else metric_columns(done, keys)
    rows = []
    for values, group in done.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        row["n_seeds"] = len(group)
        if "seed" in group.columns:
            row["seeds"] = " ".join(str(s) for s in sorted(group["seed"]))
        for m in metrics:
            x = pd.to_numeric(group[m], errors="coerce").to_numpy(dtype=float)
            x = x[np.isfinite(x)]
            row[f"{m}_mean"] = float(x.mean()) if x.size else float("nan")
            row[f"{m}_std"] = float(x.std(ddof=1)) if x.size > 1 else float("nan")
            row[f"{m}_ci_low"], row[f"{m}_ci_high"] = mean_ci(x)
        rows.append(row)
    return pd.DataFrame(rows)


def _match_column(df: pd.DataFrame) -> str:
    """Rules are compared at matched cost when the sweep gave budgets, else at equal phi."""
    return "budget_macs" if "budget_macs" in design_columns(df) else "phi"


def _difference(a: np.ndarray, b: np.ndarray, confidence: float, seed: int) -> dict[str, float]:
    """Mean difference a - b, its bootstrap CI and P(mean a > mean b) over independent seed resamples."""
    diff = float(a.mean() - b.mean())
    if a.size < 2 or b.size < 2:
        return {"diff": diff, "ci_low": float("nan"), "ci_high": float("nan"), "p_a_better": float("nan")}
    res = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis=axis) - y.mean(axis=axis),
                          confidence_level=confidence, n_resamples=N_RESAMPLES, method="percentile",
                          vectorized=True, random_state=_rng(seed))
    dist = np.asarray(res.bootstrap_distribution)
    p = float(np.mean(dist > 0) + 0.5 * np.mean(dist == 0))  # ties split evenly: identical rules give 0.5
    low, high = res.confidence_interval
    if a.std() == 0 and b.std() == 0:
        low = high = diff
    return {"diff": diff, "ci_low": float(low), "ci_high": float(high), "p_a_better": p}


def compare_rules(df: pd.DataFrame, metric: str = "AP", cost: str = "macs",
                  confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Every pair of rules at every matched point: mean difference, its CI and P(A > B).

    Points are matched by `budget_macs` when the sweep gave budgets (each rule then has its own
    phi per budget, reported as `phi_a`, `phi_b`) and by phi otherwise; with several training
    budgets (`steps`) each is compared apart. `cost_a` / `cost_b` are the mean of ``cost`` of each
    side, so a reader sees how well the costs match. P(A > B) is the share of seed resamples in
    which A's mean beats B's; it is NaN when a side has fewer than two seeds.
    """
    done = finished(df)
    for column in (metric, "rule"):
        if column not in done.columns:
            raise ValueError(f"the results table has no {column!r} column; columns: {sorted(done.columns)}")
    match = _match_column(done)
    extra = ["steps"] if "steps" in design_columns(done) else []
    rules = sorted(done["rule"].dropna().unique())
    rows = []
    for values, group in done.groupby([match, *extra], sort=True):
        point = dict(zip([match, *extra], values if isinstance(values, tuple) else (values,)))
        by_rule = {r: g for r, g in group.groupby("rule")}
        for rule_a, rule_b in itertools.combinations(rules, 2):
            if rule_a not in by_rule or rule_b not in by_rule:
                continue
            a_rows, b_rows = by_rule[rule_a], by_rule[rule_b]
            a = pd.to_numeric(a_rows[metric], errors="coerce").dropna().to_numpy(dtype=float)
            b = pd.to_numeric(b_rows[metric], errors="coerce").dropna().to_numpy(dtype=float)
            if a.size == 0 or b.size == 0:
                continue
            row = {**point, "rule_a": rule_a, "rule_b": rule_b, "n_a": a.size, "n_b": b.size,
                   f"{metric}_a": float(a.mean()), f"{metric}_b": float(b.mean())}
            if match != "phi":
                row["phi_a"], row["phi_b"] = float(a_rows["phi"].iloc[0]), float(b_rows["phi"].iloc[0])
            if cost in done.columns:
                row["cost_a"] = float(pd.to_numeric(a_rows[cost], errors="coerce").mean())
                row["cost_b"] = float(pd.to_numeric(b_rows[cost], errors="coerce").mean())
            row.update(_difference(a, b, confidence, seed=len(rows)))
            rows.append(row)
    return pd.DataFrame(rows)


def rank_agreement(df: pd.DataFrame, metric: str = "AP", by: str = "steps",
                   confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Kendall's tau between the ranking of designs at each shorter budget and at the longest.

    A design is a (rule, budget or phi) point; its value at a budget is its mean over seeds. The
    CI resamples designs with replacement (paired across the two budgets). tau = 1 means the cheap
    budget orders the designs exactly as the longest one does; near 0, the proxy says nothing.
    """
    done = finished(df)
    for column in (metric, by):
        if column not in done.columns:
            raise ValueError(f"the results table has no {column!r} column; a sweep with several training "
                             f"budgets (`[train] steps = [150, 500]`) gives one")
    design = [c for c in ("task", "rule", _match_column(done)) if c in done.columns]
    means = done.groupby([*design, by])[metric].mean().unstack(by)
    budgets = sorted(means.columns)
    if len(budgets) < 2:
        raise ValueError(f"rank agreement needs at least two values of {by!r}; the table has {budgets}")
    longest = budgets[-1]
    rows = []
    for budget in budgets[:-1]:
        pair = means[[budget, longest]].dropna()
        x, y = pair[budget].to_numpy(dtype=float), pair[longest].to_numpy(dtype=float)
        row = {by: budget, f"{by}_reference": longest, "n_designs": len(pair)}
        if len(pair) < 2:
            row.update(tau=float("nan"), ci_low=float("nan"), ci_high=float("nan"), p_value=float("nan"))
        else:
            tau = stats.kendalltau(x, y)
            row.update(tau=float(tau.statistic), p_value=float(tau.pvalue))
            row["ci_low"], row["ci_high"] = _tau_ci(x, y, confidence)
        rows.append(row)
    return pd.DataFrame(rows)


def _tau_ci(x: np.ndarray, y: np.ndarray, confidence: float) -> tuple[float, float]:
    def tau(xs, ys):
        value = stats.kendalltau(xs, ys).statistic
        return value if np.isfinite(value) else 0.0  # a resample of tied designs carries no order

    if len(x) < 3:
        return float("nan"), float("nan")
    res = stats.bootstrap((x, y), tau, paired=True, vectorized=False, confidence_level=confidence,
                          n_resamples=N_RESAMPLES // 4, method="percentile", random_state=_rng(0))
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def error_edf(df: pd.DataFrame, metric: str = "AP", cost: str | None = "macs", bins: int = 4) -> pd.DataFrame:
    """Empirical distribution of the error (1 - metric) over every finished trial of each rule.

    When ``cost`` is given and the rules' costs differ, each trial is weighted so that every
    rule spreads the same total weight evenly over the cost bins it covers (log-spaced bins over
    the whole table), as pycls normalises design spaces for complexity; otherwise all trials
    weigh the same. Returns one row per trial: rule, error, weight, cum_fraction (sorted by error).
    """
    done = finished(df).dropna(subset=[metric])
    if done.empty:
        raise ValueError(f"no finished trial has {metric!r}; nothing to draw an EDF of")
    done = done.assign(error=1.0 - pd.to_numeric(done[metric]))
    done["weight"] = 1.0
    if cost is not None and cost in done.columns and done[cost].nunique() > 1:
        c = pd.to_numeric(done[cost]).to_numpy(dtype=float)
        edges = np.geomspace(c.min(), c.max(), bins + 1) if c.min() > 0 else np.linspace(c.min(), c.max(), bins + 1)
        done["cost_bin"] = np.clip(np.searchsorted(edges, c, side="right") - 1, 0, bins - 1)
        per_bin = done.groupby(["rule", "cost_bin"])["error"].transform("size")
        bins_of_rule = done.groupby("rule")["cost_bin"].transform("nunique")
        done["weight"] = 1.0 / (per_bin * bins_of_rule)
    parts = []
    for _, group in done.groupby("rule", sort=True):
        group = group.sort_values("error", kind="stable")
        group = group.assign(cum_fraction=group["weight"].cumsum() / group["weight"].sum())
        parts.append(group[["rule", "error", "weight", "cum_fraction"]])
    return pd.concat(parts, ignore_index=True)


__all__ = [
    "DESIGN_COLUMNS",
    "compare_rules",
    "design_columns",
    "error_edf",
    "finished",
    "mean_ci",
    "metric_columns",
    "rank_agreement",
    "summarize_results",
]
