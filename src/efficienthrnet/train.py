"""Pose training: the EfficientHRNet task on top of the shared training layer (`efficienthrnet.training`).

This module says what is particular to pose: `TrainConfig`, the Adam schedule, the model, the
heatmap + associative-embedding loss step and the COCO-format input pipeline. The machinery
(train state, data-parallel jitted step, checkpoints and exact resume, metrics, the loop) is
`efficienthrnet.training`; its names are re-exported here for existing callers.

Reference behaviour (reference page, section 5) and where this module departs from it:

- Adam at 1e-3, times 0.1 at 2/3 and 13/15 of training (epochs 200 and 260 of 300).
- The reference builds Adam *without* weight decay although its config sets 1e-4 (quirk 12), so
  ``weight_decay=0`` is the default; any value > 0 switches to AdamW (decoupled decay).
- The reference always freezes the backbone (quirk 8); here that is ``freeze_backbone=True``,
  off by default. As in the reference, a frozen backbone still updates its BatchNorm statistics.

A run folder holds ``config.json`` (model and train config, the keypoint schema, the data),
``metrics.jsonl`` and ``checkpoints/`` (orbax); a resumed run continues bit for bit.

`TrainConfig` lives in `efficienthrnet.train_config`, the optimizer in
`efficienthrnet.train_optimizer`, the model and jitted step in `efficienthrnet.train_step` (all
re-exported here); this module holds the run folder's record, the data stream, `train` and
`load_for_inference`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax

from efficienthrnet.config import NETWORK_STRIDE, ModelConfig, check_finite  # noqa: F401  (as before the split)
from efficienthrnet.data.augment import AugmentConfig  # noqa: F401
from efficienthrnet.keypoints import get_schema, restore_schema, schema_to_dict
from efficienthrnet.losses import PUSH_LOSSES, LossWeights, compute_losses  # noqa: F401
from efficienthrnet.train_config import TrainConfig, effective_model_config
from efficienthrnet.train_optimizer import (  # noqa: F401
    BACKBONE_MODULE,
    OPTIMIZER_FIELDS,
    _optimizer,
    backbone_labels,
    learning_rate_schedule,
    make_optimizer,
)
from efficienthrnet.train_step import (  # noqa: F401
    DEVICE_BATCH_KEYS,
    STEP_FIELDS,
    _jitted_train_step,
    build_model,
    create_train_state,
    make_train_step,
    pose_loss,
    shard_batch,
    train_step,
)
from efficienthrnet.training.checkpoints import (  # noqa: F401  (re-exported for existing callers)
    CHECKPOINT_DIR,
    CheckpointError,
    check_same_architecture,
    check_variables_fit,
    checkpoint_manager,
    checkpoint_steps,
    describe_model,
    expected_variable_shapes,
    load_variables,
    restore_checkpoint,
    restore_for_inference,
    save_checkpoint,
)
from efficienthrnet.training.loop import Cadence, TrainingTask, run_training
from efficienthrnet.training.metrics import MetricsWriter, ThroughputMeter  # noqa: F401
from efficienthrnet.training.parallel import (  # noqa: F401
    DISTRIBUTED_ENV,
    check_batch_divisible,
    make_mesh,
    maybe_initialize_distributed,
    replicate,
)
from efficienthrnet.training.parallel import shard_batch as _shard_batch  # noqa: F401
from efficienthrnet.training.run_dir import (  # noqa: F401
    CONFIG_FILE,
    METRICS_FILE,
    check_run_dir,
    read_run_config,
    write_run_record,
)
from efficienthrnet.training.state import COMPUTE_DTYPES, TrainState  # noqa: F401
from efficienthrnet.training.state import create_train_state as _create_state  # noqa: F401

# ---------------------------------------------------------------------------- run folder, data


def prepare_run_dir(
    run_dir: Path, model_config: ModelConfig, config: TrainConfig, data_spec: str, resume: bool
):
    """Check the folder against the request and write config.json (process 0 only)."""
    check_run_dir(run_dir, model_config, resume)
    write_run_config(run_dir, model_config, config, data_spec)


def run_record(model_config: ModelConfig, config: TrainConfig, data_spec: Any) -> dict[str, Any]:
    """The pose run's config.json: model and train config, data spec and the keypoint schema's definition."""
    data = data_spec if data_spec is None or isinstance(data_spec, str) else repr(data_spec)
    return {"model": model_config.to_dict(), "train": config.to_dict(), "data": data,
            "keypoints": schema_to_dict(get_schema(model_config.keypoints))}


def write_run_config(run_dir: Path, model_config: ModelConfig, config: TrainConfig, data_spec: Any) -> None:
    """Write RUN_DIR/config.json atomically (process 0 only), once everything is checked."""
    write_run_record(run_dir, run_record(model_config, config, data_spec))


def make_train_loader(data_spec: Any, model_config: ModelConfig, config: TrainConfig):
    """This process's share of the training stream: the data pipeline's infinite loader with
    ``get_state()`` / ``set_state()``, at the model's input size and the per-process batch.

    ``data_spec`` is a spec string ("synthetic:DIR", "coco:DIR") or an opened `CocoKeypoints`.
    """
    from efficienthrnet.data.pipeline import build_train_loader

    return build_train_loader(
        data_spec,
        input_size=model_config.input_size,
        batch_size=config.batch_size // jax.process_count(),
        seed=config.seed,
        schema=model_config.keypoints,
        num_workers=config.num_workers,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        max_people=config.max_people,
        augment=config.augment,
        sigma=config.heatmap_sigma,
    )


# ------------------------------------------------------------------------------------ training


def train(
    model_config: ModelConfig,
    train_config: TrainConfig,
    data_spec: str | None,
    run_dir: str | os.PathLike,
    resume: bool = False,
    *,
    stop_after_steps: int | None = None,
    loader: Any = None,
    model: nn.Module | None = None,
    init_from: Any = None,
) -> dict[str, Any]:
    """Train (or resume) a model; the function behind ``efficienthrnet train``.

    Args:
      model_config: the architecture (``train_config.input_size`` replaces its input size).
      train_config: optimisation, schedule, checkpoints, logging.
      data_spec: "synthetic:DIR" or "coco:DIR"; None takes ``train_config.data``.
      run_dir: folder for config.json, metrics.jsonl and checkpoints/.
      resume: continue from the latest checkpoint in run_dir (exactly: params, BN statistics,
        optimizer state, step, PRNG key and input position); a run dir without checkpoints
        starts from step 0. Without it, a run dir that already holds checkpoints is refused.
      stop_after_steps: end this invocation after that many total steps (saving a checkpoint
        there) while keeping the schedule of ``train_config.steps``: for time-sliced jobs.
      loader: an already built batch iterator with get_state/set_state (tests, custom data);
        by default the data pipeline builds one from data_spec.
      model: the flax module to train; by default `EfficientHRNet(model_config)`.
      init_from: a pretrained backbone (`backbone_init.BackboneWeights`) merged into the freshly
        initialised variables (`backbone_init.start_from`); a resumed run restores its checkpoint.

    Returns:
      Summary dict: run_dir, final step, last metrics, images/s, input-wait share, checkpoint steps.
    """
    maybe_initialize_distributed(train_config.distributed)
    data_spec = data_spec or train_config.data
    if data_spec is None and loader is None:
        raise ValueError(
            "no training data: pass data_spec ('synthetic:DIR' or 'coco:DIR') or set TrainConfig.data"
        )
    model_config = effective_model_config(model_config, train_config)
    if model is None:
        model = build_model(model_config, train_config.compute_dtype, train_config.init_scheme)
    elif hasattr(model, "dtype"):
        model = model.clone(dtype=COMPUTE_DTYPES[train_config.compute_dtype])
    mesh = make_mesh()
    c = train_config

    def initial_state():
        state = create_train_state(model, model_config, c)
        if init_from is None:
            return state
        from efficienthrnet.backbone_init import start_from

        return start_from(state, init_from, model_config)  # a resumed run then restores its checkpoint

    task = TrainingTask(
        model_config=model_config,
        record=run_record(model_config, c, data_spec),
        cadence=Cadence(c.steps, c.batch_size, c.log_every, c.checkpoint_every, c.keep_checkpoints, c.progress),
        make_loader=lambda: make_train_loader(data_spec, model_config, c) if loader is None else loader,
        make_state=initial_state,
        step_fn=make_train_step(c, mesh),
        batch_keys=DEVICE_BATCH_KEYS,
    )
    summary, _ = run_training(task, run_dir, mesh, resume, stop_after_steps)
    return summary


def compile_ahead(model_config: ModelConfig, train_config: TrainConfig, data_spec: Any) -> dict[str, Any]:
    """Compile in this process what `train` with these arguments compiles before its first step
    (the state init and the train step), by taking one step from a throwaway state on one batch.

    For a sweep, which calls it for the next design while the current one trains (cores a small
    trial leaves idle): that design's `train` then finds both in the in-process caches. Nothing is
    written; the loader reads in this thread (no worker processes). Returns the throwaway
    ``{"params", "batch_stats"}``, of the shapes a trained run's, to compile inference with.
    """
    import dataclasses

    model_config = effective_model_config(model_config, train_config)
    model = build_model(model_config, train_config.compute_dtype, train_config.init_scheme)
    mesh = make_mesh()
    state = replicate(create_train_state(model, model_config, train_config), mesh)
    loader = make_train_loader(data_spec, model_config, dataclasses.replace(train_config, num_workers=0))
    try:
        batch = shard_batch(next(iter(loader)), mesh)
    finally:
        if hasattr(loader, "close"):
            loader.close()
    state, _ = jax.block_until_ready(make_train_step(train_config, mesh)(state, batch))
    return {"params": state.params, "batch_stats": state.batch_stats}


def restore_run_schema(record: Mapping[str, Any], run_dir: Path, requested: str | None = None) -> str:
    """Register the keypoint schema a run was trained with and return its name.

    The run's config.json stores the schema's definition, so a run with a custom schema reloads
    in a fresh process; runs written before that store only the name, which must be registered.
    ``requested`` (an explicit --keypoints) must name the same schema.
    """
    stored = record["model"]["keypoints"]
    where = f"{run_dir / CONFIG_FILE} field 'keypoints'"
    if "keypoints" in record:
        restore_schema(record["keypoints"], where)
    else:
        try:
            get_schema(stored)
        except ValueError as err:
            raise ValueError(f"{run_dir / CONFIG_FILE}: {err}") from None
    if requested is not None and get_schema(requested).name != stored:
        raise ValueError(
            f"keypoints {get_schema(requested).name!r} were asked for, but run {run_dir} was trained with "
            f"keypoint schema {stored!r}; leave --keypoints out or pass --keypoints {stored}"
        )
    return stored


def load_for_inference(
    run_dir: str | os.PathLike,
    step: int | None = None,
    *,
    model: nn.Module | None = None,
    keypoints: str | None = None,
) -> tuple[ModelConfig, nn.Module, dict[str, Any]]:
    """Model config, module and ``{"params", "batch_stats"}`` of a run's checkpoint (latest by default).

    The model config is the one trained (at the training input size); ``model`` overrides the
    module built from it (for custom networks trained through ``train(model=...)``). The run's
    keypoint schema is registered on the way (see `restore_run_schema`); ``keypoints``, when
    given, must name it.
    """
    run_dir = Path(run_dir)
    record = read_run_config(run_dir)
    model_config = ModelConfig.from_dict(record["model"])
    restore_run_schema(record, run_dir, keypoints)
    model = build_model(model_config) if model is None else model
    variables = load_variables(run_dir, model, model_config, step)
    return model_config, model, variables


def train_command(
    *,
    phi: float,
    data: str,
    steps: int,
    batch: int,
    out: str | os.PathLike,
    rule: str = "efficienthrnet",
    input_size: int | None = None,
    resume: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """``efficienthrnet train``: the config of (phi, rule), a TrainConfig from the flags, `train`.

    ``overrides`` are further TrainConfig fields (e.g. learning_rate=3e-3, compute_dtype="bfloat16").
    """
    from efficienthrnet.scaling import generate_config

    fields_ = {**overrides, "steps": steps, "batch_size": batch, "input_size": input_size, "data": data}
    config = TrainConfig.from_dict(fields_)
    return train(generate_config(phi, rule=rule), config, data, out, resume=resume)
