"""Training: the train state, one jitted data-parallel step, checkpoints, exact resume, metrics.

One readable step in the style of flax's ImageNet example, but data parallel through ``jax.jit``
on sharded arrays instead of ``pmap``: a one-axis `Mesh` ("data") over every device, the batch
split along it and the train state replicated. BatchNorm then reduces over the global batch with
no extra code, and one device is the same code path with a mesh of one.

Reference behaviour (reference page, section 5) and where this module departs from it:

- Adam at 1e-3, times 0.1 at 2/3 and 13/15 of training (epochs 200 and 260 of 300).
- The reference builds Adam *without* weight decay although its config sets 1e-4 (quirk 12), so
  ``weight_decay=0`` is the default; any value > 0 switches to AdamW (decoupled decay).
- The reference always freezes the backbone (quirk 8); here that is ``freeze_backbone=True``,
  off by default. As in the reference, a frozen backbone still updates its BatchNorm statistics.

A run folder holds ``config.json`` (model and train config), ``metrics.jsonl`` and
``checkpoints/`` (orbax). A checkpoint stores the whole train state (params, batch statistics,
optimizer state, step, PRNG key), the input pipeline's position and the model config, so that a
resumed run continues bit for bit where the interrupted one stopped.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import math
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import traverse_util
from flax.training import train_state
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from efficienthrnet.data.augment import AugmentConfig
from efficienthrnet.config import NETWORK_STRIDE, ModelConfig, check_finite
from efficienthrnet.files import check_output_dir, write_text_atomic
from efficienthrnet.keypoints import get_schema, restore_schema, schema_to_dict
from efficienthrnet.losses import PUSH_LOSSES, LossWeights, compute_losses

#: Batch entries the step needs on the device (the rest, e.g. "image_id", stay on the host).
DEVICE_BATCH_KEYS = ("image", "heatmaps_4", "heatmaps_2", "mask_4", "mask_2", "joints_4")
#: Name of the model's backbone submodule: top-level key of its parameter tree.
BACKBONE_MODULE = "backbone"
#: Environment variable that asks for ``jax.distributed.initialize()`` (multi-host runs).
DISTRIBUTED_ENV = "EFFICIENTHRNET_DISTRIBUTED"

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# XLA options of the one-off state initialisation on CPU (see create_train_state).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}


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


@functools.lru_cache(maxsize=16)
def make_optimizer(config: TrainConfig) -> optax.GradientTransformation:
    """Adam (or AdamW when weight_decay > 0) on the schedule, with the backbone optionally frozen.

    Cached per config: the optimizer is a static part of the train state, so an equal object
    lets a second run in the same process reuse the compiled step.
    """
    schedule = learning_rate_schedule(config)
    if config.weight_decay > 0:
        tx = optax.adamw(schedule, weight_decay=config.weight_decay)
    else:
        tx = optax.adam(schedule)
    if config.freeze_backbone:
        tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()}, backbone_labels)
    return tx


# ------------------------------------------------------------------------------- train state


class TrainState(train_state.TrainState):
    """flax's TrainState plus BatchNorm statistics and the base PRNG key of dropout.

    The key never changes: step k uses ``fold_in(rng, k)``, so a resumed run draws the same
    dropout masks as an uninterrupted one.
    """

    batch_stats: Any = None
    rng: jax.Array = None


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
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(config.seed))
    build = _compiled_state_builder(model, model_config.input_size, dataclasses.replace(config, seed=0))
    return build(init_key, dropout_key)


@functools.lru_cache(maxsize=8)
def _compiled_state_builder(model: nn.Module, size: int, config: TrainConfig) -> Callable:
    """(init_key, dropout_key) -> TrainState, compiled once per model, input size and config.

    One jitted function does it all: run eagerly, the optimizer's init compiles one tiny program
    per parameter leaf. It runs once per run, so on CPU it is compiled without LLVM optimisation:
    the unrolled random-number code of hundreds of initialisers otherwise takes most of the
    compile (phi=-4 on the 2-core CPU: 28 s -> 13 s, same values).
    """
    tx = make_optimizer(config)

    def build(init_key, dropout_key):
        variables = model.init(init_key, jnp.zeros((1, size, size, 3), jnp.float32), train=False)
        state = TrainState.create(
            apply_fn=model.apply,
            params=variables["params"],
            batch_stats=variables.get("batch_stats", {}),
            tx=tx,
            rng=dropout_key,
        )
        # A strongly typed step, as a restored checkpoint has: otherwise the first step after a
        # resume sees another input type and compiles again.
        return state.replace(step=jnp.asarray(state.step, jnp.int32))

    key = jax.random.PRNGKey(0)
    options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    return jax.jit(build).lower(key, key).compile(compiler_options=options)


def _cast_floating(tree: Any, dtype) -> Any:
    """Cast the floating leaves of a pytree (the compute-dtype copy of float32 params)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    loss_weights: LossWeights,
    compute_dtype: str = "float32",
    schedule: optax.Schedule | None = None,
    push_loss: str = "exp",
) -> tuple[TrainState, dict[str, jax.Array]]:
    """One optimizer update: forward in train mode, loss, gradients, update, new BN statistics.

    Not jitted itself: `make_train_step` wraps it in ``jax.jit`` with the shardings. Returns the
    new state and scalar metrics (total loss, its parts, and the learning rate used).
    """
    dtype = COMPUTE_DTYPES[compute_dtype]
    dropout_key = jax.random.fold_in(state.rng, state.step)

    def loss_fn(params):
        variables = {"params": _cast_floating(params, dtype), "batch_stats": state.batch_stats}
        (out4, out2), updates = state.apply_fn(
            variables,
            batch["image"].astype(dtype),
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        total, parts = compute_losses(out4, out2, batch, loss_weights, push_loss)
        return total, (parts, updates["batch_stats"])

    (loss, (parts, new_stats)), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
    # BN statistics come back in the compute dtype when the model keeps it; store them as before.
    new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_stats, state.batch_stats)
    new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
    metrics = {"loss": loss, **parts}
    if schedule is not None:
        metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics


