"""Bottom-up decoding: heatmaps + associative-embedding tags -> people.

This follows the reference decoder (HigherHRNet's `HeatmapParser`, used unchanged by the
EfficientHRNet code) step by step, but works on whole arrays instead of Python loops over
people and full-resolution maps:

1. NMS: a pixel is a peak if it equals the max of its `nms_kernel` x `nms_kernel` window
   (max-pool with -inf padding).
2. Top-k: the `top_k` highest peaks per joint type. Candidates at or below the detection
   threshold are dropped by the grouping anyway, so only pixels above it are examined.
3. Grouping: joint types are visited in `schema.grouping_order`; each candidate is assigned
   to a group (person) by optimal assignment on the tag-distance cost, or starts a new group.
4. Adjust: a quarter-pixel step towards the larger neighbour, plus 0.5 (pixel centre).
5. Person score: the mean of the J heatmap scores, after adjust and before refine.
6. Refine: every missing joint is filled with the argmax over the whole map of
   `heatmap - round(|tag - person mean tag|)`. This is exact (same pixel as the reference,
   ties broken by raster order) but only scores the pixels whose heatmap can reach a
   person's best, pruned further by per-tile tag bounds, so its cost does not grow with
   people x map size (see `refine_search`).

Deliberate differences from the reference:
- Groups are identified by an integer id, not keyed by their first float tag value, so two
  candidates with identical tags no longer overwrite each other's group.
- Candidate order within a joint type is descending score, ties by raster order (torch's
  top-k leaves tie order unspecified).

Coordinates are in map pixels with pixel i covering [i, i + 1): a peak at column i decodes
to i + 0.5 (+- 0.25 with adjust).

This module holds the settings, the result and the pipeline (`decode`); the steps live in
`efficienthrnet.decode_peaks` (1-2), `efficienthrnet.decode_group` (3) and
`efficienthrnet.decode_refine` (4, 6), and are re-exported here.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from efficienthrnet.decode_group import PAD_COST, group_candidates  # noqa: F401  (re-exported)
from efficienthrnet.decode_peaks import (  # noqa: F401
    Candidates,
    Strips,
    find_peaks,
    pixels_above,
    strip_max,
    top_candidates,
)
from efficienthrnet.decode_refine import (  # noqa: F401
    _chunks,
    _ragged,
    adjust_people,
    person_mean_tags,
    quarter_offset,
    refine_people,
    refine_search,
    refine_value,
    tile_peaks,
)
from efficienthrnet.keypoints import KeypointSchema, get_schema

# The decode stages, in order, as reported by `DecodeResult.timings_ms`.
STAGES = ("nms", "topk", "group", "adjust", "refine")


@dataclass(frozen=True)
class DecodeConfig:
    """Settings of the associative-embedding decoder (defaults: the reference's).

    Attributes:
      nms_kernel: side of the max-pool window of the peak test (odd).
      top_k: candidates kept per joint type.
      max_groups: groups considered in one assignment (the reference's max_num_people).
      detection_threshold: candidates with score <= this are dropped.
      tag_threshold: a candidate joins a group only if its tag distance is below this.
      use_detection_val: cost = round(dist) * 100 - score instead of dist.
      adjust: apply the quarter-pixel step and the +0.5 pixel centre (without it, grouped
        joints keep their integer pixel indices, as in the reference).
      refine: fill missing joints from the full maps using the person's mean tag.
      refine_tile: tile side of the pruned refine search, also the height of the strips that
        NMS and refine read the map through (speed only, not results).
    """

    nms_kernel: int = 5
    top_k: int = 30
    max_groups: int = 30
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    use_detection_val: bool = True
    adjust: bool = True
    refine: bool = True
    refine_tile: int = 16

    def __post_init__(self):
        if self.nms_kernel < 1 or self.nms_kernel % 2 == 0:
            raise ValueError(f"nms_kernel={self.nms_kernel} must be a positive odd number (e.g. 5)")
        for name in ("top_k", "max_groups", "refine_tile"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")


@dataclass(frozen=True)
class DecodeResult:
    """The people found in one image.

    Attributes:
      keypoints: float32 [P, J, 3]: x, y (map pixels), heatmap score (0 = not found).
      tags: float32 [P, J, T]: the tag vector of each grouped joint (0 for missing/refined).
      scores: float32 [P]: person score (mean joint score after adjust, before refine).
      timings_ms: per-stage wall time in ms (keys `STAGES`), when asked for.
    """

    keypoints: np.ndarray
    tags: np.ndarray
    scores: np.ndarray
    timings_ms: dict[str, float] | None = None

    @property
    def num_people(self) -> int:
        return int(self.keypoints.shape[0])

    def as_array(self) -> np.ndarray:
        """[P, J, 3 + T] rows of (x, y, score, tag...), the reference's layout."""
        return np.concatenate([self.keypoints, self.tags], axis=-1)

def check_maps(heatmaps: np.ndarray, tags: np.ndarray, num_keypoints: int) -> tuple[np.ndarray, np.ndarray]:
    """Validate and normalise decoder inputs to float32 [H,W,J] and [H,W,J,T]."""
    heatmaps = np.asarray(heatmaps, dtype=np.float32)
    tags = np.asarray(tags, dtype=np.float32)
    if heatmaps.ndim != 3 or heatmaps.shape[2] != num_keypoints:
        raise ValueError(
            f"heatmaps must be [H, W, J={num_keypoints}] (one image, NHWC without N); got shape {heatmaps.shape}"
        )
    if tags.ndim == 3:
        tags = tags[..., None]
    if tags.ndim != 4 or tags.shape[:3] != heatmaps.shape:
        raise ValueError(
            f"tags must be [H, W, J] or [H, W, J, T] matching heatmaps {heatmaps.shape}; got shape {tags.shape}"
        )
    return heatmaps, tags


def decode(
    heatmaps: np.ndarray,
    tags: np.ndarray,
    schema: KeypointSchema | str = "coco17",
    config: DecodeConfig = DecodeConfig(),
    return_timings: bool = False,
) -> DecodeResult:
    """Decode one image's maps into people.

    Args:
      heatmaps: [H, W, J] heatmaps.
      tags: [H, W, J] or [H, W, J, T] tags (T tag samples per pixel, e.g. 2 with flip test).
      schema: the keypoint schema (grouping order, J).
      config: decoder settings.
      return_timings: fill `DecodeResult.timings_ms` with the wall time of each stage.
    """
    schema = get_schema(schema)
    heatmaps, tags = check_maps(heatmaps, tags, schema.num_keypoints)
    clock = [time.perf_counter()]
    times: dict[str, float] = {}

    def lap(stage: str):
        now = time.perf_counter()
        times[stage] = (now - clock[0]) * 1e3
        clock[0] = now

    # Strip maxima, shared by NMS and refine (counted in the NMS time).
    strips = strip_max(heatmaps, config.refine_tile)
    yy, xx, jj = find_peaks(heatmaps, config.nms_kernel, config.detection_threshold, strips)
    lap("nms")
    cands = top_candidates(heatmaps, tags, yy, xx, jj, config.top_k)
    lap("topk")
    people = group_candidates(cands, schema, config)
    lap("group")
    if config.adjust:
        people = adjust_people(people, heatmaps)
    scores = people[:, :, 2].mean(axis=1).astype(np.float32) if people.size else np.zeros(0, np.float32)
    lap("adjust")
    if config.refine:
        people = refine_people(people, heatmaps, tags, config.refine_tile, strips)
    lap("refine")
    return DecodeResult(
        keypoints=np.ascontiguousarray(people[:, :, :3], dtype=np.float32),
        tags=np.ascontiguousarray(people[:, :, 3:], dtype=np.float32),
        scores=scores,
        timings_ms=dict(times, total=sum(times.values())) if return_timings else None,
    )
