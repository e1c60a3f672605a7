"""Keypoint schemas: the skeleton is data.

Everything that depends on the set of keypoints (head channels, flip permutation,
grouping order, OKS sigmas, drawing) reads it from a `KeypointSchema`, so another
skeleton is a new instance here, not new code elsewhere.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class KeypointSchema:
    """Names, symmetry and evaluation constants of one keypoint set.

    Attributes:
      name: short identifier stored in configs and checkpoints.
      keypoints: keypoint names, in annotation order.
      flip_pairs: (left, right) index pairs swapped by a horizontal flip.
      sigmas: per-keypoint OKS sigmas used by COCOeval.
      skeleton: index pairs joined when drawing a person.
      grouping_order: the order in which the decoder visits keypoint types.
    """

    name: str
    keypoints: tuple[str, ...]
    flip_pairs: tuple[tuple[int, int], ...]
    sigmas: tuple[float, ...]
    skeleton: tuple[tuple[int, int], ...]
    grouping_order: tuple[int, ...]

    def __post_init__(self):
        n = len(self.keypoints)
        if len(self.sigmas) != n:
            raise ValueError(f"schema {self.name!r}: {len(self.sigmas)} sigmas for {n} keypoints")
        if sorted(self.grouping_order) != list(range(n)):
            raise ValueError(
                f"schema {self.name!r}: grouping_order {self.grouping_order} is not a permutation of 0..{n - 1}"
            )
        seen = [i for pair in self.flip_pairs for i in pair]
        if len(set(seen)) != len(seen) or any(not 0 <= i < n for i in seen):
            raise ValueError(f"schema {self.name!r}: flip_pairs {self.flip_pairs} repeat or leave 0..{n - 1}")
        for a, b in self.skeleton:
            if not (0 <= a < n and 0 <= b < n):
                raise ValueError(f"schema {self.name!r}: skeleton edge ({a}, {b}) leaves 0..{n - 1}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    @property
    def flip_permutation(self) -> np.ndarray:
        """Index array p such that flipped[..., k] = original[..., p[k]]."""
        perm = np.arange(self.num_keypoints)
        for a, b in self.flip_pairs:
            perm[a], perm[b] = b, a
        return perm

    @property
    def sigmas_array(self) -> np.ndarray:
        return np.asarray(self.sigmas, dtype=np.float64)


COCO17 = KeypointSchema(
    name="coco17",
    keypoints=(
        "nose", "left_eye", "right_eye", "left_ear", "right_ear",
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle",
    ),
    flip_pairs=((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14), (15, 16)),
    # COCO's published OKS constants (cocoapi, COCOeval.Params.kpt_oks_sigmas).
    sigmas=(
        0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072,
        0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
    ),
    # COCO's person skeleton, converted to 0-based indices.
    skeleton=(
        (15, 13), (13, 11), (16, 14), (14, 12), (11, 12), (5, 11), (6, 12), (5, 6),
        (5, 7), (6, 8), (7, 9), (8, 10), (1, 2), (0, 1), (0, 2), (1, 3), (2, 4), (3, 5), (4, 6),
    ),
    # The reference decoder's order: head, shoulders, hips, then limbs outwards.
    grouping_order=(0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16),
)

SCHEMAS: dict[str, KeypointSchema] = {COCO17.name: COCO17}


def get_schema(name: str | KeypointSchema) -> KeypointSchema:
    """Look a schema up by name (or pass one through)."""
    if isinstance(name, KeypointSchema):
        return name
    try:
        return SCHEMAS[name]
    except KeyError:
        raise ValueError(f"unknown keypoint schema {name!r}; known: {sorted(SCHEMAS)}") from None