# ---------------------------------------------------------------------------------- sharding


def maybe_initialize_distributed(config: TrainConfig) -> bool:
    """Start multi-host JAX when the config or EFFICIENTHRNET_DISTRIBUTED=1 asks; True if started."""
    wanted = config.distributed or os.environ.get(DISTRIBUTED_ENV, "") not in ("", "0")
    if not wanted:
        return False
    if not jax.distributed.is_initialized():
        # Coordinator address, process count and id come from the cluster environment (SLURM,
        # TPU pods, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
        jax.distributed.initialize()
    return True


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis ("data") mesh over the given devices, by default every device of every host.

    The same devices give the same Mesh object (equal meshes do not hash equal), so that the
    cached jitted step is found again.
    """
    return _mesh_of(tuple(jax.devices() if devices is None else devices))


@functools.lru_cache(maxsize=8)
def _mesh_of(devices: tuple) -> Mesh:
    return Mesh(np.asarray(devices), ("data",))


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Refuse a global batch that does not split evenly over the devices and hosts."""
    n = mesh.size
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(f"batch_size {batch_size} does not divide evenly over {n} devices; use {hint}")
    if batch_size % jax.process_count():
        raise ValueError(f"batch_size {batch_size} does not divide over {jax.process_count()} hosts")


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Host batch (this process's share) -> global arrays split along "data"."""
    sharding = NamedSharding(mesh, P("data"))
    missing = [k for k in DEVICE_BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(
            f"training batch lacks {missing}; it has {sorted(batch)} (see the data pipeline contract)"
        )
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in DEVICE_BATCH_KEYS
    }


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of a pytree on all devices of the mesh (params, optimizer state, ...)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


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
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(replicated, NamedSharding(mesh, P("data"))),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
    )


# ------------------------------------------------------------------------------- checkpoints

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
CHECKPOINT_DIR = "checkpoints"


def describe_model(config: ModelConfig) -> str:
    """Short human name of an architecture for error messages: rule, phi, input size."""
    return f"rule={config.rule!r} phi={config.phi:g} keypoints={config.keypoints!r} (input {config.input_size})"


