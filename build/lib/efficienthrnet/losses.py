"""Training losses: masked multi-resolution heatmap MSE and associative embedding.

The definitions follow the authors' PyTorch code (reference page, section 5):

- Heatmap loss, per resolution: ``((pred - gt)**2 * mask)`` averaged over J x H x W for each
  sample (masked pixels stay in the denominator), then averaged over the batch.
- Associative embedding at the 1/4 output only, one tag scalar per joint. For each image and
  each person with at least one visible joint, the person's reference tag is the mean of its
  joints' tags.  Pull is the mean over people of the mean squared deviation from the reference;
  push ("exp" form) is the sum over ordered pairs i != j of ``exp(-(ref_i - ref_j)**2)``
  divided by ``N (N - 1)`` and multiplied by 0.5. Push is 0 with N <= 1, both are 0 with N = 0.
  Both are averaged over the batch and weighted (1e-3 each by default). The reference's other
  push form, "max", has ``max(0, 1 - |ref_i - ref_j|)`` per pair instead: unlike "exp", whose
  gradient vanishes as two people's tags approach each other, it pushes equal tags apart at
  full strength, so tags that start collapsed (as from a near-zero initialisation) separate.

Everything is written for fixed shapes under ``jax.jit``: padding people carry visibility 0
and drop out through masks, never through Python control flow. All arithmetic is float32 even
when the network runs in bfloat16, so the loss does not lose precision in a mixed-precision step.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import jax.numpy as jnp

#: The associative-embedding push forms of the reference (its AE_LOSS_TYPE).
PUSH_LOSSES = ("exp", "max")


@dataclass(frozen=True)
class LossWeights:
    """Multipliers of the four loss terms (the reference uses 1, 1, 1e-3, 1e-3)."""

    heatmap_4: float = 1.0
    heatmap_2: float = 1.0
    push: float = 1e-3
    pull: float = 1e-3

    def __post_init__(self):
        for f in fields(self):
            value = getattr(self, f.name)
            if not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"loss weight {f.name}={value!r} must be a number >= 0")

    def to_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> LossWeights:
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(
                f"unknown loss weight(s) {sorted(unknown)}; known: {[f.name for f in fields(cls)]}"
            )
        return cls(**{k: float(v) for k, v in d.items()})


def heatmap_loss(pred: jnp.ndarray, target: jnp.ndarray, mask: jnp.ndarray) -> jnp.ndarray:
    """Masked heatmap MSE per sample.

    Args:
      pred: [B, H, W, J] predicted heatmaps.
      target: [B, H, W, J] target heatmaps.
      mask: [B, H, W], 1 where the pixel counts, 0 where it is ignored.

    Returns:
      [B] float32: mean over H x W x J of the masked squared error. Masked pixels stay in the
      denominator, as in the reference.
    """
    if pred.shape != target.shape:
        raise ValueError(f"heatmap prediction shape {pred.shape} differs from target shape {target.shape}")
    if mask.shape != pred.shape[:3]:
        raise ValueError(
            f"mask shape {mask.shape} must be the heatmap shape without joints, {pred.shape[:3]}"
        )
    err = (pred.astype(jnp.float32) - target.astype(jnp.float32)) ** 2 * mask.astype(jnp.float32)[..., None]
    return jnp.mean(err, axis=(1, 2, 3))


def gather_joint_tags(tags: jnp.ndarray, joints: jnp.ndarray) -> jnp.ndarray:
    """Tag value of every (person, joint) slot.

    Args:
      tags: [B, H, W, J] tag maps (one scalar per joint type).
      joints: [B, P, J, 2] int; [..., 0] is the flat index y * W + x, [..., 1] the visibility flag.

    Returns:
      [B, P, J] float32 with ``out[b, p, j] = tags[b, y, x, j]``. Slots with flag 0 hold the tag
      at their (meaningless) index; callers mask them out.
    """
    b, h, w, j = tags.shape
    if joints.ndim != 4 or joints.shape[0] != b or joints.shape[2] != j or joints.shape[3] != 2:
        raise ValueError(
            f"joints shape {joints.shape} must be [B={b}, P, J={j}, 2] to match tags {tags.shape}"
        )
    flat = tags.astype(jnp.float32).reshape(b, h * w, j)
    # Clip so that a padded or stray index can never read out of bounds (jit does not check).
    index = jnp.clip(joints[..., 0], 0, h * w - 1)  # [B, P, J]
    # take_along_axis over the spatial axis, with the joint axis aligned: out[b,p,j] = flat[b, index[b,p,j], j]
    return jnp.take_along_axis(flat[:, None, :, :], index[..., None, :], axis=2)[:, :, 0, :]


def ae_loss_per_image(
    tags: jnp.ndarray, joints: jnp.ndarray, push_loss: str = "exp"
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Associative-embedding push and pull losses per image, unweighted.

    Args:
      tags: [B, H, W, J] tag maps.
      joints: [B, P, J, 2] int, see `gather_joint_tags`.
      push_loss: "exp" or "max", the per-pair push term (see the module docstring).

    Returns:
      (push, pull), each [B] float32.
    """
    if push_loss not in PUSH_LOSSES:
        raise ValueError(f"push_loss={push_loss!r}; use one of {PUSH_LOSSES}")
    values = gather_joint_tags(tags, joints)  # [B, P, J]
    visible = (joints[..., 1] > 0).astype(jnp.float32)  # [B, P, J]
    count = jnp.sum(visible, axis=2)  # [B, P] visible joints per person
    person = (count > 0).astype(jnp.float32)  # [B, P] people that take part
    safe_count = jnp.maximum(count, 1.0)
    reference = jnp.sum(values * visible, axis=2) / safe_count  # [B, P] mean tag per person
    person_pull = jnp.sum(visible * (values - reference[..., None]) ** 2, axis=2) / safe_count
    num_people = jnp.sum(person, axis=1)  # [B]
    pull = jnp.sum(person_pull * person, axis=1) / jnp.maximum(num_people, 1.0)

    diff = reference[:, :, None] - reference[:, None, :]  # [B, P, P]
    pair = person[:, :, None] * person[:, None, :] * (1.0 - jnp.eye(reference.shape[1], dtype=jnp.float32))
    closeness = jnp.exp(-(diff**2)) if push_loss == "exp" else jnp.maximum(0.0, 1.0 - jnp.abs(diff))
    pair_sum = jnp.sum(closeness * pair, axis=(1, 2))
    # With N <= 1 there are no pairs, pair_sum is 0 and so is the push.
    push = 0.5 * pair_sum / jnp.maximum(num_people * (num_people - 1.0), 1.0)
    return push, pull


