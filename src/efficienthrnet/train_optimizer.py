"""The pose optimizer: Adam (AdamW when weight_decay > 0) on a step-decay schedule with optional
warm-up, with the backbone optionally frozen (`make_optimizer`, cached per optimizer settings)."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import optax
from flax import traverse_util

from efficienthrnet.train_config import TrainConfig

#: Name of the model's backbone submodule: top-level key of its parameter tree.
BACKBONE_MODULE = "backbone"


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
