"""`make demo` (``python -m efficienthrnet.demo``): the main job on the embedded default, CPU-sized.

1. Makes the synthetic COCO-format dataset (once) under OUT/data/synthetic.
2. Runs ``experiments/demo_study.toml``, a scaling study: the compound rule against width-only
   scaling at two MACs budgets with two seeds each, every trial trained and evaluated (pycocotools
   AP) at its rule's own input size scaled down to a CPU-sized proxy, into OUT/study.
3. Writes the study's results.csv (one row per trial), summary.csv (seed means with 95 % CIs),
   comparison.csv (rule against rule per budget: difference, CI, P(A>B)) and plots (AP against
   MACs with CI error bars, the AP EDF per rule), and a picture of the best design's predictions on validation images; then prints the tables and where everything is.

Re-running resumes: finished trials are kept, interrupted ones continue from their checkpoints.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .sweep import DataSpec, SweepSpec, load_spec, run_sweep

EXPERIMENTS_DIR = Path(__file__).resolve().parent / "experiments"  # package data (experiments/ links here)
STUDY = "demo_study.toml"
DEFAULT_OUT = Path("demo_out")


def experiment_path(name: str, experiments_dir: Path = EXPERIMENTS_DIR) -> Path:
    """A shipped sweep spec (package data, so installed wheels have them too)."""
    path = experiments_dir / name
    if not path.is_file():
        raise FileNotFoundError(f"sweep spec {path} not found; reinstall efficienthrnet (the specs ship "
                                f"with the package) or pass --experiments DIR")
    return path


def demo_spec(out: Path, experiments_dir: Path = EXPERIMENTS_DIR) -> SweepSpec:
    """The study spec with its output (and the synthetic data) under ``out``."""
    study = load_spec(experiment_path(STUDY, experiments_dir))
    data = DataSpec(kind=study.data.kind, dir=str(out / "data" / "synthetic"), synthetic=study.data.synthetic)
    return study.replace(output=str(out / "study"), data=data)


def best_design(summary, metric: str = "AP") -> dict:
    """The design (a summary.csv row) with the highest seed-mean ``metric``."""
    column = f"{metric}_mean"
    if column not in summary.columns or summary[column].isna().all():
        raise ValueError(f"no finished pose trial has an {metric}; see the failed trials' errors in results.csv")
    return summary.loc[summary[column].idxmax()].to_dict()


def trials_of(df, design: dict):
    """The finished rows of the results table that belong to a summary row's design."""
    from .analysis import design_columns, finished

    done = finished(df)
    mask = True
    for key in design_columns(done):
        mask = mask & (done[key] == design[key])
    return done[mask]


def stored_predictions(trial_dir: Path, num_joints: int) -> dict[int, tuple]:
    """A pose trial's evaluation output (its COCO results file) as image id -> (keypoints
    [P, J, 3], scores [P]): the predictions its AP was scored on, with nothing recomputed."""
    import json

    import numpy as np

    from .sweep_store import PREDICTIONS_FILE

    path = trial_dir / PREDICTIONS_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the trial has not been evaluated; rerun the study to finish it")
    people: dict[int, list] = {}
    for entry in json.loads(path.read_text()):
        people.setdefault(int(entry["image_id"]), []).append(entry)
    return {
        image_id: (np.array([e["keypoints"] for e in entries], dtype=np.float64).reshape(-1, num_joints, 3),
                   np.array([e["score"] for e in entries], dtype=np.float64))
        for image_id, entries in people.items()
    }


def draw_best_predictions(sweep_dir: Path, trial_id: str, data_spec: str, out_png: Path,
                          num_images: int = 4, split: str = "val") -> Path:
    """A grid of the first validation images with the trial's predicted skeletons drawn on them.

    The skeletons come from the trial's stored predictions (`stored_predictions`), so the picture
    shows exactly what was scored and costs no network rebuild or compile.
    """
    import cv2
    import numpy as np

    from .data.coco import load_coco_annotations, resolve_dataset
    from .keypoints import get_schema
    from .predict import read_image
    from .train import restore_run_schema
    from .training.run_dir import read_run_config
    from .visualize import draw_people

    trial_dir = sweep_dir / "trials" / trial_id
    run_dir = trial_dir / "run"
    schema = get_schema(restore_run_schema(read_run_config(run_dir), run_dir))
    found = stored_predictions(trial_dir, schema.num_keypoints)
    nobody = (np.zeros((0, schema.num_keypoints, 3)), np.zeros((0,)))
    annotation_file, image_dir = resolve_dataset(data_spec, split)
    coco = load_coco_annotations(annotation_file, schema)  # the reader's checks
    tiles = []
    for image_id in sorted(coco.getImgIds())[:num_images]:
        rgb = read_image(image_dir / coco.loadImgs(image_id)[0]["file_name"])
        keypoints, scores = found.get(image_id, nobody)
        tiles.append(draw_people(rgb, keypoints, schema, scores=scores, min_person_score=0.1))
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
    """Run the demo study, plot and compare it, draw the best design; returns paths, tables, timings."""
    from .analysis import summarize_results
    from .pareto import compare_sweep, plot_sweep

    out = Path(out)
    study = demo_spec(out, experiments_dir)
    start = time.perf_counter()
    table = run_sweep(study, executor=executor, progress=progress)
    timings = {"study_s": time.perf_counter() - start}

    plots = plot_sweep(study.output)
    summary = summarize_results(table)
    comparison, _ = compare_sweep(study.output)
    best = best_design(summary)
    seeds = trials_of(table, best)
    best_seed = seeds.loc[seeds["AP"].idxmax()]
    picture = draw_best_predictions(Path(study.output), best_seed["trial_id"], study.data.spec_string,
                                    out / "best_predictions.png")
    study_dir = Path(study.output)
    return {
        "results": [study_dir / "results.csv", study_dir / "summary.csv", study_dir / "comparison.csv"],
        "plots": plots,
        "picture": picture,
        "best": best,
        "table": table,
        "summary": summary,
        "comparison": comparison,
        "timings": timings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efficienthrnet.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default ./demo_out)")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--experiments", default=str(EXPERIMENTS_DIR),
                        help=f"folder holding {STUDY} (default: the package's specs)")
    args = parser.parse_args(argv)
    result = run_demo(args.out, args.executor, experiments_dir=Path(args.experiments))
    summary = result["summary"]
    columns = [c for c in ("rule", "budget_macs", "phi", "n_seeds", "input_size_mean", "macs_mean", "AP_mean",
                           "AP_ci_low", "AP_ci_high", "AP50_mean", "train_time_s_mean") if c in summary.columns]
    print("\nscaling study, seed means with 95 % bootstrap CIs (summary.csv):")
    print(summary[columns].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    print("\nrule against rule at each budget (comparison.csv):")
    print(result["comparison"].to_string(index=False, float_format=lambda v: f"{v:.3g}"))
    best = result["best"]
    print(f"\nbest design: {best['rule']} at budget {best['budget_macs']:.3g} MACs (phi {best['phi']}): "
          f"mean AP {best['AP_mean']:.3f} over {best['n_seeds']} seeds, 95 % CI "
          f"[{best['AP_ci_low']:.3f}, {best['AP_ci_high']:.3f}]")
    print(f"the study took {result['timings']['study_s']:.0f} s")
    print("\ntables:", *result["results"], sep="\n  ")
    print("plots:", *[p for p in result["plots"] if p.suffix == ".png"], sep="\n  ")
    print(f"predictions of the best design: {result['picture']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
