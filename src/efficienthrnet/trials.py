"""What one trial of each built-in sweep task does (the functions `efficienthrnet.tasks` names).

- ``profile``: exact params, MACs, FLOPs (per part) and, if asked, latency of one config.
- ``pose``: train (resuming in the trial folder), evaluate with COCO AP, profile and time.
- ``classify``: train the backbone-alone classifier B(phi), evaluate top-1 / top-5, profile; and
  its plotter (top-1 against MACs and params, beside the paper's Table 2).

This module sits above the sweep (it reads the spec and the sweep's helpers); nothing below it
imports it: the sweep reaches it through the task table, on first use.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from efficienthrnet.sweep import (
    PREDICTIONS_FILE,
    SWEEP_TRAIN_KEYS,
    SweepSpec,
    Trial,
    _latency_fields,
    ensure_dataset,
)

if TYPE_CHECKING:
    from efficienthrnet.classify import ClassifyConfig


# ------------------------------------------------------------------------------------ profile


def _cost_fields(cfg) -> dict[str, Any]:
    from efficienthrnet.complexity import profile

    prof = profile(cfg)
    out = {"input_size": cfg.input_size, "params": prof.params, "macs": prof.macs, "flops": prof.flops,
           "paper_params": prof.paper_params, "paper_macs": prof.paper_macs}
    for part, (params, macs) in prof.parts.items():
        out[f"params_{part}"], out[f"macs_{part}"] = params, macs
    return out


def run_profile_trial(trial: Trial, spec: SweepSpec, trial_dir: Path) -> dict[str, Any]:
    """Complexity (exact params, MACs, FLOPs, per part) and, if asked, latency of one config."""
    cfg = trial.model_config()
    return {**_cost_fields(cfg), **_latency_fields(trial, spec, cfg)}


# --------------------------------------------------------------------------------------- pose


def check_pose_train_table(train: Mapping[str, Any], where: str) -> None:
    """Refuse a pose sweep's bad [train] table when the spec loads: budgets, proxy scale, TrainConfig fields."""
    from efficienthrnet.scaling import proxy_input_size
    from efficienthrnet.train import TrainConfig

    steps = train.get("steps")
    if isinstance(steps, (list, tuple)):
        if not steps or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in steps) \
                or len(set(steps)) != len(steps):
            raise ValueError(f"{where}: train.steps {list(steps)!r} must be one positive integer or a list of "
                             f"distinct ones (training budgets to compare), e.g. steps = [150, 500]")
    scale = train.get("resolution_scale")
    if scale is not None:
        if train.get("input_size") is not None:
            raise ValueError(f"{where}: [train] sets both input_size = {train['input_size']!r} and resolution_scale = "
                             f"{scale!r}; keep one (a fixed proxy size, or each rule's own size times the scale)")
        try:
            proxy_input_size(512, scale)
        except ValueError as err:
            raise ValueError(f"{where}: train.{err}") from None
    table = {k: v for k, v in train.items() if k not in SWEEP_TRAIN_KEYS}
    if isinstance(steps, (list, tuple)):
        table["steps"] = max(steps)
    try:
        TrainConfig.from_dict(table)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: [train] is not a valid TrainConfig: {err}") from None


def pose_train_config(trial: Trial, spec: SweepSpec):
    """The TrainConfig of a pose trial: the spec's [train] table with the trial's seed, no progress bar."""
    from efficienthrnet.scaling import proxy_input_size
    from efficienthrnet.train import TrainConfig

    table = {"progress": False, **{k: v for k, v in spec.train.items() if k not in SWEEP_TRAIN_KEYS},
             "seed": trial.seed}
    if trial.steps is not None:
        table["steps"] = trial.steps
    if spec.resolution_scale is not None:
        table["input_size"] = proxy_input_size(trial.model_config().input_size, spec.resolution_scale)
    return TrainConfig.from_dict(table)


def estimate_pose_trial_cost(trial: Trial, spec: SweepSpec) -> float:
    """Images trained x feature-map elements per image at the size the trial trains.

    On the 2-core VM the demo's designs trained at rates that follow their feature maps, not their
    MACs: at equal MACs, width-only at 128 px (2.5-2.7 M elements) ran at 0.7x the images/s of the
    compound rule at 96 px (1.6-1.8 M); compound at 2.4e8 ran as fast as at 1.7e8."""
    from efficienthrnet.complexity import profile

    config = pose_train_config(trial, spec)
    size = config.input_size if config.input_size is not None else trial.model_config().input_size
    return float(config.steps * config.batch_size * profile(trial.model_config(), size).activations)