def check_same_architecture(stored: ModelConfig, requested: ModelConfig, where: str) -> None:
    """Refuse to load weights of one architecture into another, naming both."""
    if not stored.same_architecture(requested):
        raise ValueError(
            f"{where} holds a model with {describe_model(stored)}, but the requested model has "
            f"{describe_model(requested)}; pass the same phi, rule and keypoints as the run, or use a new run dir"
        )


def _encode_data_state(state: Any) -> Any:
    """Make the input pipeline's state JSON-safe (grain's iterators may hand back bytes)."""
    if isinstance(state, bytes):
        return {"__bytes_b64__": base64.b64encode(state).decode("ascii")}
    return state


def _decode_data_state(state: Any) -> Any:
    if isinstance(state, dict) and set(state) == {"__bytes_b64__"}:
        return base64.b64decode(state["__bytes_b64__"])
    return state


def _state_tree(state: TrainState) -> dict[str, Any]:
    """The parts of the train state that a checkpoint stores (functions and tx stay out)."""
    return {
        "params": state.params,
        "batch_stats": state.batch_stats,
        "opt_state": state.opt_state,
        "step": state.step,
        "rng": state.rng,
    }


def checkpoint_manager(run_dir: Path, config: TrainConfig | None = None, read_only: bool = False):
    """Orbax manager of RUN_DIR/checkpoints: keeps the last K, writes atomically (tmp dir + rename)."""
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if config is None else config.keep_checkpoints,
        create=not read_only,
        read_only=read_only,
        # Saves are explicit (every N steps and at the end), so no interval policy here.
        enable_async_checkpointing=False,
    )
    return ocp.CheckpointManager(
        Path(run_dir).absolute() / CHECKPOINT_DIR, options=options, item_names=("state", "meta")
    )


def save_checkpoint(manager, state: TrainState, model_config: ModelConfig, data_state: Any) -> None:
    """Save state, model config and input-pipeline position under the state's step."""
    step = int(jax.device_get(state.step))
    meta = {
        "step": step,
        "model_config": model_config.to_dict(),
        "data_state": _encode_data_state(data_state),
    }
    manager.save(
        step,
        args=ocp.args.Composite(
            state=ocp.args.StandardSave(_state_tree(state)), meta=ocp.args.JsonSave(meta)
        ),
        force=True,
    )


