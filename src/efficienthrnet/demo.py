"""`make demo` (``python -m efficienthrnet.demo``): the main job on the embedded default, CPU-sized.

1. Makes the synthetic COCO-format dataset (once) under OUT/data/synthetic.
2. Runs ``experiments/quickstart.toml``: several phi trained and evaluated (pycocotools AP) at a
   128 px proxy input size, into OUT/quickstart.
3. Runs ``experiments/profile_phi.toml``: exact params / MACs against phi for several scaling
   rules, into OUT/profile_phi.
4. Writes each sweep's results.csv and plots (PNG + SVG), and a picture of the best trial's
   predictions on validation images, then prints where everything is.

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
QUICKSTART = "quickstart.toml"
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
    """The quickstart and profile specs with their outputs (and the synthetic data) under ``out``."""
    quick = load_spec(experiment_path(QUICKSTART, experiments_dir))
    data = DataSpec(kind=quick.data.kind, dir=str(out / "data" / "synthetic"), synthetic=quick.data.synthetic)
    quick = quick.replace(output=str(out / "quickstart"), data=data)
    profile = load_spec(experiment_path(PROFILE, experiments_dir))
    return quick, profile.replace(output=str(out / "profile_phi"))


def best_trial(df) -> dict:
    """The finished trial with the highest AP (a row of the results table as a dict)."""
    done = df[(df["status"] == "done")] if "status" in df.columns else df
    if "AP" not in done.columns or done["AP"].isna().all():
        raise ValueError("no finished pose trial has an AP; see the failed trials' errors in results.csv")
    return done.loc[done["AP"].idxmax()].to_dict()


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
    """Run both demo sweeps, plot them, draw the best trial; returns the paths and headline figures."""
    from .pareto import front_table, plot_sweep

    out = Path(out)
    quick, profile = demo_specs(out, experiments_dir)
    timings = {}
    start = time.perf_counter()
    pose = run_sweep(quick, executor=executor, progress=progress)
    timings["quickstart_s"] = time.perf_counter() - start
    start = time.perf_counter()
    run_sweep(profile, executor=executor, progress=progress)
    timings["profile_s"] = time.perf_counter() - start

    plots = plot_sweep(quick.output) + plot_sweep(profile.output)
    best = best_trial(pose)
    picture = draw_best_predictions(Path(quick.output), best["trial_id"], quick.data.spec_string,
                                    out / "best_predictions.png")
    return {
        "results": [Path(quick.output) / "results.csv", Path(profile.output) / "results.csv"],
        "plots": plots,
        "picture": picture,
        "best": best,
        "table": pose,
        "front": front_table(pose, "AP", "macs"),
        "timings": timings,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m efficienthrnet.demo", description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(DEFAULT_OUT), help="output folder (default ./demo_out)")
    parser.add_argument("--executor", default="local", choices=("local", "ray"))
    parser.add_argument("--experiments", default=str(EXPERIMENTS_DIR),
                        help=f"folder holding {QUICKSTART} and {PROFILE} (default: the package's specs)")
    args = parser.parse_args(argv)
    summary = run_demo(args.out, args.executor, experiments_dir=Path(args.experiments))
    table = summary["table"]
    columns = [c for c in ("trial_id", "status", "input_size", "params", "macs", "AP", "AP50", "latency_ms",
                           "train_time_s", "eval_time_s") if c in table.columns]
    print("\nquickstart results:")
    print(table[columns].to_string(index=False))
    print("\nPareto front (AP vs MACs):")
    print(summary["front"].to_string(index=False))
    best = summary["best"]
    print(f"\nbest trial: {best['trial_id']} AP={best['AP']:.3f}")
    print(f"sweeps took {summary['timings']['quickstart_s']:.0f} s (quickstart) and "
          f"{summary['timings']['profile_s']:.0f} s (profile_phi)")
    print("\nresults tables:", *summary["results"], sep="\n  ")
    print("plots:", *[p for p in summary["plots"] if p.suffix == ".png"], sep="\n  ")
    print(f"predictions of the best trial: {summary['picture']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