def compile_pose_trial(trial: Trial, spec: SweepSpec) -> None:
    """Compile what `run_pose_trial` compiles before its steady work: the state init and the
    train step (`train.compile_ahead`), then the evaluation network on the split's first image."""
    import jax

    from efficienthrnet.data.coco import CocoKeypoints
    from efficienthrnet.train import build_model, compile_ahead, effective_model_config

    data_spec = ensure_dataset(spec.data)
    train_config = pose_train_config(trial, spec)
    # On the host, as `load_for_inference` gives them: arrays on the training mesh would trace anew.
    variables = jax.device_get(compile_ahead(trial.model_config(), train_config, data_spec))
    cfg = effective_model_config(trial.model_config(), train_config)  # what the run stores and reloads
    predictor = _predictor(build_model(cfg), cfg.keypoints, _predict_config(cfg, spec), variables)
    dataset = CocoKeypoints.from_spec(data_spec, spec.evaluate.split, schema=cfg.keypoints)
    predictor(dataset.load_image(next(iter(dataset.image_ids))))


def _predict_config(trained_cfg, spec: SweepSpec):
    from efficienthrnet.predict import PredictConfig

    return PredictConfig(input_size=trained_cfg.input_size, flip=spec.evaluate.flip)


#: The last few evaluation predictors of this process, by (network, schema, predict config): the
#: seeds of one design share one compiled network function (`Predictor.with_variables`). Three:
#: the design evaluating now, the one before it and the next, compiled ahead on another thread.
_PREDICTORS: dict[tuple, Any] = {}
_PREDICTORS_KEPT = 3
_PREDICTORS_LOCK = threading.Lock()


def _predictor(model, schema: str, config, variables):
    from efficienthrnet.predict import Predictor

    key = (model, schema, config)
    with _PREDICTORS_LOCK:
        cached = _PREDICTORS.pop(key, None)
        predictor = Predictor(model, variables, schema, config) if cached is None else cached.with_variables(variables)
        _PREDICTORS[key] = predictor  # most recent last
        while len(_PREDICTORS) > _PREDICTORS_KEPT:
            del _PREDICTORS[next(iter(_PREDICTORS))]
    return predictor


def run_pose_trial(trial: Trial, spec: SweepSpec, trial_dir: Path) -> dict[str, Any]:
    """Train (resuming in trial_dir/run), evaluate with COCO AP, profile and time one config."""
    from efficienthrnet.evaluate import evaluate_dataset
    from efficienthrnet.train import load_for_inference, train

    data_spec = ensure_dataset(spec.data)
    cfg = trial.model_config()
    train_config = pose_train_config(trial, spec)
    run_dir = trial_dir / "run"
    start = time.perf_counter()
    summary = train(cfg, train_config, data_spec, run_dir, resume=True)
    train_time = time.perf_counter() - start

    start = time.perf_counter()
    trained_cfg, model, variables = load_for_inference(run_dir)
    predictor = _predictor(model, trained_cfg.keypoints, _predict_config(trained_cfg, spec), variables)
    metrics = evaluate_dataset(predictor, data_spec, spec.evaluate.split, limit=spec.evaluate.limit,
                               out_json=trial_dir / PREDICTIONS_FILE, progress=False)
    eval_time = time.perf_counter() - start
    ap_fields = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
    return {
        **_cost_fields(trained_cfg),  # costs at the size it was trained and evaluated at
        "native_input_size": cfg.input_size,
        "native_macs": _cost_fields(cfg)["macs"],
        "resolution_scale": spec.resolution_scale,  # None: the fixed [train] input_size was used
        **ap_fields,
        "train_steps": summary["step"],
        "train_time_s": train_time,
        "eval_time_s": eval_time,
        "final_loss": summary["metrics"].get("loss"),
        "train_images_per_s": summary.get("images_per_s"),
        **_latency_fields(trial, spec, trained_cfg, variables),
    }


# ----------------------------------------------------------------------------------- classify