def restore_checkpoint(
    manager, state: TrainState, model_config: ModelConfig, step: int | None = None
) -> tuple[TrainState, Any]:
    """Restore into the structure and shardings of ``state``; returns (state, data_state).

    Raises ValueError when the checkpoint was written for another architecture.
    """
    step = manager.latest_step() if step is None else step
    where = f"checkpoint {manager.directory / str(step)}"
    with _reading_checkpoint(where):
        meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"]
        stored = ModelConfig.from_dict(meta["model_config"])
    check_same_architecture(stored, model_config, where)
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, _state_tree(state))
    with _reading_checkpoint(where):
        restored = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))[
            "state"
        ]
    return state.replace(**restored), _decode_data_state(meta["data_state"])


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or does not fit the model; the message names the folder."""


def _first_line(err: BaseException, limit: int = 300) -> str:
    text = " ".join(str(err).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


@contextlib.contextmanager
def _reading_checkpoint(where: str):
    """Turn whatever orbax raises on a damaged checkpoint into one message naming the folder.

    Orbax's own errors (JSON, tensorstore, missing items, KeyError) say neither which folder nor
    what to do. A shape or structure mismatch means the checkpoint is intact but does not fit.
    """
    try:
        yield
    except CheckpointError:
        raise
    except ValueError as err:
        if "shape" in str(err) or "Structure mismatch" in str(err):
            raise CheckpointError(
                f"{where} does not fit the model: {_first_line(err)}; it was written by another model "
                f"(phi, rule or keypoints): start a new run folder for this model"
            ) from err
        raise _damaged(where, err) from err
    except Exception as err:
        raise _damaged(where, err) from err


def _damaged(where: str, err: BaseException) -> CheckpointError:
    return CheckpointError(
        f"{where} is damaged or incomplete and cannot be read ({type(err).__name__}: {_first_line(err)}); "
        f"delete that folder to fall back to the previous checkpoint, or start a new run"
    )


@functools.lru_cache(maxsize=8)
def expected_variable_shapes(model: nn.Module, size: int) -> Any:
    """The variables' shapes and dtypes of ``model`` at a square input: traced, never run (cached,
    as tracing a whole network takes seconds)."""
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    return jax.eval_shape(lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)


def check_variables_fit(model: nn.Module, model_config: ModelConfig, variables: Mapping[str, Any],
                        where: str) -> None:
    """Refuse stored variables whose tree or shapes differ from the model's, naming the first
    differing parameter and both shapes (applying them would fail deep inside flax)."""
    try:
        expected = expected_variable_shapes(model, model_config.input_size)
    except Exception:  # a custom module initialised another way: it is checked on first use instead
        return
    for collection in ("params", "batch_stats"):
        want = traverse_util.flatten_dict(dict(expected.get(collection, {})), sep="/")
        have = traverse_util.flatten_dict(dict(variables.get(collection) or {}), sep="/")
        for name in sorted(set(want) | set(have)):
            if name not in have or name not in want:
                side = "model" if name not in have else "checkpoint"
                raise CheckpointError(
                    f"{where} does not fit the model {describe_model(model_config)}: {collection} {name} "
                    f"is only in the {side}; load it with the model it was trained with"
                )
            if tuple(np.shape(have[name])) != tuple(want[name].shape):
                raise CheckpointError(
                    f"{where} does not fit the model {describe_model(model_config)}: {collection} {name} "
                    f"has shape {tuple(np.shape(have[name]))} in the checkpoint but {tuple(want[name].shape)} "
                    f"in the model; load it with the model it was trained with"
                )


# ---------------------------------------------------------------------------- run directory


def _read_run_config(run_dir: Path) -> dict[str, Any]:
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a training run folder (train writes it first)"
        )
    try:
        record = json.loads(path.read_text())
        ModelConfig.from_dict(record["model"])
    except Exception as err:  # JSON, a missing table or a bad field: the file was edited or cut short
        raise ValueError(
            f"{path} is damaged ({type(err).__name__}: {_first_line(err)}); restore it from a copy, or "
            f"delete the run folder {run_dir} and train again"
        ) from None
    return record


def prepare_run_dir(
    run_dir: Path, model_config: ModelConfig, config: TrainConfig, data_spec: str, resume: bool
):
    """Check the folder against the request and write config.json (process 0 only)."""
    check_run_dir(run_dir, model_config, resume)
    write_run_config(run_dir, model_config, config, data_spec)


def check_run_dir(run_dir: Path, model_config: ModelConfig, resume: bool) -> None:
    """Refuse a run folder that this request must not write into; writes nothing.

    Valid: a new path, an existing folder, or a run folder of the same model with --resume.
    """
    check_output_dir(run_dir, "run folder")
    checkpoints = run_dir / CHECKPOINT_DIR
    has_checkpoints = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    if has_checkpoints and not resume:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints; pass resume=True (--resume) to continue it or choose a new run dir"
        )
    if resume and (run_dir / CONFIG_FILE).is_file():
        stored = ModelConfig.from_dict(_read_run_config(run_dir)["model"])
        check_same_architecture(stored, model_config, f"run dir {run_dir}")


def write_run_config(run_dir: Path, model_config: ModelConfig, config: TrainConfig, data_spec: Any) -> None:
    """Write RUN_DIR/config.json atomically (process 0 only), once everything is checked."""
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        data = data_spec if data_spec is None or isinstance(data_spec, str) else repr(data_spec)
        record = {"model": model_config.to_dict(), "train": config.to_dict(), "data": data,
                  "keypoints": schema_to_dict(get_schema(model_config.keypoints))}
        write_text_atomic(run_dir / CONFIG_FILE, json.dumps(record, indent=2))


def _truncate_metrics(path: Path, last_step: int) -> None:
    """On resume, drop metric lines written after the checkpoint so that no step appears twice."""
    if not path.is_file():
        return
    kept = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= last_step]
    path.write_text("".join(line + "\n" for line in kept))


class MetricsWriter:
    """JSON lines in RUN_DIR/metrics.jsonl, mirrored to TensorBoard when tensorboardX is installed."""

    def __init__(self, run_dir: Path, enabled: bool = True):
        self.enabled = enabled
        self.path = run_dir / METRICS_FILE
        self._tb = None
        if enabled:
            try:
                from tensorboardX import SummaryWriter
            except ImportError:
                SummaryWriter = None
            if SummaryWriter is not None:
                self._tb = SummaryWriter(str(run_dir / "tensorboard"))

    def write(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        with self.path.open("a") as f:
            f.write(json.dumps(record) + "\n")
        if self._tb is not None:
            for key, value in record.items():
                if key != "step":
                    self._tb.add_scalar(key, value, record["step"])

    def close(self) -> None:
        if self._tb is not None:
            self._tb.close()


# ------------------------------------------------------------------------------ input pipeline


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


def _check_finite(step: int, metrics: Mapping[str, Any]) -> dict[str, float]:
    """Host copy of a step's metrics; stops the run on a non-finite loss, naming the step."""
    values = {k: float(v) for k, v in jax.device_get(dict(metrics)).items()}
    if not math.isfinite(values["loss"]):
        parts = ", ".join(f"{k}={v:.6g}" for k, v in values.items() if k != "loss")
        raise FloatingPointError(
            f"non-finite loss {values['loss']} at step {step} ({parts}); lower the learning rate, "
            f"use compute_dtype='float32', or check the data of that step; the last checkpoint is intact"
        )
    return values


