"""Pareto fronts of a sweep's results table and the plots of accuracy against cost.

`pareto_front(df, metric, cost)` keeps the rows that no other row beats: none is at most as
costly and at least as accurate while strictly better in one of the two. `plot_sweep(run_dir)`
draws, for a sweep with accuracy figures, AP against MACs (log scale), params and latency, one
series per scaling rule with every point labelled by its phi and the front drawn across all
rules (plus the paper's as-reported H0..H-4 where the sweep ran on COCO); for a
complexity-only sweep it draws each cost against phi, one line per rule. Every figure is saved
as PNG and SVG under OUT/plots/.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import pandas as pd

from . import tasks
from .analysis import compare_rules, error_edf, finished, rank_agreement, summarize_results

PLOTS_DIR = "plots"
FORMATS = ("png", "svg")
#: Cost columns of the results table that get a plot, with their axis labels and log scale.
COSTS = {
    "macs": ("MACs (multiply-accumulates, batch 1)", True),
    "params": ("trainable parameters", False),
    "latency_ms": ("latency, median forward pass (ms)", False),
    "latency_onnxruntime_ms": ("latency of the ONNX export in onnxruntime (ms)", False),
}
METRIC_LABELS = {"AP": "AP (COCO OKS, pycocotools)", "top1": "top-1 accuracy"}


def pareto_mask(df: pd.DataFrame, metric: str = "AP", cost: str = "macs") -> pd.Series:
    """Boolean Series: True where a row is on the front (max ``metric``, min ``cost``).

    Rows with a missing metric or cost are never on the front. Exact ties (same cost and same
    metric) are all kept; of rows with the same cost only the most accurate ones are.
    """
    for column in (metric, cost):
        if column not in df.columns:
            raise ValueError(f"column {column!r} is not in the table; it has {list(df.columns)}")
    values = df[[cost, metric]].apply(pd.to_numeric, errors="coerce")
    valid = values.dropna()
    mask = pd.Series(False, index=df.index)
    best = -math.inf  # best metric among strictly cheaper rows
    for _, group in valid.groupby(cost, sort=True):
        top = group[metric].max()
        if top > best:
            mask.loc[group.index[group[metric] == top]] = True
            best = top
    return mask


def pareto_front(df: pd.DataFrame, metric: str = "AP", cost: str = "macs") -> pd.DataFrame:
    """The rows of ``df`` on the Pareto front, cheapest first (see `pareto_mask`)."""
    front = df[pareto_mask(df, metric, cost)]
    return front.sort_values([cost, metric], ascending=[True, False], kind="stable")


# ----------------------------------------------------------------------------------- tables


def finished_points(df: pd.DataFrame, columns: Sequence[str]) -> pd.DataFrame:
    """Finished trials averaged over seeds: one row per (rule, phi) with the mean of ``columns``.

    Each column m also gets `m_ci_low` / `m_ci_high` (95 % bootstrap over seeds; NaN with one
    seed) and the row its `n_seeds`. With several training budgets (`steps`) only the longest
    is kept: the plots and fronts show the full-budget result, `rank_agreement` the proxies.
    """
    if df.empty:
        return df
    done = finished(df)
    if "steps" in done.columns and done["steps"].notna().any():
        done = done[done["steps"] == done["steps"].max()]
    present = [c for c in columns if c in done.columns]
    numeric = done[["rule", "phi", *(["seed"] if "seed" in done.columns else []), *present]].copy()
    numeric[present] = numeric[present].apply(pd.to_numeric, errors="coerce")
    summary = summarize_results(numeric, metrics=present)
    points = summary[["rule", "phi", "n_seeds"]].copy()
    for c in present:
        points[c] = summary[f"{c}_mean"]
        points[f"{c}_ci_low"], points[f"{c}_ci_high"] = summary[f"{c}_ci_low"], summary[f"{c}_ci_high"]
    return points


def reported_points() -> pd.DataFrame:
    """The paper's H0..H-4 as reported (Tables 3/4): params, "FLOPs" (really MACs), val AP, FPS."""
    from .complexity import AS_REPORTED

    rows = [{"model": r.model, "phi": float(r.phi), "params": r.params, "macs": r.flops, "AP": r.val_ap / 100,
             "latency_ms": 1e3 / r.fps_jetson_nx} for r in AS_REPORTED.values()]
    return pd.DataFrame(rows).sort_values("phi")


# ----------------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on servers and in tests
    import matplotlib.pyplot as plt

    return plt


def _save(fig, out_base: Path) -> list[Path]:
    out_base.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in FORMATS:
        path = out_base.with_suffix(f".{fmt}")
        fig.savefig(path, dpi=120, bbox_inches="tight")
        paths.append(path)
    return paths


