"""Measuring a classifier: cross-entropy, top-k, precise BatchNorm statistics, held-out accuracy."""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from efficienthrnet.data.classification import (
    ClassificationAugment,
    ClassificationSource,
    iterate_eval_batches,
    open_source,
)


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