def classify_trial_config(trial: Trial, spec: SweepSpec) -> ClassifyConfig:
    """The ClassifyConfig of a sweep trial: the spec's [train] table, the trial's seed, no progress bar."""
    from efficienthrnet.classify import ClassifyConfig

    table = {"progress": False, **dict(spec.train), "seed": trial.seed}
    try:
        return ClassifyConfig.from_dict(table)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sweep {spec.name!r}: [train] is not a valid ClassifyConfig: {err}") from None


def run_classify_trial(trial: Trial, spec: SweepSpec, trial_dir: Path) -> dict[str, Any]:
    """Sweep task "classify": train B(phi) alone (resuming in trial_dir/run), evaluate, profile.

    Spec settings: [train] holds `ClassifyConfig` fields; [options] holds ``data`` (a
    classification spec such as "tfds:cifar100:DATA_DIR") and optionally ``eval_data``.
    Result fields: top1, top5, params, macs, flops (of the classifier at its resolution),
    params_backbone / macs_backbone, resolution, num_classes, train_steps, train_time_s,
    final_loss, train_images_per_s.
    """
    from efficienthrnet.classify import EVAL_FILE, train_classifier
    from efficienthrnet.complexity import profile_classifier

    data = spec.options.get("data")
    if not isinstance(data, str):
        raise ValueError(
            f"sweep {spec.name!r}: task 'classify' needs [options] data = \"tfds:NAME:DATA_DIR\" "
            f'(or "shapes:K"), got {data!r}'
        )
    cfg = trial.model_config()
    config = classify_trial_config(trial, spec)
    run_dir = Path(trial_dir) / "run"
    start = time.perf_counter()
    summary = train_classifier(
        cfg, config, data, run_dir, resume=True, eval_data=spec.options.get("eval_data")
    )
    train_time = time.perf_counter() - start
    top = {"top1": summary["top1"], "top5": summary["top5"]}
    if top["top1"] is None and (run_dir / EVAL_FILE).is_file():  # finished earlier: nothing left to train
        stored = json.loads((run_dir / EVAL_FILE).read_text())
        top = {"top1": stored["top1"], "top5": stored["top5"]}
    prof = profile_classifier(cfg, summary["num_classes"], summary["resolution"])
    return {
        **top,
        "params": prof.params,
        "macs": prof.macs,
        "flops": prof.flops,
        "params_backbone": prof.parts["backbone"][0],
        "macs_backbone": prof.parts["backbone"][1],
        "resolution": summary["resolution"],
        "num_classes": summary["num_classes"],
        "train_steps": summary["step"],
        "train_time_s": train_time,
        "final_loss": summary["metrics"].get("loss"),
        "train_images_per_s": summary["images_per_s"],
    }


def plot_classify_sweep(run_dir: str | os.PathLike, dataset: str | None = None) -> list[Path]:
    """Top-1 against MACs and against params for a classify sweep, with Table 2 as reported.

    `dataset` picks Table 2's column ("cifar100" or "imagenet2012"); by default it is read from
    the sweep's [options] table2 or guessed from its data spec; with neither, no reported points.
    Plots go to RUN_DIR/plots/top1_vs_<cost>.{png,svg}.
    """
    from efficienthrnet import pareto
    from efficienthrnet.sweep import load_results, load_sweep_spec
    from efficienthrnet.table2 import TABLE2_DATASETS, table2_reported_points

    run_dir = Path(run_dir)
    df = load_results(run_dir)
    spec = load_sweep_spec(run_dir)
    if dataset is None and spec is not None:
        dataset = spec.options.get("table2") or next(
            (name for name in TABLE2_DATASETS if f":{name}:" in str(spec.options.get("data", ""))), None
        )
    reported = None
    if dataset is not None:
        reported = table2_reported_points(dataset).dropna(subset=["top1"])
    points = pareto.finished_points(df, ["top1", "macs", "params"])
    if points.empty or "top1" not in points.columns or points["top1"].isna().all():
        raise ValueError(f"{run_dir} has no finished classify trial with a top-1; nothing to plot")
    name = spec.name if spec is not None else run_dir.name
    paths: list[Path] = []
    for cost in ("macs", "params"):
        title = f"{name}: top-1 against {cost}" + (f" (paper: Table 2, {dataset})" if dataset else "")
        paths += pareto.plot_tradeoff(
            points, cost, run_dir / pareto.PLOTS_DIR / f"top1_vs_{cost}", "top1", reported, title=title
        )
    return paths