def _finish(plt, fig, ax, title: str, out_base: Path) -> list[Path]:
    """Title, grid and legend, then PNG + SVG; the figure is closed whatever happens."""
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    try:
        return _save(fig, out_base)
    finally:
        plt.close(fig)


def plot_tradeoff(points: pd.DataFrame, cost: str, out_base: Path, metric: str = "AP",
                  reported: pd.DataFrame | None = None, title: str = "") -> list[Path]:
    """``metric`` against ``cost``: one series per rule, phi labels, the front across all rules."""
    plt = _pyplot()
    label, log = COSTS.get(cost, (cost, False))
    usable = points.dropna(subset=[cost, metric])
    if usable.empty:
        raise ValueError(f"no finished trial has both {metric!r} and {cost!r}; nothing to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for rule, group in usable.groupby("rule", sort=True):
        group = group.sort_values(cost)
        line, = ax.plot(group[cost], group[metric], marker="o", linestyle=":", label=f"rule {rule}")
        yerr = _ci_error_bars(group, metric)
        if yerr is not None:
            ax.errorbar(group[cost], group[metric], yerr=yerr, fmt="none", ecolor=line.get_color(), capsize=3)
        for _, row in group.iterrows():
            ax.annotate(f"{row['phi']:g}", (row[cost], row[metric]), textcoords="offset points", xytext=(4, 4),
                        fontsize=8)
    front = pareto_front(usable, metric, cost)
    ax.plot(front[cost], front[metric], drawstyle="steps-post", color="black", linewidth=1.2, alpha=0.7,
            label="Pareto front")
    if reported is not None and cost in reported.columns:
        ax.plot(reported[cost], reported[metric], marker="s", linestyle="--", color="grey",
                label="paper, as reported" + (" (FPS: Jetson NX)" if cost == "latency_ms" else ""))
        for _, row in reported.iterrows():
            ax.annotate(row["model"], (row[cost], row[metric]), textcoords="offset points", xytext=(4, -10),
                        fontsize=8, color="grey")
    if log and log_axis_pays(usable[cost]):
        ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel(METRIC_LABELS.get(metric, metric))
    return _finish(plt, fig, ax, title or f"{metric} against {cost} (labels: phi)", out_base)


def log_axis_pays(values: pd.Series, span: float = 10.0) -> bool:
    """A log cost axis only when the costs span at least a decade: inside one, matplotlib labels
    the minor ticks (1.7e8, 1.8e8, ...), which overlap, and a linear axis shows the same thing."""
    values = values[values > 0]
    return not values.empty and values.max() / values.min() >= span


def _ci_error_bars(group: pd.DataFrame, metric: str):
    """Asymmetric error bars (below, above the mean) from the CI columns, or None if there are none."""
    low, high = f"{metric}_ci_low", f"{metric}_ci_high"
    if low not in group.columns or group[low].isna().all():
        return None
    below = (group[metric] - group[low]).clip(lower=0).fillna(0)
    above = (group[high] - group[metric]).clip(lower=0).fillna(0)
    return [below.to_numpy(), above.to_numpy()]


def plot_edf(df: pd.DataFrame, out_base: Path, metric: str = "AP", cost: str | None = "macs",
             title: str = "") -> list[Path]:
    """The error EDF of each rule over all its finished trials (cost-normalised when costs differ)."""
    plt = _pyplot()
    edf = error_edf(df, metric, cost)
    normalised = "weight" in edf.columns and edf["weight"].nunique() > 1
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for rule, group in edf.groupby("rule", sort=True):
        ax.step([0.0, *group["error"]], [0.0, *group["cum_fraction"]], where="post", label=f"rule {rule}")
    ax.set_xlabel(f"error (1 - {metric})")
    ax.set_ylabel("cumulative fraction of trials" + (" (cost-normalised)" if normalised else ""))
    ax.set_ylim(0, 1.02)
    return _finish(plt, fig, ax, title or f"error EDF per rule ({metric})", out_base)


def plot_cost_vs_phi(points: pd.DataFrame, cost: str, out_base: Path, title: str = "") -> list[Path]:
    """One cost against phi, one line per rule (complexity-only sweeps)."""
    plt = _pyplot()
    label, log = COSTS.get(cost, (cost, False))
    usable = points.dropna(subset=[cost])
    if usable.empty:
        raise ValueError(f"no finished trial has {cost!r}; nothing to plot")
    fig, ax = plt.subplots(figsize=(6.4, 4.6))
    for rule, group in usable.groupby("rule", sort=True):
        group = group.sort_values("phi")
        ax.plot(group["phi"], group[cost], marker=".", label=f"rule {rule}")
    if log:
        ax.set_yscale("log")
    ax.set_xlabel("phi (compound coefficient)")
    ax.set_ylabel(label)
    return _finish(plt, fig, ax, title or f"{cost} against phi", out_base)


def plot_results(df: pd.DataFrame, out_dir: str | os.PathLike, metric: str = "AP",
                 with_reported: bool = False, name: str = "") -> list[Path]:
    """All plots of a results table into ``out_dir``: trade-offs if ``metric`` has values, else cost vs phi."""
    out = Path(out_dir)
    points = finished_points(df, [metric, *COSTS])
    if points.empty:
        raise ValueError("the results table has no finished trial; nothing to plot")
    costs = [c for c in COSTS if c in points.columns and points[c].notna().any()]
    paths: list[Path] = []
    prefix = f"{name}: " if name else ""
    if metric in points.columns and points[metric].notna().any():
        reported = reported_points() if with_reported else None
        for cost in costs:
            paths += plot_tradeoff(points, cost, out / f"{metric}_vs_{cost}", metric, reported,
                                   title=f"{prefix}{metric} against {cost} (labels: phi; bars: 95 % CI over seeds)")
        paths += plot_edf(df, out / f"edf_{metric}", metric, title=f"{prefix}error EDF per rule ({metric})")
    else:
        for cost in costs:
            paths += plot_cost_vs_phi(points, cost, out / f"{cost}_vs_phi", title=f"{prefix}{cost} against phi")
    return paths


def register_plotter(task: str, fn: Callable[[Path], list[Path]]) -> None:
    """Make `plot_sweep` call ``fn(run_dir)`` for sweeps of ``task`` (its entry in the task table)."""
    tasks.register_plotter(task, fn)


def plot_sweep(run_dir: str | os.PathLike, metric: str = "AP") -> list[Path]:
    """Plots of a sweep folder (its trials/ records) into RUN_DIR/plots/; returns the PNG and SVG paths.

    A task whose entry in `efficienthrnet.tasks` names a plotter is drawn by it; the others get the
    standard plots, with the paper's as-reported points when the sweep's spec ran on COCO data.
    """
    from .sweep import load_results, load_sweep_spec

    run_dir = Path(run_dir)
    spec = load_sweep_spec(run_dir)
    plot = None if spec is None else tasks.plotter(spec.task)
    if plot is not None:
        return plot(run_dir)
    df = load_results(run_dir)
    on_coco = spec is not None and spec.data is not None and spec.data.kind == "coco"
    return plot_results(df, run_dir / PLOTS_DIR, metric, with_reported=on_coco, name=spec.name if spec else "")


COMPARISON_CSV = "comparison.csv"
RANK_AGREEMENT_CSV = "rank_agreement.csv"


def compare_sweep(run_dir: str | os.PathLike, metric: str = "AP", cost: str = "macs"):
    """`compare_rules` (and `rank_agreement` when the sweep has several training budgets) of a sweep folder.

    Writes RUN_DIR/comparison.csv (and RUN_DIR/rank_agreement.csv); returns (comparison, agreement or None).
    """
    from .sweep import load_results

    run_dir = Path(run_dir)
    df = load_results(run_dir)
    comparison = compare_rules(df, metric, cost)
    if comparison.empty:
        raise ValueError(f"{run_dir}: no two rules share a budget (or phi) with finished trials that have "
                         f"{metric!r}; a comparison needs a sweep over at least two rules")
    comparison.to_csv(run_dir / COMPARISON_CSV, index=False)
    agreement = None
    if "steps" in df.columns and df["steps"].nunique() > 1:
        agreement = rank_agreement(df, metric, by="steps")
        agreement.to_csv(run_dir / RANK_AGREEMENT_CSV, index=False)
    return comparison, agreement


def front_table(df: pd.DataFrame, metric: str = "AP", cost: str = "macs") -> pd.DataFrame:
    """The front over finished trials (seed means), with its columns only: rule, phi, metric, cost."""
    points = finished_points(df, [metric, cost])
    return pareto_front(points, metric, cost)[["rule", "phi", metric, cost]].reset_index(drop=True)


__all__ = [
    "compare_rules",
    "compare_sweep",
    "finished_points",
    "front_table",
    "pareto_front",
    "pareto_mask",
    "plot_cost_vs_phi",
    "plot_edf",
    "plot_results",
    "plot_sweep",
    "plot_tradeoff",
    "rank_agreement",
    "register_plotter",
    "reported_points",
    "summarize_results",
]
