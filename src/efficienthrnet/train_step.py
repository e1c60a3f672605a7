"""The pose model and its jitted training step: `build_model`, `create_train_state`, the heatmap +
associative-embedding loss (`pose_loss`), `train_step` and `make_train_step` (cached per the
fields the step reads, so a sweep's seeds share one compiled step)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import flax.linen as nn
import jax
import numpy as np
import optax
from jax.sharding import Mesh

from efficienthrnet.config import ModelConfig
from efficienthrnet.losses import LossWeights, compute_losses
from efficienthrnet.train_config import TrainConfig
from efficienthrnet.train_optimizer import learning_rate_schedule, make_optimizer
from efficienthrnet.training import step as _step
from efficienthrnet.training.parallel import shard_batch as _shard_batch
from efficienthrnet.training.state import COMPUTE_DTYPES, TrainState
from efficienthrnet.training.state import create_train_state as _create_state

#: Batch entries the step needs on the device (the rest, e.g. "image_id", stay on the host).
DEVICE_BATCH_KEYS = ("image", "heatmaps_4", "heatmaps_2", "mask_4", "mask_2", "joints_4")


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