def compute_losses(
    out4: jnp.ndarray,
    out2: jnp.ndarray,
    batch: Mapping[str, Any],
    weights: LossWeights = LossWeights(),
    push_loss: str = "exp",
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """Total training loss and its weighted parts, each a float32 scalar (batch mean).

    Args:
      out4: [B, H/4, W/4, 2J] model output: heatmaps in channels 0..J-1, tags in J..2J-1.
      out2: [B, H/2, W/2, J] heatmaps at 1/2.
      batch: dict with "heatmaps_4", "heatmaps_2", "mask_4", "mask_2", "joints_4" (the training
        batch contract of `efficienthrnet.data.pipeline`).
      weights: term multipliers.
      push_loss: "exp" (default) or "max", the push form of `ae_loss_per_image`.

    Returns:
      (total, parts) with parts "heatmap_4", "heatmap_2", "push", "pull" already weighted, so
      that total is their sum.
    """
    num_joints = out2.shape[-1]
    if out4.shape[-1] != 2 * num_joints:
        raise ValueError(
            f"out4 has {out4.shape[-1]} channels; expected 2J = {2 * num_joints} (heatmaps then tags) "
            f"for J = {num_joints} from out2"
        )
    heat4 = heatmap_loss(out4[..., :num_joints], batch["heatmaps_4"], batch["mask_4"])
    heat2 = heatmap_loss(out2, batch["heatmaps_2"], batch["mask_2"])
    push, pull = ae_loss_per_image(out4[..., num_joints:], batch["joints_4"], push_loss)
    parts = {
        "heatmap_4": weights.heatmap_4 * jnp.mean(heat4),
        "heatmap_2": weights.heatmap_2 * jnp.mean(heat2),
        "push": weights.push * jnp.mean(push),
        "pull": weights.pull * jnp.mean(pull),
    }
    total = parts["heatmap_4"] + parts["heatmap_2"] + parts["push"] + parts["pull"]
    return total, parts