class ThroughputMeter:
    """Images/s and the share of wall time spent waiting for input, per logging window and
    over the run. The run's figures leave out the first window, which holds the compilation,
    unless it is the only one."""

    def __init__(self, batch_size: int):
        self.batch_size = batch_size
        self.windows = 0
        self.total = {"time": 0.0, "wait": 0.0, "images": 0}
        self._open_window()

    def _open_window(self) -> None:
        self.start, self.wait, self.images = time.perf_counter(), 0.0, 0

    def waited(self, seconds: float) -> None:
        self.wait += seconds

    def step_done(self) -> None:
        self.images += self.batch_size

    def close_window(self, last: bool) -> dict[str, float]:
        elapsed = time.perf_counter() - self.start
        if self.windows > 0 or last:
            self.total["time"] += elapsed
            self.total["wait"] += self.wait
            self.total["images"] += self.images
        self.windows += 1
        figures = {"images_per_s": self.images / elapsed, "input_wait_share": self.wait / elapsed}
        self._open_window()
        return figures

    def summary(self) -> dict[str, float | None]:
        t = self.total["time"]
        return {
            "images_per_s": self.total["images"] / t if t else None,
            "input_wait_share": self.total["wait"] / t if t else None,
        }


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
    from tqdm.auto import tqdm

    maybe_initialize_distributed(train_config)
    data_spec = data_spec or train_config.data
    if data_spec is None and loader is None:
        raise ValueError(
            "no training data: pass data_spec ('synthetic:DIR' or 'coco:DIR') or set TrainConfig.data"
        )
    run_dir = Path(run_dir)
    model_config = effective_model_config(model_config, train_config)
    mesh = make_mesh()
    check_batch_divisible(train_config.batch_size, mesh)
    # Check the folder, open the data, build the model and restore a resumed run before anything
    # is written: a run that fails on its inputs leaves the folder as it was.
    check_run_dir(run_dir, model_config, resume)
    is_chief = jax.process_index() == 0

    loader = make_train_loader(data_spec, model_config, train_config) if loader is None else loader
    try:
        if model is None:
            model = build_model(model_config, train_config.compute_dtype, train_config.init_scheme)
        elif hasattr(model, "dtype"):
            model = model.clone(dtype=COMPUTE_DTYPES[train_config.compute_dtype])
        state = create_train_state(model, model_config, train_config)
        if init_from is not None:
            from efficienthrnet.backbone_init import start_from

            state = start_from(state, init_from, model_config)
        state = replicate(state, mesh)
        has_checkpoint = bool(checkpoint_steps(run_dir))
        if resume and has_checkpoint:
            manager = checkpoint_manager(run_dir, train_config)
            state, data_state = restore_checkpoint(manager, state, model_config)
            loader.set_state(data_state)
        write_run_config(run_dir, model_config, train_config, data_spec)
        if not (resume and has_checkpoint):
            manager = checkpoint_manager(run_dir, train_config)
    except BaseException:
        if hasattr(loader, "close"):
            loader.close()  # stops prefetch threads and worker processes
        raise
    start = int(jax.device_get(state.step))
    if is_chief:
        _truncate_metrics(run_dir / METRICS_FILE, start)

    end = train_config.steps if stop_after_steps is None else min(stop_after_steps, train_config.steps)
    step_fn = make_train_step(train_config, mesh)
    writer = MetricsWriter(run_dir, enabled=is_chief)
    progress = tqdm(
        total=end, initial=start, desc="train", unit="step", disable=not (train_config.progress and is_chief)
    )
    iterator = iter(loader)
    meter = ThroughputMeter(train_config.batch_size)
    last: dict[str, float] = {}
    pending = None  # (step, device metrics) checked one step late so that dispatch stays async

    def finish(step: int, metrics) -> None:
        nonlocal last
        last = _check_finite(step, metrics)
        meter.step_done()
        progress.update(step - progress.n)
        progress.set_postfix(loss=f"{last['loss']:.4g}")
        if step % train_config.log_every == 0 or step == end:
            writer.write({"step": step, **last, **meter.close_window(last=step == end)})

    try:
        for step in range(start + 1, end + 1):
            t0 = time.perf_counter()
            try:
                host_batch = next(iterator)
            except StopIteration:
                raise RuntimeError(
                    f"the training data ran out at step {step}; the loader must repeat"
                ) from None
            meter.waited(time.perf_counter() - t0)
            state, metrics = step_fn(state, shard_batch(host_batch, mesh))
            if pending is not None:
                finish(*pending)
            pending = (step, metrics)
            if step % train_config.checkpoint_every == 0 or step == end:
                finish(*pending)
                pending = None
                save_checkpoint(manager, state, model_config, loader.get_state())
        if pending is not None:
            finish(*pending)
        manager.wait_until_finished()
    finally:
        progress.close()
        writer.close()
        manager.close()
        if hasattr(loader, "close"):
            loader.close()  # stops prefetch threads and worker processes
    return {
        "run_dir": str(run_dir),
        "step": int(jax.device_get(state.step)),
        "start_step": start,
        "metrics": last,
        **meter.summary(),
        "checkpoints": list(checkpoint_steps(run_dir)),
        "model": model_config.name,
    }


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


