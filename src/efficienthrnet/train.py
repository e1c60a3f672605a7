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
"""

from __future__ import annotations

import dataclasses
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util
from jax.sharding import Mesh

from efficienthrnet.config import NETWORK_STRIDE, ModelConfig, check_finite
from efficienthrnet.data.augment import AugmentConfig
from efficienthrnet.keypoints import get_schema, restore_schema, schema_to_dict
from efficienthrnet.losses import PUSH_LOSSES, LossWeights, compute_losses
from efficienthrnet.training import step as _step
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
from efficienthrnet.training.parallel import shard_batch as _shard_batch
from efficienthrnet.training.run_dir import (  # noqa: F401
    CONFIG_FILE,
    METRICS_FILE,
    check_run_dir,
    read_run_config,
    write_run_record,
)
from efficienthrnet.training.state import COMPUTE_DTYPES, TrainState
from efficienthrnet.training.state import create_train_state as _create_state

#: Batch entries the step needs on the device (the rest, e.g. "image_id", stay on the host).
DEVICE_BATCH_KEYS = ("image", "heatmaps_4", "heatmaps_2", "mask_4", "mask_2", "joints_4")
#: Name of the model's backbone submodule: top-level key of its parameter tree.
BACKBONE_MODULE = "backbone"


# --------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run that is not the architecture.

    Attributes:
      steps: optimizer updates in the whole run (the schedule is laid out over these).
      batch_size: global batch (all devices, all hosts); must divide by the device count.
      learning_rate: peak Adam learning rate (reference 1e-3).
      decay_fractions: fractions of ``steps`` at which the rate is multiplied by ``decay_factor``
        (reference: epochs 200 and 260 of 300).
      decay_factor: multiplier at each decay boundary (reference 0.1).
      warmup_steps: linear warm-up from 0 over this many steps (reference: none).
      weight_decay: 0 builds Adam as the reference does (it ignores its configured 1e-4);
        > 0 builds AdamW with this decoupled decay.
      freeze_backbone: give the backbone parameters zero updates (the reference always does).
      compute_dtype: "float32" or "bfloat16" for activations; params, optimizer and loss stay float32.
      loss_weights: multipliers of the loss terms.
      push_loss: associative-embedding push form, "exp" (the reference's default) or "max"
        (the reference's other form; see `efficienthrnet.losses`).
      init_scheme: how the pose model's kernels start: "reference" (N(0, 0.001^2), as the
        authors train), "he", or "he_small_head" (see `efficienthrnet.nn.model.EfficientHRNet`).
      checkpoint_every: save every this many steps (and always at the end).
      keep_checkpoints: how many of the most recent checkpoints to keep.
      log_every: write a metrics line every this many steps (and at the end).
      seed: seeds parameter init, dropout and the input pipeline.
      input_size: square training input size replacing the model config's (multiple of NETWORK_STRIDE),
        for cheap proxy runs of the fully convolutional network; None keeps the config's.
      data: default dataset spec ("synthetic:DIR" or "coco:DIR") when `train` gets none.
      num_workers: input pipeline worker processes (0 = in the main process).
      max_people: people slots per image in the tag targets (reference 30).
      distributed: call ``jax.distributed.initialize()`` first (multi-host); the environment
        variable EFFICIENTHRNET_DISTRIBUTED=1 does the same.
      progress: show a tqdm progress bar.
      augment: the random affine of the input pipeline (reference ranges by default; narrower
        ranges make short proxy runs learn faster).
    """

    steps: int = 1000
    batch_size: int = 8
    learning_rate: float = 1e-3
    decay_fractions: tuple[float, ...] = (2 / 3, 13 / 15)
    decay_factor: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    freeze_backbone: bool = False
    compute_dtype: str = "float32"
    loss_weights: LossWeights = field(default_factory=LossWeights)
    push_loss: str = "exp"
    init_scheme: str = "reference"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    input_size: int | None = None
    data: str | None = None
    num_workers: int = 0
    max_people: int = 30
    distributed: bool = False
    progress: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self):
        check_finite(self, "TrainConfig")  # first: NaN passes every range comparison below
        positive = ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every", "max_people")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= 1")
        for name in ("warmup_steps", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= 0")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate={self.learning_rate!r} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(
                f"TrainConfig.weight_decay={self.weight_decay!r} must be >= 0 (0 = Adam as the reference)"
            )
        if any(not 0 < f < 1 for f in self.decay_fractions) or list(self.decay_fractions) != sorted(
            self.decay_fractions
        ):
            raise ValueError(
                f"TrainConfig.decay_fractions={self.decay_fractions!r} must be increasing fractions in (0, 1)"
            )
        from efficienthrnet.nn.model import INIT_SCHEMES  # imported on use, as in build_model

        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"TrainConfig.init_scheme={self.init_scheme!r}; choose one of {list(INIT_SCHEMES)}")
        if self.push_loss not in PUSH_LOSSES:
            raise ValueError(f"TrainConfig.push_loss={self.push_loss!r}; choose one of {list(PUSH_LOSSES)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"TrainConfig.compute_dtype={self.compute_dtype!r}; choose one of {list(COMPUTE_DTYPES)}"
            )
        if self.input_size is not None and (self.input_size < NETWORK_STRIDE or self.input_size % NETWORK_STRIDE):
            raise ValueError(f"TrainConfig.input_size={self.input_size!r} must be a multiple of {NETWORK_STRIDE} "
                             "(the network stride), or None")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["decay_fractions"] = list(self.decay_fractions)
        d["loss_weights"] = self.loss_weights.to_dict()
        d["augment"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["augment"].items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        kwargs = dict(d)
        if "decay_fractions" in kwargs:
            kwargs["decay_fractions"] = tuple(kwargs["decay_fractions"])
        if isinstance(kwargs.get("loss_weights"), Mapping):
            kwargs["loss_weights"] = LossWeights.from_dict(kwargs["loss_weights"])
        if isinstance(kwargs.get("augment"), Mapping):
            kwargs["augment"] = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in kwargs["augment"].items()})
        return cls(**kwargs)


