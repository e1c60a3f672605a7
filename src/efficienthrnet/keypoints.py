"""Keypoint schemas: the skeleton is data.

Everything that depends on the set of keypoints (head channels, flip permutation,
grouping order, OKS sigmas, drawing) reads it from a `KeypointSchema`, so another
skeleton is a new instance here, not new code elsewhere.

Schemas are named choices: `register_schema` makes one known to the CLI (`--keypoints NAME`),
sweep specs (`[data] keypoints`) and run reloading; COCO-17 ("coco17") and CrowdPose-14
("crowdpose") are registered on import. A run stores its schema's definition
(`schema_to_dict`), and `restore_schema` registers it again in a fresh process.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

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

CROWDPOSE14 = KeypointSchema(
    name="crowdpose",
    # CrowdPose's annotation order: COCO's body joints, then the head top and the neck.
    keypoints=(
        "left_shoulder", "right_shoulder", "left_elbow", "right_elbow",
        "left_wrist", "right_wrist", "left_hip", "right_hip",
        "left_knee", "right_knee", "left_ankle", "right_ankle", "head", "neck",
    ),
    flip_pairs=((0, 1), (2, 3), (4, 5), (6, 7), (8, 9), (10, 11)),
    # crowdposetools' OKS constants: COCO's body sigmas, 0.079 for head top and neck.
    sigmas=(
        0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
        0.087, 0.087, 0.089, 0.089, 0.079, 0.079,
    ),
    skeleton=(
        (12, 13), (13, 0), (13, 1), (0, 2), (2, 4), (1, 3), (3, 5), (0, 6), (1, 7), (6, 7),
        (6, 8), (8, 10), (7, 9), (9, 11),
    ),
    # As COCO's: head first (head top, neck), shoulders, hips, then limbs outwards.
    grouping_order=(12, 13, 0, 1, 6, 7, 2, 3, 4, 5, 8, 9, 10, 11),
)

SCHEMAS: dict[str, KeypointSchema] = {}


def register_schema(schema: KeypointSchema) -> KeypointSchema:
    """Make a schema known by name (to the CLI, sweep specs and run reloading); returns it.

    Registering the same definition twice is a no-op; another definition under a taken name is
    refused, because runs store only the name and would silently change meaning.
    """
    if not isinstance(schema, KeypointSchema):
        raise TypeError(f"register_schema takes a KeypointSchema, got {type(schema).__name__}")
    if not isinstance(schema.name, str) or not schema.name.strip():
        raise ValueError(f"a keypoint schema needs a non-empty name, got {schema.name!r}")
    known = SCHEMAS.get(schema.name)
    if known is not None and known != schema:
        raise ValueError(
            f"keypoint schema name {schema.name!r} is already registered with another definition "
            f"({known.num_keypoints} keypoints: {', '.join(known.keypoints)}); choose another name"
        )
    return SCHEMAS.setdefault(schema.name, schema)  # an equal definition keeps the registered object


def available_schemas() -> list[str]:
    """Names of the registered schemas, sorted."""
    return sorted(SCHEMAS)


def get_schema(name: str | KeypointSchema) -> KeypointSchema:
    """Look a registered schema up by name (or pass one through)."""
    if isinstance(name, KeypointSchema):
        return name
    try:
        return SCHEMAS[name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown keypoint schema {name!r}; known: {', '.join(available_schemas())} "
            f"(register a custom one with efficienthrnet.keypoints.register_schema)"
        ) from None


def schema_for_keypoints(names: Sequence[str]) -> KeypointSchema | None:
    """The registered schema whose keypoint names are exactly `names` (in order), or None."""
    names = tuple(names)
    return next((s for s in SCHEMAS.values() if s.keypoints == names), None)


def schema_to_dict(schema: KeypointSchema) -> dict[str, Any]:
    """JSON-ready definition of a schema (stored in run folders so that a run reloads on its own)."""
    return {
        "name": schema.name,
        "keypoints": list(schema.keypoints),
        "flip_pairs": [list(p) for p in schema.flip_pairs],
        "sigmas": list(schema.sigmas),
        "skeleton": [list(e) for e in schema.skeleton],
        "grouping_order": list(schema.grouping_order),
    }


def schema_from_dict(data: Mapping[str, Any], where: str = "keypoint schema") -> KeypointSchema:
    """Rebuild a schema from `schema_to_dict` output, naming `where` in errors."""
    fields = ("name", "keypoints", "flip_pairs", "sigmas", "skeleton", "grouping_order")
    if not isinstance(data, Mapping) or set(data) != set(fields):
        got = sorted(data) if isinstance(data, Mapping) else type(data).__name__
        raise ValueError(f"{where}: expected the fields {list(fields)}, got {got}")
    try:
        return KeypointSchema(
            name=str(data["name"]),
            keypoints=tuple(str(k) for k in data["keypoints"]),
            flip_pairs=tuple((int(a), int(b)) for a, b in data["flip_pairs"]),
            sigmas=tuple(float(s) for s in data["sigmas"]),
            skeleton=tuple((int(a), int(b)) for a, b in data["skeleton"]),
            grouping_order=tuple(int(i) for i in data["grouping_order"]),
        )
    except (TypeError, ValueError) as err:
        raise ValueError(f"{where}: {err}") from None


def restore_schema(data: Mapping[str, Any], where: str = "keypoint schema") -> KeypointSchema:
    """The registered schema of a stored definition, registering it when its name is unknown.

    A stored definition that disagrees with the registered one of the same name is refused.
    """
    schema = schema_from_dict(data, where)
    known = SCHEMAS.get(schema.name)
    if known is not None and known != schema:
        raise ValueError(
            f"{where} defines keypoint schema {schema.name!r} differently from the registered one "
            f"({schema.num_keypoints} vs {known.num_keypoints} keypoints, or other names, pairs or sigmas); "
            f"register the run's definition under another name"
        )
    return register_schema(schema)


for _schema in (COCO17, CROWDPOSE14):
    register_schema(_schema)
