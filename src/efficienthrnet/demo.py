"""`make demo` (``python -m efficienthrnet.demo``): a small scaling study on the embedded default, CPU-sized.

1. Makes the synthetic COCO-format dataset (once) under OUT/data/synthetic.
2. Runs ``experiments/scaling_demo.toml``: the paper's compound rule against width-only scaling at
   two MACs budgets (each rule its own phi per budget), two seeds each, trained and evaluated
   (pycocotools AP) at a proxy size that follows each rule's own input resolution, into OUT/study.
3. Runs ``experiments/profile_phi.toml``: exact params / MACs against phi for several scaling
   rules, into OUT/profile_phi.
4. Writes results.csv, summary.csv (seed means with 95 % bootstrap CIs), comparison.csv (the rules'
   AP difference at each budget, its CI and P(A > B)), the plots (AP against MACs with CI bars, the
   error EDF per rule) and a picture of the best design's predictions, then prints the tables.

Re-running resumes: finished trials are kept, interrupted ones continue from their checkpoints.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .sweep import SweepSpec, load_spec, run_sweep

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"  # package data (experiments/ links here)
STUDY = "scaling_demo.toml"
PROFILE = "profile_phi.toml"
DEFAULT_OUT = Path("demo_out")


def experiment_path(name: str, experiments_dir: Path = EXPERIMENTS_DIR) -> Path:
    """A shipped sweep spec (package data, so installed wheels have them too)."""
    path = experiments_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} not found; reinstall efficienthrnet (the specs ship "
                                f"with the package) or pass --experiments DIR")
    return path


def demo_specs(out: Path, experiments_dir: Path = EXPERIMENTS_DIR) -> tuple[SweepSpec, SweepSpec]:
    """The study and profile specs with their outputs (and the synthetic data) under ``out``."""
    study = load_spec(experiment_path(STUDY, experiments_dir))
    data = dataclasses.replace(study.data, dir=str(out / "data" / "synthetic"))
    study = study.replace(output=str(out / "study"), data=data)
    profile = load_spec(experiment_path(PROFILE, experiments_dir))
    return study, profile.replace(output=str(out / "profile_phi"))


def best_design(summary) -> dict:
    """The design (rule, budget, phi) with the highest mean AP over its seeds, as a dict of its summary row."""
    if "AP_mean" not in summary.columns or summary["AP_mean"].isna().all():
        raise ValueError("no finished pose trial has an AP; see the failed trials' errors in results.csv")
    return summary.loc[summary["AP_mean"].idxmax()].to_dict()


def best_trial_of(df, design: dict) -> dict:
    """The finished trial of ``design`` with the highest AP (the one whose predictions are drawn)."""
    done = df[df["status"] == "done"] if "status" in df.columns else df
    rule = done["rule_name"] if "rule_name" in done.columns else done["rule"]
    mine = done[(rule == design["rule"]) & (done["phi"] == design["phi"])]
    if mine.empty:
        raise ValueError(f"no finished trial of rule {design['rule']!r} at phi {design['phi']:g}")
    return mine.loc[mine["AP"].idxmax()].to_dict()


def format_ci(mean: float, low: float, high: float, digits: int = 3) -> str:
    """``0.512 [0.498, 0.526]``, or the mean alone where one seed gives no interval."""
    if low != low or high != high:  # NaN: one seed
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def draw_best_predictions(sweep_dir: Path, trial_id: str, data_spec: str, out_png: Path,
                          num_images: int = 4, split: str = "val") -> Path:
    """A grid of the first validation images with the trial's predicted skeletons drawn on them."""
    import cv2
    import numpy as np

    from .data.coco import load_coco_annotations, resolve_dataset
    from .keypoints import get_schema
    from .predict import PredictConfig, Predictor, read_image
    from .train import load_for_inference
    from .visualize import draw_people

    cfg, model, variables = load_for_inference(sweep_dir / "trials" / trial_id / "run")
    predictor = Predictor(model, variables, cfg.keypoints, PredictConfig(input_size=cfg.input_size))
    annotation_file, image_dir = resolve_dataset(data_spec, split)
    coco = load_coco_annotations(annotation_file, get_schema(cfg.keypoints))  # the reader's checks
    tiles = []
    for image_id in sorted(coco.getImgIds())[:num_images]:
        path = image_dir / coco.loadImgs(image_id)[0]["file_name"]
        rgb = read_image(path)
        found = predictor(rgb)
        tiles.append(draw_people(rgb, found.keypoints, cfg.keypoints, scores=found.scores, min_person_score=0.1))
    side = max(max(t.shape[:2]) for t in tiles)
    tiles = [cv2.copyMakeBorder(t, 0, side - t.shape[0], 0, side - t.shape[1], cv2.BORDER_CONSTANT) for t in tiles]
    grid = np.concatenate(tiles, axis=1)
    scale = max(1, 256 // side)  # small synthetic images are enlarged for viewing
    grid = cv2.resize(grid, None, fx=scale, fy=scale, interpolation=cv2.INTER_NEAREST)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out_png), cv2.cvtColor(grid, cv2.COLOR_RGB2BGR)):
        raise OSError(f"could not write {out_png}")
    return out_png


