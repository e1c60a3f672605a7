"""Classification training of the compact EfficientNet backbones alone (the paper's Table 2 models).

The paper (section 4.1.2) first trains B(phi) on ImageNet and CIFAR-100, then initialises the pose
models from them. Its recipe is the default of `ClassifyConfig`: SGD with momentum 0.9 and weight
decay 1e-4, five warm-up epochs rising linearly from 1e-4 to 0.05, then the rate times 0.1 every
30 epochs (counted from the end of the warm-up) for 195 more epochs. Cross-entropy with optional
label smoothing; top-1 / top-5 accuracy on the held-out split (`efficienthrnet.classify_eval`).

This module is the classification task on the shared training layer (`efficienthrnet.training`:
train state, data-parallel step, orbax checkpoints with exact resume, metrics, the loop), so a
classifier run folder looks like a pose run folder: ``config.json`` (with ``"task": "classify"``,
the model config, this config and the data), ``metrics.jsonl``, ``checkpoints/`` and, at the end,
``eval.json``. The sweep task "classify" is `efficienthrnet.trials.run_classify_trial`.

    cfg = generate_config(-4, rule="reference")
    summary = train_classifier(cfg, ClassifyConfig(epochs=200), "tfds:cifar100:~/tfds", "runs/b-4")
    evaluate_classifier("runs/b-4", "tfds:cifar100:~/tfds")      # {"top1": ..., "top5": ..., ...}
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import optax
from jax.sharding import Mesh

from efficienthrnet.classify_config import (
    ClassifyConfig,
    _optimizer_key,
    input_resolution,
    learning_rate_schedule,
    make_optimizer,
)
from efficienthrnet.classify_eval import (
    cross_entropy,
    evaluate_variables,
    precise_batch_stats,
    topk_correct,
)
from efficienthrnet.config import ModelConfig
from efficienthrnet.data.classification import (
    ClassificationLoader,
    ClassificationSource,
    describe_source,
    open_source,
)
from efficienthrnet.files import write_text_atomic
from efficienthrnet.table2 import TABLE2_DATASETS, table2_comparison, table2_reported_points  # noqa: F401
from efficienthrnet.training import (
    CONFIG_FILE,
    Cadence,
    TrainingTask,
    TrainState,
    jit_step,
    load_variables,
    make_mesh,
    read_run_config,
    replicate,
    run_training,
)
from efficienthrnet.training import create_train_state as _create_state
from efficienthrnet.training import train_step as _train_step
from efficienthrnet.training.state import COMPUTE_DTYPES as _DTYPES

TASK = "classify"
EVAL_FILE = "eval.json"
#: Batch entries the step needs on the device.
BATCH_KEYS = ("image", "label")


# ------------------------------------------------------------------------------- model, step


def build_classifier(model_config: ModelConfig, num_classes: int, config: ClassifyConfig | None = None):
    """`EfficientNetClassifier(model_config, num_classes)` with the run's dtype and depthwise path.

    Equal arguments give the same module object (so its `apply`, held in the train state, lets
    jax reuse compiled steps across runs in one process, e.g. the seeds of a sweep).
    """
    config = config or ClassifyConfig()
    return _classifier(model_config, int(num_classes), config.compute_dtype, config.depthwise_impl)


@functools.lru_cache(maxsize=16)
def _classifier(model_config: ModelConfig, num_classes: int, compute_dtype: str, depthwise_impl: str):
    from efficienthrnet.nn.efficientnet import EfficientNetClassifier

    return EfficientNetClassifier(
        model_config, num_classes, dtype=_DTYPES[compute_dtype], depthwise_impl=depthwise_impl
    )


def create_state(model, resolution: int, config: ClassifyConfig, steps_per_epoch: int) -> TrainState:
    """Initialised params and BatchNorm statistics (from `config.seed`) plus the SGD state."""
    return _create_state(model, resolution, make_optimizer(config, steps_per_epoch), config.seed)


def classify_loss(logits: jax.Array, batch: Mapping[str, jax.Array], *, label_smoothing: float = 0.0):
    """(mean cross-entropy, {"accuracy": batch top-1}) of a batch {"image", "label"}."""
    loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
    return loss, {"accuracy": topk_correct(logits, batch["label"], 1).mean()}


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    label_smoothing: float,
    schedule: optax.Schedule,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One SGD update on a batch {"image", "label"}: loss, batch top-1, learning rate used."""
    loss_fn = functools.partial(classify_loss, label_smoothing=label_smoothing)
    return _train_step(state, batch, loss_fn=loss_fn, schedule=schedule)