def effective_model_config(model_config: ModelConfig, train_config: TrainConfig) -> ModelConfig:
    """The model config trained on: the given one, at ``train_config.input_size`` if set."""
    if train_config.input_size is None:
        return model_config
    return model_config.with_input_size(train_config.input_size)


# --------------------------------------------------------------------------------- optimizer


def learning_rate_schedule(config: TrainConfig) -> optax.Schedule:
    """Step-wise decay at fractions of the run, with an optional linear warm-up in front."""
    boundaries = {}
    for fraction in config.decay_fractions:
        # Two fractions may land on one step in a very short run: their factors then multiply.
        boundary = round(fraction * config.steps)
        boundaries[boundary] = boundaries.get(boundary, 1.0) * config.decay_factor
    decayed = optax.piecewise_constant_schedule(config.learning_rate, boundaries)
    if config.warmup_steps == 0:
        return decayed

    def schedule(step):
        # Multiplying (rather than joining schedules) keeps the decay boundaries where they are.
        warm = jnp.minimum(1.0, (step + 1) / config.warmup_steps)
        return warm * decayed(step)

    return schedule


def backbone_labels(params: Mapping[str, Any]) -> Any:
    """Pytree of "frozen" (backbone) / "trained" labels with the structure of ``params``."""
    if BACKBONE_MODULE not in params:
        raise ValueError(
            f"freeze_backbone=True, but the parameters have no '{BACKBONE_MODULE}' submodule "
            f"(top-level keys: {sorted(params)}); update train.BACKBONE_MODULE to the model's backbone name"
        )
    return traverse_util.path_aware_map(
        lambda path, _: "frozen" if path[0] == BACKBONE_MODULE else "trained", params
    )


#: The TrainConfig fields the optimizer reads; the rest (seed, cadence, data) must not key it.
OPTIMIZER_FIELDS = ("steps", "learning_rate", "decay_fractions", "decay_factor", "warmup_steps", "weight_decay",
                    "freeze_backbone")