def run_demo(out: str | Path = DEFAULT_OUT, executor: str = "local", progress: bool = True,
             experiments_dir: Path = EXPERIMENTS_DIR) -> dict:
    """Run both demo sweeps, compare the rules, plot, draw the best design; returns paths and tables."""
    from .pareto import COMPARISON_CSV, compare_sweep, plot_sweep
    from .sweep import SUMMARY_CSV, load_results, summarize_results

    out = Path(out)
    study, profile = demo_specs(out, experiments_dir)
    timings = {}
    start = time.perf_counter()
    run_sweep(study, executor=executor, progress=progress)
    timings["study_s"] = time.perf_counter() - start
    start = time.perf_counter()
    run_sweep(profile, executor=executor, progress=progress)
    timings["profile_s"] = time.perf_counter() - start

    table = load_results(study.output)  # also writes results.csv and summary.csv
    summary = summarize_results(table)
    comparison, _ = compare_sweep(study.output)
    plots = plot_sweep(study.output) + plot_sweep(profile.output)
    best = best_design(summary)
    picture = draw_best_predictions(Path(study.output), best_trial_of(table, best)["trial_id"],
                                    study.data.spec_string, out / "best_predictions.png")
    study_dir = Path(study.output)
    return {
        "results": [study_dir / "results.csv", study_dir / SUMMARY_CSV, study_dir / COMPARISON_CSV,
                    Path(profile.output) / "results.csv"],
        "plots": plots,
        "picture": picture,
        "best": best,
        "table": table,
        "summary": summary,
        "comparison": comparison,
        "timings": timings,
    }


def summary_view(summary):
    """The study's designs for the terminal and the README: AP mean [95 % CI] per rule and budget."""
    import pandas as pd

    rows = []
    for _, row in summary.iterrows():
        rows.append({
            "rule": row["rule"], "budget MACs": f"{row['budget_macs']:.3g}", "phi": f"{row['phi']:g}",
            "input": int(row["input_size_mean"]), "MACs": f"{row['macs_mean']:.3g}", "seeds": int(row["n_seeds"]),
            "AP [95% CI]": format_ci(row["AP_mean"], row["AP_ci_low"], row["AP_ci_high"]),
            "AP50": f"{row['AP50_mean']:.3f}", "train s": f"{row['train_time_s_mean']:.0f}",
        })
    return pd.DataFrame(rows)


def comparison_view(comparison):
    """Rule A against rule B at each budget: the AP difference [95 % CI] and P(A > B)."""
    import pandas as pd

    return pd.DataFrame([{
        "budget MACs": f"{row['budget_macs']:.3g}", "A": f"{row['rule_a']} (phi {row['phi_a']:g})",
        "B": f"{row['rule_b']} (phi {row['phi_b']:g})",
        "AP A - B [95% CI]": format_ci(row["diff"], row["ci_low"], row["ci_high"]),
        "P(A > B)": f"{row['p_a_better']:.2f}",
    } for _, row in comparison.iterrows()])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efficienthrnet.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default ./demo_out)")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--experiments", default=str(EXPERIMENTS_DIR),
                        help=f"folder holding {STUDY} and {PROFILE} (default: the package's specs)")
    args = parser.parse_args(argv)
    result = run_demo(args.out, args.executor, experiments_dir=Path(args.experiments))
    print("\nscaling study (means over seeds, 95 % bootstrap CI):")
    print(summary_view(result["summary"]).to_string(index=False))
    print("\nrule against rule at equal cost:")
    print(comparison_view(result["comparison"]).to_string(index=False))
    best = result["best"]
    print(f"\nbest design: rule {best['rule']} at {best['budget_macs']:.3g} MACs (phi {best['phi']:g}), AP "
          f"{format_ci(best['AP_mean'], best['AP_ci_low'], best['AP_ci_high'])} over {int(best['n_seeds'])} seeds")
    print(f"sweeps took {result['timings']['study_s']:.0f} s (study) and {result['timings']['profile_s']:.0f} s "
          f"(profile_phi)")
    print("\ntables:", *result["results"], sep="\n  ")
    print("plots:", *[p for p in result["plots"] if p.suffix == ".png"], sep="\n  ")
    print(f"predictions of the best design's best seed: {result['picture']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