def make_train_step(config: ClassifyConfig, steps_per_epoch: int, mesh: Mesh):
    """`train_step` jitted over the mesh: state replicated and donated, batch split on "data"."""
    return _jitted_train_step(_optimizer_key(config), steps_per_epoch, mesh)


@functools.lru_cache(maxsize=16)
def _jitted_train_step(config: ClassifyConfig, steps_per_epoch: int, mesh: Mesh):
    step = functools.partial(
        train_step,
        label_smoothing=config.label_smoothing,
        schedule=learning_rate_schedule(config, steps_per_epoch),
    )
    return jit_step(step, mesh)


# ---------------------------------------------------------------------------- run directory


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The classifier run's config.json (refuses folders of other tasks, naming what they hold)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a classifier run folder (train_classifier writes it)"
        )
    record = read_run_config(Path(run_dir))
    if record.get("task") != TASK:
        raise ValueError(
            f"{run_dir} holds a {record.get('task', 'pose')!r} run, not a classifier run "
            f'(config.json has no "task": "{TASK}")'
        )
    return record


def _same_data(run_dir: Path, record: Mapping[str, Any]):
    """check_stored of a resume: the stored run must have the same classes and resolution."""

    def check(stored: Mapping[str, Any]) -> None:
        for key in ("num_classes", "resolution"):
            if stored[key] != record[key]:
                raise ValueError(
                    f"run dir {run_dir} was trained with {key}={stored[key]}, but this run has "
                    f"{key}={record[key]}; use the same data and resolution, or a new run dir"
                )

    return check


# ---------------------------------------------------------------------------------- training


def train_classifier(
    model_config: ModelConfig,
    classify_config: ClassifyConfig,
    data: str | ClassificationSource,
    run_dir: str | os.PathLike,
    resume: bool = False,
    *,
    eval_data: str | ClassificationSource | None = None,
    stop_after_steps: int | None = None,
) -> dict[str, Any]:
    """Train (or resume) the backbone-alone classifier B(phi); the function behind ``efficienthrnet classify``.

    Args:
      model_config: the architecture; only its backbone (and classifier head settings) are used.
      classify_config: optimisation, schedule, resolution, augmentation, checkpoints.
      data: training data: a spec ("tfds:cifar100:DATA_DIR", "shapes:6") or a source object.
      run_dir: folder for config.json, metrics.jsonl, checkpoints/ and eval.json.
      resume: continue from the latest checkpoint (params, BN statistics, SGD state, step, data
        position); without it a run dir that holds checkpoints is refused.
      eval_data: held-out data; by default the "val" split of a spec string (none for a source).
      stop_after_steps: end this call after that many total steps, keeping the full schedule.

    Returns:
      Summary: run_dir, step, steps, epochs, num_classes, resolution, params, last train
      metrics, final top1/top5 (None without eval data), images/s, checkpoint steps, model name.
    """
    run_dir = Path(run_dir)
    train_source = open_source(data, "train")
    if eval_data is None and isinstance(data, str):
        eval_data = data
    eval_source = None if eval_data is None else open_source(eval_data, "val")
    if eval_source is not None and eval_source.num_classes != train_source.num_classes:
        raise ValueError(
            f"eval data {eval_source.name} has {eval_source.num_classes} classes but training data "
            f"{train_source.name} has {train_source.num_classes}"
        )
    cfg = classify_config
    resolution = input_resolution(model_config, cfg)
    mesh = make_mesh()

    def loader_for(seed: int, shard_index: int = 0, shard_count: int = 1) -> ClassificationLoader:
        # Batches are drawn lazily: building the loader starts no thread.
        return ClassificationLoader(train_source, cfg.batch_size // jax.process_count(), resolution, seed=seed,
                                    augment=cfg.augment, random_augment=cfg.random_augment,
                                    shard_index=shard_index, shard_count=shard_count, num_threads=cfg.num_threads)

    loader = loader_for(cfg.seed, jax.process_index(), jax.process_count())
    steps_per_epoch = cfg.steps_per_epoch or loader.steps_per_epoch
    total_steps = max(1, int(round(cfg.epochs * steps_per_epoch)))
    record = {
        "task": TASK,
        "model": model_config.to_dict(),
        "classify": cfg.to_dict(),
        "num_classes": int(train_source.num_classes),
        "resolution": resolution,
        "steps_per_epoch": steps_per_epoch,
        "steps": total_steps,
        "data": describe_source(train_source),
        "data_spec": data if isinstance(data, str) else None,
        "eval_data": None if eval_source is None else describe_source(eval_source),
    }
    model = build_classifier(model_config, train_source.num_classes, cfg)
    eval_every = (
        None if cfg.eval_every_epochs is None else max(1, int(round(cfg.eval_every_epochs * steps_per_epoch)))
    )
    final_eval: dict[str, Any] = {}

    def recalibrate(state: TrainState) -> TrainState:
        """The state with precise BN statistics from a side stream of training batches (main stream untouched)."""
        side = loader_for(cfg.seed + 1)
        try:
            batches = (next(side) for _ in range(cfg.precise_bn_batches))
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            stats = precise_batch_stats(model, variables, batches, model_config.backbone.bn_decay)
        finally:
            side.close()
        return state.replace(batch_stats=replicate(stats, mesh))

    def at_step(step: int, state: TrainState):
        """Precise BN before each evaluation and at the end; held-out top-1/top-5 at eval steps."""
        evaluating = eval_source is not None and (step == total_steps or (eval_every and step % eval_every == 0))
        if cfg.precise_bn_batches and (evaluating or step == total_steps):
            state = recalibrate(state)
        if not evaluating:
            return state, None
        result = evaluate_variables(model, {"params": state.params, "batch_stats": state.batch_stats},
                                    eval_source, resolution, batch_size=cfg.eval_batch_size,
                                    max_examples=cfg.eval_max_examples, augment=cfg.augment)
        if step == total_steps:
            final_eval.update(result)
        return state, {f"eval_{k}": result[k] for k in ("top1", "top5", "loss")}

    task = TrainingTask(
        model_config=model_config,
        record=record,
        cadence=Cadence(total_steps, cfg.batch_size, cfg.log_every, cfg.checkpoint_every, cfg.keep_checkpoints,
                        cfg.progress),
        make_loader=lambda: loader,
        make_state=lambda: create_state(model, resolution, cfg, steps_per_epoch),
        step_fn=make_train_step(cfg, steps_per_epoch, mesh),
        batch_keys=BATCH_KEYS,
        desc=f"classify {model_config.name}",
        postfix=("loss", "accuracy"),
        read_record=read_run_record,
        check_stored=_same_data(run_dir, record),
        log_fields=lambda step: {"epoch": step / steps_per_epoch},
        at_step=at_step,
    )
    summary, state = run_training(task, run_dir, mesh, resume, stop_after_steps)
    if final_eval and jax.process_index() == 0:
        write_text_atomic(run_dir / EVAL_FILE, json.dumps({"step": total_steps, **final_eval}, indent=2))
    return {
        **summary,
        "steps": total_steps,
        "epochs": cfg.epochs,
        "num_classes": int(train_source.num_classes),
        "resolution": resolution,
        "params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(state.params))),
        "top1": final_eval.get("top1"),
        "top5": final_eval.get("top5"),
    }