def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam (or AdamW when weight_decay > 0) on the schedule, with the backbone optionally frozen.

    Equal optimizer settings give the same object: it is a static part of the train state, so
    runs that share it (a sweep's seeds, a resume) share the compiled init and step.
    """
    return _optimizer(TrainConfig(**{name: getattr(config, name) for name in OPTIMIZER_FIELDS}))


@functools.lru_cache(maxsize=16)
def _optimizer(config: TrainConfig) -> optax.GradientTransformation:
    schedule = learning_rate_schedule(config)
    if config.weight_decay > 0:
        tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        tx = optax.adam(schedule)
    if config.freeze_backbone:
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, backbone_labels)
    return tx


# ------------------------------------------------------------------------------- model, step


@functools.lru_cache(maxsize=16)
def build_model(
    model_config: ModelConfig, compute_dtype: str = "float32", init_scheme: str = "reference"
) -> nn.Module:
    """The flax module for a config, computing in ``compute_dtype`` (its parameters stay float32).

    Cached: the same config gives the same module object, so that jitted functions keyed on
    ``model.apply`` (the train state's apply_fn) compile once per process, not once per run.
    """
    from efficienthrnet.nn.model import EfficientHRNet  # here, so that losses and configs need no model

    return EfficientHRNet(model_config, dtype=COMPUTE_DTYPES[compute_dtype], init_scheme=init_scheme)


def create_train_state(model: nn.Module, model_config: ModelConfig, config: TrainConfig) -> TrainState:
    """Initialise params and batch statistics from ``config.seed`` and build the optimizer state."""
    return _create_state(model, model_config.input_size, make_optimizer(config), config.seed)


def pose_loss(outputs, batch: Mapping[str, jax.Array], *, loss_weights: LossWeights, push_loss: str = "exp"):
    """(total, parts) of the multi-resolution heatmap and associative-embedding losses."""
    out4, out2 = outputs
    return compute_losses(out4, out2, batch, loss_weights, push_loss)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    loss_weights: LossWeights,
    compute_dtype: str = "float32",
    schedule: optax.Schedule | None = None,
    push_loss: str = "exp",
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update on a pose batch (see `efficienthrnet.training.step.train_step`).

    Not jitted itself: `make_train_step` wraps it in ``jax.jit`` with the shardings. Returns the
    new state and scalar metrics (total loss, its parts, and the learning rate used).
    """
    loss_fn = functools.partial(pose_loss, loss_weights=loss_weights, push_loss=push_loss)
    return _step.train_step(state, batch, loss_fn=loss_fn, compute_dtype=compute_dtype, schedule=schedule)


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host pose batch (this process's share) -> global arrays of DEVICE_BATCH_KEYS split along "data"."""
    return _shard_batch(batch, mesh, DEVICE_BATCH_KEYS)


#: The TrainConfig fields `train_step` reads (loss, dtype, schedule); the rest (seed, cadence, data)
#: must not key its compilation, so that a sweep's seeds of one design share one compiled step.
STEP_FIELDS = ("steps", "learning_rate", "decay_fractions", "decay_factor", "warmup_steps", "compute_dtype",
               "loss_weights", "push_loss")


def make_train_step(config: TrainConfig, mesh: Mesh) -> Callable:
    """`train_step` jitted for the mesh: state replicated and donated, batch split on "data".

    Cached per (the fields the step reads, mesh), so that repeated runs in one process (resume,
    sweeps over seeds, tests) reuse the compiled step."""
    return _jitted_train_step(TrainConfig(**{name: getattr(config, name) for name in STEP_FIELDS}), mesh)


@functools.lru_cache(maxsize=16)
def _jitted_train_step(config: TrainConfig, mesh: Mesh) -> Callable:
    step = functools.partial(
        train_step,
        loss_weights=config.loss_weights,
        compute_dtype=config.compute_dtype,
        schedule=learning_rate_schedule(config),
        push_loss=config.push_loss,
    )
    return _step.jit_step(step, mesh)


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
