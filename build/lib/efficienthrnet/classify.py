"""Classification training of the compact EfficientNet backbones alone (the paper's Table 2 models).

The paper (section 4.1.2) first trains B(phi) on ImageNet and CIFAR-100, then initialises the pose
models from them. Its recipe is the default of `ClassifyConfig`: SGD with momentum 0.9 and weight
decay 1e-4, five warm-up epochs rising linearly from 1e-4 to 0.05, then the rate times 0.1 every
30 epochs (counted from the end of the warm-up) for 195 more epochs. Cross-entropy with optional
label smoothing; top-1 / top-5 accuracy on the held-out split.

Machinery comes from `efficienthrnet.train` (train state with BatchNorm statistics and a dropout
key, the data-parallel mesh, orbax checkpoints with the model config and the input position,
metrics as JSON lines), so a classifier run folder looks like a pose run folder:
``config.json`` (with ``"task": "classify"``, the model config, this config and the data),
``metrics.jsonl``, ``checkpoints/`` and, at the end, ``eval.json``.

    cfg = generate_config(-4, rule="reference")
    summary = train_classifier(cfg, ClassifyConfig(epochs=200), "tfds:cifar100:~/tfds", "runs/b-4")
    evaluate_classifier("runs/b-4", "tfds:cifar100:~/tfds")      # {"top1": ..., "top5": ..., ...}
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from efficienthrnet import train as pose_train
from efficienthrnet.config import ModelConfig
from efficienthrnet.data.classification import (
    ClassificationAugment,
    ClassificationLoader,
    ClassificationSource,
    describe_source,
    iterate_eval_batches,
    open_source,
)

TASK = "classify"
EVAL_FILE = "eval.json"
_DTYPES = pose_train.COMPUTE_DTYPES


# --------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ClassifyConfig:
    """Everything about a classification run that is not the architecture.

    Attributes:
      epochs: length of the run in passes over the training data (paper: 5 warm-up + 195).
      steps_per_epoch: optimizer steps per epoch; None takes len(train data) // batch_size.
      batch_size: global batch over all devices.
      learning_rate: peak rate, reached at the end of the warm-up (paper 0.05).
      warmup_epochs: linear warm-up length (paper 5); 0 starts at the peak.
      warmup_start_lr: rate at step 0 of the warm-up (paper 1e-4).
      decay_every_epochs: the rate is multiplied by `decay_factor` every this many epochs after
        the warm-up (paper 30, factor 0.1).
      momentum, nesterov: SGD momentum (paper 0.9, classical momentum).
      weight_decay: L2 penalty added to the gradients, as PyTorch's SGD does (paper 1e-4).
      decay_norm_and_bias: apply the weight decay to BatchNorm scales/biases and biases too (as
        PyTorch's SGD does by default); False decays only conv and dense kernels.
      label_smoothing: 0 = plain cross-entropy.
      resolution: square input side; None takes the config's `classifier_resolution` (224 x 1.15^phi).
      augment: random crop + flip ranges and the evaluation crop.
      random_augment: draw random crops and flips in training (False: central crops only).
      eval_every_epochs: evaluate on the held-out data this often; None only at the end.
      precise_bn_batches: before each evaluation and at the end of the run, replace the BatchNorm
        running averages by the mean batch statistics of this many training batches under the
        current weights (pycls's "precise BN"; the stored checkpoint keeps them). Short runs need
        it: running averages lag behind fast-moving weights. 0 keeps the running averages.
      eval_batch_size: batch of the evaluation (the last batch is padded, never dropped).
      eval_max_examples: evaluate on the first N held-out examples (the paper used 10,000 of
        ImageNet's); None uses all.
      checkpoint_every: save every this many steps (and always at the end).
      keep_checkpoints: how many recent checkpoints to keep.
      log_every: write a metrics line every this many steps (and at the end).
      seed: parameter init, dropout and data order.
      compute_dtype: "float32" or "bfloat16" activations (params and loss stay float32).
      depthwise_impl: the backbone's depthwise convolution ("auto" picks the fastest per backend).
      num_threads: input-pipeline threads.
      progress: show a tqdm progress bar.
    """

    epochs: float = 200.0
    steps_per_epoch: int | None = None
    batch_size: int = 128
    learning_rate: float = 0.05
    warmup_epochs: float = 5.0
    warmup_start_lr: float = 1e-4
    decay_every_epochs: float = 30.0
    decay_factor: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True
    label_smoothing: float = 0.0
    resolution: int | None = None
    augment: ClassificationAugment = field(default_factory=ClassificationAugment)
    random_augment: bool = True
    eval_every_epochs: float | None = None
    precise_bn_batches: int = 0
    eval_batch_size: int = 100
    eval_max_examples: int | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    seed: int = 0
    compute_dtype: str = "float32"
    depthwise_impl: str = "auto"
    num_threads: int = 4
    progress: bool = True

    def __post_init__(self):
        from efficienthrnet.config import check_finite

        check_finite(self, "ClassifyConfig")  # first: NaN passes every range comparison below
        for name in ("batch_size", "eval_batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ClassifyConfig.{name}={value!r} must be an integer >= 1")
        for name in ("steps_per_epoch", "resolution", "eval_max_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"ClassifyConfig.{name}={value!r} must be an integer >= 1 or None")
        if not isinstance(self.precise_bn_batches, int) or self.precise_bn_batches < 0:
            raise ValueError(
                f"ClassifyConfig.precise_bn_batches={self.precise_bn_batches!r} must be an integer >= 0"
            )
        if not self.epochs > 0:
            raise ValueError(f"ClassifyConfig.epochs={self.epochs!r} must be > 0")
        if not self.learning_rate > 0 or not 0 < self.warmup_start_lr <= self.learning_rate:
            raise ValueError(
                f"ClassifyConfig learning rates must satisfy 0 < warmup_start_lr "
                f"({self.warmup_start_lr}) <= learning_rate ({self.learning_rate})"
            )
        if self.warmup_epochs < 0 or not self.decay_every_epochs > 0 or not 0 < self.decay_factor <= 1:
            raise ValueError(
                f"ClassifyConfig: need warmup_epochs >= 0 ({self.warmup_epochs}), decay_every_epochs > 0 "
                f"({self.decay_every_epochs}) and decay_factor in (0, 1] ({self.decay_factor})"
            )
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(
                f"ClassifyConfig: momentum {self.momentum} must lie in [0, 1) and weight_decay "
                f"{self.weight_decay} must be >= 0"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"ClassifyConfig.label_smoothing={self.label_smoothing} must lie in [0, 1)")
        if self.eval_every_epochs is not None and not self.eval_every_epochs > 0:
            raise ValueError(f"ClassifyConfig.eval_every_epochs={self.eval_every_epochs} must be > 0 or None")
        if self.compute_dtype not in _DTYPES:
            raise ValueError(
                f"ClassifyConfig.compute_dtype={self.compute_dtype!r}; choose one of {list(_DTYPES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassifyConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"ClassifyConfig: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        kwargs = dict(d)
        if isinstance(kwargs.get("augment"), Mapping):
            kwargs["augment"] = ClassificationAugment.from_dict(dict(kwargs["augment"]))
        return cls(**kwargs)


def input_resolution(model_config: ModelConfig, config: ClassifyConfig) -> int:
    """The square input side trained and evaluated at: the override or the config's classifier resolution."""
    return config.resolution or model_config.backbone.classifier_resolution


# ------------------------------------------------------------------------------- optimisation


def learning_rate_schedule(config: ClassifyConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from `warmup_start_lr` to `learning_rate`, then step decay, in steps."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    decay_every = max(1, int(round(config.decay_every_epochs * steps_per_epoch)))
    start, peak = config.warmup_start_lr, config.learning_rate

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = start + (peak - start) * step / max(warmup, 1)
        decayed = peak * config.decay_factor ** jnp.floor(jnp.maximum(step - warmup, 0.0) / decay_every)
        return jnp.where(step < warmup, warm, decayed)

    return schedule


def _decay_mask(params: Any) -> Any:
    """True for conv and dense kernels (the leaves named "kernel")."""
    from flax import traverse_util

    return traverse_util.path_aware_map(lambda path, _: path[-1] == "kernel", params)


def make_optimizer(config: ClassifyConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum on the schedule; L2 weight decay added to the gradients first (PyTorch style)."""
    return _optimizer(_optimizer_key(config), steps_per_epoch)


def _optimizer_key(config: ClassifyConfig) -> ClassifyConfig:
    """The config with only the optimizer's fields kept, so runs that share them share compiled steps."""
    names = (
        "learning_rate",
        "warmup_epochs",
        "warmup_start_lr",
        "decay_every_epochs",
        "decay_factor",
        "momentum",
        "nesterov",
        "weight_decay",
        "decay_norm_and_bias",
        "label_smoothing",
    )
    return ClassifyConfig(**{name: getattr(config, name) for name in names})


# Cached so that equal settings give the *same* optimizer object: the train state's tree structure
# (which holds it) then matches and jax reuses the compiled step across runs in one process.
@functools.lru_cache(maxsize=16)
def _optimizer(config: ClassifyConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    sgd = optax.sgd(
        learning_rate_schedule(config, steps_per_epoch),
        momentum=config.momentum or None,
        nesterov=config.nesterov,
    )
    if config.weight_decay == 0:
        return sgd
    mask = None if config.decay_norm_and_bias else _decay_mask
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask), sgd)


def cross_entropy(logits: jax.Array, labels: jax.Array, label_smoothing: float = 0.0) -> jax.Array:
    """Per-example cross-entropy against (optionally smoothed) one-hot labels."""
    targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=jnp.float32)
    if label_smoothing:
        targets = optax.smooth_labels(targets, label_smoothing)
    return optax.softmax_cross_entropy(logits.astype(jnp.float32), targets)


def topk_correct(logits: jax.Array, labels: jax.Array, k: int) -> jax.Array:
    """1.0 where the label is among the k largest logits (k capped at the class count)."""
    k = min(k, logits.shape[-1])
    _, top = jax.lax.top_k(logits, k)
    return jnp.any(top == labels[:, None], axis=-1).astype(jnp.float32)


# ------------------------------------------------------------------------------------ model


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


@functools.partial(jax.jit, static_argnums=0)
def _init_variables(model, key: jax.Array, dummy: jax.Array) -> dict:
    return model.init(key, dummy, train=False)


def create_state(
    model, resolution: int, config: ClassifyConfig, steps_per_epoch: int
) -> pose_train.TrainState:
    """Initialised params and BatchNorm statistics (from `config.seed`) plus the SGD state."""
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    variables = _init_variables(model, init_key, jnp.zeros((1, resolution, resolution, 3), jnp.float32))
    params = jax.tree.map(lambda a: a.astype(jnp.float32), variables["params"])
    return pose_train.TrainState.create(
        apply_fn=model.apply,
        params=params,
        batch_stats=variables.get("batch_stats", {}),
        tx=make_optimizer(config, steps_per_epoch),
        rng=dropout_key,
    )


def train_step(
    state: pose_train.TrainState,
    batch: Mapping[str, jax.Array],
    *,
    label_smoothing: float,
    schedule: optax.Schedule,
) -> tuple[pose_train.TrainState, dict[str, jax.Array]]:
    """One SGD update on a batch {"image", "label"}: loss, batch top-1, learning rate used."""
    dropout_key = jax.random.fold_in(state.rng, state.step)
    learning_rate = schedule(state.step)

    def loss_fn(params):
        logits, updates = state.apply_fn(
            {"params": params, "batch_stats": state.batch_stats},
            batch["image"],
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        loss = cross_entropy(logits, batch["label"], label_smoothing).mean()
        return loss, (logits, updates["batch_stats"])

    (loss, (logits, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_stats, state.batch_stats)
    state = state.apply_gradients(grads=grads, batch_stats=new_stats)
    metrics = {
        "loss": loss,
        "accuracy": topk_correct(logits, batch["label"], 1).mean(),
        "learning_rate": learning_rate,
    }
    return state, metrics


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
    replicated, split = NamedSharding(mesh, P()), NamedSharding(mesh, P("data"))
    return jax.jit(
        step, in_shardings=(replicated, split), out_shardings=(replicated, replicated), donate_argnums=0
    )


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    sharding = NamedSharding(mesh, P("data"))
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in ("image", "label")
    }


# ------------------------------------------------------------------------------- evaluation


@functools.partial(jax.jit, static_argnums=(0, 1))
def _scaled_batch_statistics(apply_fn, momentum: float, variables, image, key):
    """Every BatchNorm layer's statistics of one batch in train mode, times (1 - momentum).

    With the running averages set to zero, one train-mode pass leaves (1 - momentum) x the batch
    statistics in them; the caller divides by (1 - momentum) once after summing.
    """
    zeros = jax.tree.map(jnp.zeros_like, variables["batch_stats"])
    _, updates = apply_fn(
        {"params": variables["params"], "batch_stats": zeros},
        image,
        train=True,
        mutable=["batch_stats"],
        rngs={"dropout": key},
    )
    return updates["batch_stats"]


def precise_batch_stats(model, variables: Mapping[str, Any], batches, momentum: float) -> Any:
    """Population BatchNorm statistics under the current weights: the mean of each layer's batch
    mean and variance over `batches` (each {"image": ...}), as pycls's precise BN computes them.

    `momentum` is the BatchNorm decay every layer of the model uses (the backbone's `bn_decay`).
    """
    total, count = None, 0
    for i, batch in enumerate(batches):
        scaled = _scaled_batch_statistics(
            model.apply, float(momentum), variables, jnp.asarray(batch["image"]), jax.random.PRNGKey(i)
        )
        total = scaled if total is None else jax.tree.map(jnp.add, total, scaled)
        count += 1
    if count == 0:
        raise ValueError("precise_batch_stats needs at least one batch")
    return jax.tree.map(
        lambda t, old: (t / (count * (1.0 - momentum))).astype(old.dtype), total, variables["batch_stats"]
    )


@functools.partial(jax.jit, static_argnums=0)
def _eval_step(apply_fn, variables, image, label, valid):
    logits = apply_fn(variables, image, train=False)
    return {
        "top1": jnp.sum(topk_correct(logits, label, 1) * valid),
        "top5": jnp.sum(topk_correct(logits, label, 5) * valid),
        "loss": jnp.sum(cross_entropy(logits, label) * valid),
    }


def evaluate_variables(
    model,
    variables: Mapping[str, Any],
    source: ClassificationSource | str,
    resolution: int,
    *,
    batch_size: int = 100,
    max_examples: int | None = None,
    augment: ClassificationAugment = ClassificationAugment(),
    split: str = "val",
) -> dict[str, float]:
    """Top-1, top-5 (fractions in [0, 1]) and mean cross-entropy of a classifier on held-out data.

    Top-5 is capped at the class count (with fewer than five classes it is 1.0 by definition).
    """
    source = open_source(source, split)
    variables = {"params": variables["params"], "batch_stats": variables.get("batch_stats", {})}
    sums, count = {"top1": 0.0, "top5": 0.0, "loss": 0.0}, 0
    for batch in iterate_eval_batches(source, batch_size, resolution, augment, max_examples):
        out = _eval_step(model.apply, variables, batch["image"], batch["label"], batch["valid"])
        for key, value in jax.device_get(out).items():
            sums[key] += float(value)
        count += int(batch["valid"].sum())
    return {
        "top1": sums["top1"] / count,
        "top5": sums["top5"] / count,
        "loss": sums["loss"] / count,
        "count": count,
        "data": source.name,
    }


# ---------------------------------------------------------------------------- run directory


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The classifier run's config.json (refuses folders of other tasks, naming what they hold)."""
    path = Path(run_dir) / pose_train.CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a classifier run folder (train_classifier writes it)"
        )
    record = json.loads(path.read_text())
    if record.get("task") != TASK:
        raise ValueError(
            f"{run_dir} holds a {record.get('task', 'pose')!r} run, not a classifier run "
            f'(config.json has no "task": "{TASK}")'
        )
    return record


def _prepare_run_dir(run_dir: Path, record: dict[str, Any], model_config: ModelConfig, resume: bool) -> None:
    """Refuse to mix runs: an existing run must be resumed, and resumed with the same model and classes."""
    if pose_train.checkpoint_steps(run_dir) and not resume:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints; pass resume=True (--resume) to continue "
            f"it or choose a new run dir"
        )
    if resume and (run_dir / pose_train.CONFIG_FILE).is_file():
        stored = read_run_record(run_dir)
        pose_train.check_same_architecture(
            ModelConfig.from_dict(stored["model"]), model_config, f"run dir {run_dir}"
        )
        for key in ("num_classes", "resolution"):
            if stored[key] != record[key]:
                raise ValueError(
                    f"run dir {run_dir} was trained with {key}={stored[key]}, but this run has "
                    f"{key}={record[key]}; use the same data and resolution, or a new run dir"
                )
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / pose_train.CONFIG_FILE).write_text(json.dumps(record, indent=2))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop metric lines written after the restored checkpoint (no step appears twice)."""
    if path.is_file():
        kept = [
            line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step
        ]
        path.write_text("".join(line + "\n" for line in kept))


def _host_metrics(step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Host copy of a step's metrics; stops the run on a non-finite loss, naming the step."""
    values = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
    if not math.isfinite(values["loss"]):
        raise FloatingPointError(
            f"non-finite loss {values['loss']} at step {step} (learning rate "
            f"{values['learning_rate']:.4g}); lower the learning rate or check the data; "
            f"the last checkpoint is intact"
        )
    return values


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
    from tqdm.auto import tqdm

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
    mesh = pose_train.make_mesh()
    pose_train.check_batch_divisible(cfg.batch_size, mesh)
    loader = ClassificationLoader(
        train_source,
        cfg.batch_size // jax.process_count(),
        resolution,
        seed=cfg.seed,
        augment=cfg.augment,
        random_augment=cfg.random_augment,
        shard_index=jax.process_index(),
        shard_count=jax.process_count(),
        num_threads=cfg.num_threads,
    )
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
    _prepare_run_dir(run_dir, record, model_config, resume)

    model = build_classifier(model_config, train_source.num_classes, cfg)
    state = pose_train.replicate(create_state(model, resolution, cfg, steps_per_epoch), mesh)
    # The checkpoint manager reads only `keep_checkpoints` from the config it is given.
    manager = pose_train.checkpoint_manager(run_dir, cfg)
    if resume and manager.latest_step() is not None:
        state, data_state = pose_train.restore_checkpoint(manager, state, model_config)
        loader.set_state(data_state)
    start = int(jax.device_get(state.step))
    is_chief = jax.process_index() == 0
    if is_chief:
        _truncate_metrics(run_dir / pose_train.METRICS_FILE, start)

    end = total_steps if stop_after_steps is None else min(stop_after_steps, total_steps)
    eval_every = (
        None if cfg.eval_every_epochs is None else max(1, int(round(cfg.eval_every_epochs * steps_per_epoch)))
    )
    step_fn = make_train_step(cfg, steps_per_epoch, mesh)
    writer = pose_train.MetricsWriter(run_dir, enabled=is_chief)
    progress = tqdm(
        total=end,
        initial=start,
        desc=f"classify {model_config.name}",
        unit="step",
        disable=not (cfg.progress and is_chief),
    )

    def recalibrate(state):
        """The state with precise BN statistics from a side stream of training batches (main stream untouched)."""
        side = ClassificationLoader(
            train_source,
            cfg.batch_size // jax.process_count(),
            resolution,
            seed=cfg.seed + 1,
            augment=cfg.augment,
            random_augment=cfg.random_augment,
            num_threads=cfg.num_threads,
        )
        try:
            batches = (next(side) for _ in range(cfg.precise_bn_batches))
            variables = {"params": state.params, "batch_stats": state.batch_stats}
            stats = precise_batch_stats(model, variables, batches, model_config.backbone.bn_decay)
        finally:
            side.close()
        return state.replace(batch_stats=pose_train.replicate(stats, mesh))

    def evaluate(state) -> dict[str, float]:
        variables = {"params": state.params, "batch_stats": state.batch_stats}
        return evaluate_variables(
            model,
            variables,
            eval_source,
            resolution,
            batch_size=cfg.eval_batch_size,
            max_examples=cfg.eval_max_examples,
            augment=cfg.augment,
        )

    last, final_eval = {}, None
    window_start, window_images, total_time, total_images = time.perf_counter(), 0, 0.0, 0
    try:
        for step in range(start + 1, end + 1):
            state, metrics = step_fn(state, shard_batch(next(loader), mesh))
            window_images += cfg.batch_size
            logging = step % cfg.log_every == 0 or step == end
            evaluating = eval_source is not None and (
                step == total_steps or (eval_every and step % eval_every == 0)
            )
            if cfg.precise_bn_batches and (evaluating or step == total_steps):
                state = recalibrate(state)
            if logging or evaluating:
                last = _host_metrics(step, metrics)
                elapsed = time.perf_counter() - window_start
                entry = {
                    "step": step,
                    "epoch": step / steps_per_epoch,
                    **last,
                    "images_per_s": window_images / elapsed,
                }
                total_time, total_images = total_time + elapsed, total_images + window_images
                if evaluating:
                    result = evaluate(state)
                    entry.update({f"eval_{k}": result[k] for k in ("top1", "top5", "loss")})
                    final_eval = result if step == total_steps else final_eval
                writer.write(entry)
                progress.update(step - progress.n)
                progress.set_postfix(loss=f"{last['loss']:.4g}", acc=f"{last['accuracy']:.3f}")
                window_start, window_images = time.perf_counter(), 0
            if step % cfg.checkpoint_every == 0 or step == end:
                pose_train.save_checkpoint(manager, state, model_config, loader.get_state())
        manager.wait_until_finished()
    finally:
        progress.close()
        writer.close()
        manager.close()
        loader.close()
    if final_eval is not None and is_chief:
        (run_dir / EVAL_FILE).write_text(json.dumps({"step": total_steps, **final_eval}, indent=2))
    return {
        "run_dir": str(run_dir),
        "step": int(jax.device_get(state.step)),
        "start_step": start,
        "steps": total_steps,
        "epochs": cfg.epochs,
        "num_classes": int(train_source.num_classes),
        "resolution": resolution,
        "params": int(sum(np.size(x) for x in jax.tree_util.tree_leaves(state.params))),
        "metrics": last,
        "top1": None if final_eval is None else final_eval["top1"],
        "top5": None if final_eval is None else final_eval["top5"],
        "images_per_s": total_images / total_time if total_time else None,
        "checkpoints": pose_train.checkpoint_steps(run_dir),
        "model": model_config.name,
    }


def load_classifier(
    run_dir: str | os.PathLike, step: int | None = None
) -> tuple[ModelConfig, Any, dict, dict]:
    """(model config, classifier module, {"params", "batch_stats"}, run record) of a classifier run."""
    record = read_run_record(run_dir)
    model_config = ModelConfig.from_dict(record["model"])
    cfg = ClassifyConfig.from_dict(record["classify"])
    model = build_classifier(model_config, record["num_classes"], cfg)
    model_config, model, variables = pose_train.load_for_inference(run_dir, step, model=model)
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
    model_config, model, variables, record = load_classifier(run_dir, step)
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


# ------------------------------------------------------------------------------- Table 2 sweep

#: Which of the paper's Table 2 columns a sweep's data corresponds to.
TABLE2_DATASETS = ("cifar100", "imagenet2012")


def table2_reported_points(dataset: str = "cifar100"):
    """The paper's Table 2 as reported, for one dataset: model, phi, resolution, params, macs, top1 (fraction).

    Rows whose top-1 is not legible in the paper (B-3) keep top1 = NaN. The "FLOPs" column is
    multiply-accumulates (see `efficienthrnet.complexity`).
    """
    import pandas as pd

    from efficienthrnet.complexity import AS_REPORTED_CLASSIFIERS

    if dataset not in TABLE2_DATASETS:
        raise ValueError(f"Table 2 reports {TABLE2_DATASETS}, not {dataset!r}")
    prefix = "cifar100" if dataset == "cifar100" else "imagenet"
    rows = []
    for r in AS_REPORTED_CLASSIFIERS.values():
        top1 = getattr(r, f"{prefix}_top1")
        rows.append(
            {
                "model": r.model,
                "phi": float(r.phi),
                "resolution": r.resolution,
                "params": getattr(r, f"{prefix}_params"),
                "macs": r.flops,
                "top1": math.nan if top1 is None else top1 / 100,
                "note": r.note,
            }
        )
    return pd.DataFrame(rows).sort_values("phi").reset_index(drop=True)


def table2_comparison(rule: str = "reference"):
    """Computed params / MACs of B0..B-4 (exact layer walk) beside the paper's Table 2 as reported."""
    import pandas as pd

    from efficienthrnet.complexity import AS_REPORTED_CLASSIFIERS, profile_classifier
    from efficienthrnet.scaling import generate_config

    rows = []
    for phi, r in sorted(AS_REPORTED_CLASSIFIERS.items(), reverse=True):
        cfg = generate_config(phi, rule=rule)
        imagenet, cifar = profile_classifier(cfg, 1000), profile_classifier(cfg, 100)
        rows.append(
            {
                "model": r.model,
                "resolution": cfg.backbone.classifier_resolution,
                "reported_resolution": r.resolution,
                "macs": imagenet.macs,
                "reported_macs": r.flops,
                "params_imagenet": imagenet.params,
                "reported_params_imagenet": r.imagenet_params,
                "params_cifar100": cifar.params,
                "reported_params_cifar100": r.cifar100_params,
                "params_backbone": imagenet.parts["backbone"][0],
                "reported_top1_imagenet": r.imagenet_top1,
                "reported_top1_cifar100": r.cifar100_top1,
            }
        )
    return pd.DataFrame(rows)


def classify_trial_config(trial, spec) -> ClassifyConfig:
    """The ClassifyConfig of a sweep trial: the spec's [train] table, the trial's seed, no progress bar."""
    table = {"progress": False, **dict(spec.train), "seed": trial.seed}
    try:
        return ClassifyConfig.from_dict(table)
    except (TypeError, ValueError) as err:
        raise ValueError(f"sweep {spec.name!r}: [train] is not a valid ClassifyConfig: {err}") from None


def run_classify_trial(trial, spec, trial_dir: Path) -> dict[str, Any]:
    """Sweep task "classify": train B(phi) alone (resuming in trial_dir/run), evaluate, profile.

    Spec settings: [train] holds `ClassifyConfig` fields; [options] holds ``data`` (a
    classification spec such as "tfds:cifar100:DATA_DIR") and optionally ``eval_data``.
    Result fields: top1, top5, params, macs, flops (of the classifier at its resolution),
    params_backbone / macs_backbone, resolution, num_classes, train_steps, train_time_s,
    final_loss, train_images_per_s.
    """
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


def _register_sweep_task() -> None:
    from efficienthrnet import pareto, sweep

    sweep.register_task(TASK, run_classify_trial)
    pareto.register_plotter(TASK, plot_classify_sweep)  # top-1 vs MACs / params with Table 2


_register_sweep_task()