def checkpoint_steps(run_dir: str | os.PathLike) -> list[int]:
    """Steps of the checkpoints present in a run folder, ascending."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())


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
    record = _read_run_config(run_dir)
    model_config = ModelConfig.from_dict(record["model"])
    restore_run_schema(record, run_dir, keypoints)
    steps = checkpoint_steps(run_dir)
    if not steps:
        raise FileNotFoundError(f"{run_dir / CHECKPOINT_DIR} holds no checkpoint; train first")
    if step is None:
        step = steps[-1]
    elif step not in steps:
        raise FileNotFoundError(f"{run_dir} has no checkpoint at step {step}; it has steps {steps}")
    model = build_model(model_config) if model is None else model
    restored, stored = _restore_for_inference(run_dir, step)
    where = f"checkpoint {run_dir / CHECKPOINT_DIR / str(step)}"
    check_same_architecture(stored, model_config, where)
    variables = {"params": restored["state"]["params"], "batch_stats": restored["state"]["batch_stats"]}
    check_variables_fit(model, model_config, variables, where)
    return model_config, model, variables


def _restore_for_inference(run_dir: Path, step: int) -> tuple[dict[str, Any], ModelConfig]:
    """The raw restored items of one checkpoint and the model config stored in it."""
    manager = checkpoint_manager(run_dir, read_only=True)
    try:
        with _reading_checkpoint(f"checkpoint {run_dir / CHECKPOINT_DIR / str(step)}"):
            restored = manager.restore(
                step, args=ocp.args.Composite(state=ocp.args.StandardRestore(), meta=ocp.args.JsonRestore())
            )
            return restored, ModelConfig.from_dict(restored["meta"]["model_config"])
    finally:
        manager.close()


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