def load_classifier(
    run_dir: str | os.PathLike, step: int | None = None
) -> tuple[ModelConfig, Any, dict, dict]:
    """(model config, classifier module, {"params", "batch_stats"}, run record) of a classifier run."""
    record = read_run_record(run_dir)
    model_config = ModelConfig.from_dict(record["model"])
    cfg = ClassifyConfig.from_dict(record["classify"])
    model = build_classifier(model_config, record["num_classes"], cfg)
    variables = load_variables(Path(run_dir), model, model_config, step)
    return model_config, model, variables, record


def evaluate_classifier(
    run_dir: str | os.PathLike,
    data: str | ClassificationSource | None = None,
    split: str = "val",
    *,
    step: int | None = None,
    batch_size: int | None = None,
    max_examples: int | None = None,
) -> dict[str, float]:
    """Top-1 / top-5 / loss of a classifier run's checkpoint; the function behind ``efficienthrnet classify-eval``.

    `data` defaults to the run's own training data spec when that was a string (its "val" split).
    """
    _, model, variables, record = load_classifier(run_dir, step)
    cfg = ClassifyConfig.from_dict(record["classify"])
    if data is None:
        data = record.get("data_spec")
        if data is None:
            raise ValueError(
                f"{run_dir} was trained on an in-memory source; pass the evaluation data explicitly"
            )
    source = open_source(data, split)
    if source.num_classes != record["num_classes"]:
        raise ValueError(
            f"{source.name} has {source.num_classes} classes but the classifier in {run_dir} has "
            f"{record['num_classes']}"
        )
    return evaluate_variables(
        model,
        variables,
        source,
        record["resolution"],
        batch_size=batch_size or cfg.eval_batch_size,
        max_examples=max_examples if max_examples is not None else cfg.eval_max_examples,
        augment=cfg.augment,
    )
