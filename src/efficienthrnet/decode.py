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
   ties broken by raster order) but prunes the search with per-tile bounds, so its cost
   does not grow with people x map size.

Deliberate differences from the reference:
- Groups are identified by an integer id, not keyed by their first float tag value, so two
  candidates with identical tags no longer overwrite each other's group.
- Candidate order within a joint type is descending score, ties by raster order (torch's
  top-k leaves tie order unspecified).

Coordinates are in map pixels with pixel i covering [i, i + 1): a peak at column i decodes
to i + 0.5 (+- 0.25 with adjust).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import maximum_filter
from scipy.optimize import linear_sum_assignment

from efficienthrnet.keypoints import KeypointSchema, get_schema

# Cost given to the padding columns of the assignment matrix (the reference's value).
PAD_COST = 1e10
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
      refine_tile: tile side of the pruned refine search (speed only, not results).
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


@dataclass(frozen=True)
class Candidates:
    """Top-k peaks of all joint types, sorted by joint, then score descending.

    All arrays have one entry per candidate; `tags` is [N, T].
    """

    joint: np.ndarray
    x: np.ndarray
    y: np.ndarray
    score: np.ndarray
    tags: np.ndarray


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


def find_peaks(heatmaps: np.ndarray, kernel: int, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels above `threshold` that equal the max of their kernel x kernel window.

    Returns (y, x, joint) index arrays in raster order of the [H, W, J] array. Only pixels
    above the threshold are tested (the only ones the grouping keeps), each against its
    window read with clamped coordinates, which equals max-pooling with -inf padding. When
    most of the map is above the threshold a full max filter is cheaper and is used instead.
    """
    h, w, j = heatmaps.shape
    flat = np.flatnonzero(heatmaps > threshold)
    r = kernel // 2
    if flat.size * kernel * kernel > 2 * heatmaps.size:
        # cv2's dilate pads with -inf (its default morphology border) and handles up to 512 channels.
        if j <= 512:
            pooled = cv2.dilate(heatmaps, np.ones((kernel, kernel), np.uint8)).reshape(heatmaps.shape)
        else:
            pooled = maximum_filter(heatmaps, size=(kernel, kernel, 1), mode="constant", cval=-np.inf)
        keep = heatmaps.reshape(-1)[flat] >= pooled.reshape(-1)[flat]
        flat = flat[keep]
        pix, jj = np.divmod(flat, j)
        yy, xx = np.divmod(pix, w)
        return yy, xx, jj
    heat_flat = heatmaps.reshape(-1)
    val = heat_flat[flat]
    pix, jj = np.divmod(flat, j)
    yy, xx = np.divmod(pix, w)
    # Nearest neighbours first: they reject most non-peaks, so later offsets test fewer pixels.
    offsets = sorted(
        ((dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)),
        key=lambda o: (max(abs(o[0]), abs(o[1])), o),
    )
    # Interior pixels read their window by flat offsets; the few near the border clamp coordinates.
    inner = (yy >= r) & (yy < h - r) & (xx >= r) & (xx < w - r)
    kept_inner = flat[inner]
    inner_val = val[inner]
    for dy, dx in offsets:
        keep = inner_val >= heat_flat.take(kept_inner + (dy * w + dx) * j)
        kept_inner, inner_val = kept_inner[keep], inner_val[keep]
    by, bx, bj, bval = yy[~inner], xx[~inner], jj[~inner], val[~inner]
    for dy, dx in offsets:
        keep = bval >= heatmaps[np.clip(by + dy, 0, h - 1), np.clip(bx + dx, 0, w - 1), bj]
        by, bx, bj, bval = by[keep], bx[keep], bj[keep], bval[keep]
    flat = np.sort(np.concatenate([kept_inner, (by * w + bx) * j + bj]))
    pix, jj = np.divmod(flat, j)
    yy, xx = np.divmod(pix, w)
    return yy, xx, jj


def top_candidates(
    heatmaps: np.ndarray, tags: np.ndarray, yy: np.ndarray, xx: np.ndarray, jj: np.ndarray, top_k: int
) -> Candidates:
    """Keep the `top_k` highest peaks per joint, sorted by joint then score (ties: raster order)."""
    w = heatmaps.shape[1]
    score = heatmaps[yy, xx, jj]
    order = np.lexsort((yy * w + xx, -score, jj))
    jj_sorted = jj[order]
    first = np.searchsorted(jj_sorted, jj_sorted, side="left")
    rank = np.arange(order.size) - first
    order = order[rank < top_k]
    yy, xx, jj = yy[order], xx[order], jj[order]
    return Candidates(joint=jj, x=xx, y=yy, score=score[order], tags=tags[yy, xx, jj])


def group_candidates(cands: Candidates, schema: KeypointSchema, config: DecodeConfig) -> np.ndarray:
    """Assign candidates to people by tag; returns float32 [P, J, 3 + T] (x, y, score, tags).

    Visits joint types in the schema's grouping order. The first type with candidates seeds
    one group per candidate; each later type is matched to the first `max_groups` groups by
    optimal assignment on the reference's padded cost matrix; a candidate whose assigned
    group is a padding column or farther than `tag_threshold` starts a new group.
    """
    num_j = schema.num_keypoints
    t = cands.tags.shape[1]
    capacity = max(int(cands.joint.size), 1)
    people = np.zeros((capacity, num_j, 3 + t), dtype=np.float64)
    tag_sum = np.zeros((capacity, t), dtype=np.float32)
    tag_count = np.zeros(capacity, dtype=np.float32)
    n_groups = 0
    starts = np.searchsorted(cands.joint, np.arange(num_j + 1), side="left")
    for joint in schema.grouping_order:
        lo, hi = starts[joint], starts[joint + 1]
        if hi == lo:
            continue
        rows = np.column_stack(
            [cands.x[lo:hi], cands.y[lo:hi], cands.score[lo:hi].astype(np.float64), cands.tags[lo:hi]]
        )
        row_tags = cands.tags[lo:hi]
        if n_groups == 0:
            new = np.arange(hi - lo)
        else:
            g = min(n_groups, config.max_groups)
            mean = tag_sum[:g] / tag_count[:g, None]
            dist = np.linalg.norm(rows[:, None, 3:] - mean[None, :, :], ord=2, axis=2)
            cost = np.round(dist) * 100 - rows[:, 2:3] if config.use_detection_val else dist.copy()
            if rows.shape[0] > g:
                cost = np.concatenate([cost, np.full((rows.shape[0], rows.shape[0] - g), PAD_COST)], axis=1)
            r_idx, c_idx = linear_sum_assignment(cost)
            joins = c_idx < g
            joins[joins] = dist[r_idx[joins], c_idx[joins]] < config.tag_threshold
            jr, jc = r_idx[joins], c_idx[joins]
            people[jc, joint] = rows[jr]
            tag_sum[jc] += row_tags[jr]
            tag_count[jc] += 1
            new = r_idx[~joins]
        ids = n_groups + np.arange(new.size)
        people[ids, joint] = rows[new]
        tag_sum[ids] = row_tags[new]
        tag_count[ids] = 1
        n_groups += new.size
    return people[:n_groups].astype(np.float32)


def quarter_offset(heatmaps: np.ndarray, yy: np.ndarray, xx: np.ndarray, jj: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """+-0.25 per axis towards the larger neighbour (ties go -0.25, as in the reference)."""
    h, w, _ = heatmaps.shape
    right = heatmaps[yy, np.minimum(xx + 1, w - 1), jj] > heatmaps[yy, np.maximum(xx - 1, 0), jj]
    down = heatmaps[np.minimum(yy + 1, h - 1), xx, jj] > heatmaps[np.maximum(yy - 1, 0), xx, jj]
    return np.where(right, 0.25, -0.25), np.where(down, 0.25, -0.25)


def adjust_people(people: np.ndarray, heatmaps: np.ndarray) -> np.ndarray:
    """Quarter-pixel adjust plus the 0.5 pixel centre for every found joint (score > 0)."""
    people = people.copy()
    p_idx, j_idx = np.nonzero(people[:, :, 2] > 0)
    xx = people[p_idx, j_idx, 0].astype(np.int64)
    yy = people[p_idx, j_idx, 1].astype(np.int64)
    dx, dy = quarter_offset(heatmaps, yy, xx, j_idx)
    people[p_idx, j_idx, 0] = xx + dx + 0.5
    people[p_idx, j_idx, 1] = yy + dy + 0.5
    return people


def _tile_rows(a: np.ndarray, tile: int) -> list[slice]:
    return [slice(i, min(i + tile, a.shape[0])) for i in range(0, a.shape[0], tile)]


def tile_stats(heatmaps: np.ndarray, tags: np.ndarray, tile: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per tile x tile block: heatmap max [ty,tx,J], tag min and max [ty,tx,J,T] (last blocks may be short).

    Rows are reduced one block at a time so the min and the max pass both read a block
    while it is still in cache.
    """
    h, w, num_j, num_t = tags.shape
    rows = _tile_rows(heatmaps, tile)
    heat_rows = np.empty((len(rows), w, num_j), np.float32)
    lo_rows = np.empty((len(rows), w, num_j, num_t), np.float32)
    hi_rows = np.empty_like(lo_rows)
    for i, sl in enumerate(rows):
        np.max(heatmaps[sl], axis=0, out=heat_rows[i])
        np.min(tags[sl], axis=0, out=lo_rows[i])
        np.max(tags[sl], axis=0, out=hi_rows[i])
    return _reduce_cols(heat_rows, tile, np.max), _reduce_cols(lo_rows, tile, np.min), _reduce_cols(hi_rows, tile, np.max)


def _reduce_cols(a: np.ndarray, tile: int, reduce) -> np.ndarray:
    """Reduce axis 1 in blocks of `tile` (reshape for whole blocks; the short last one apart)."""
    n, w = a.shape[:2]
    full = w - w % tile
    parts = [reduce(a[:, :full].reshape(n, full // tile, tile, *a.shape[2:]), axis=2)] if full else []
    if full < w:
        parts.append(reduce(a[:, full:], axis=1, keepdims=True))
    return np.concatenate(parts, axis=1) if len(parts) > 1 else parts[0]


def person_mean_tags(people: np.ndarray, num_tags: int) -> np.ndarray:
    """float32 [P, T]: mean tag of each person's found joints, summed in joint order like np.mean."""
    found = people[:, :, 2] > 0
    total = np.zeros((people.shape[0], num_tags), dtype=np.float32)
    for j in range(people.shape[1]):
        # Adding 0 for absent joints keeps the float32 running sum identical to the reference's.
        total += np.where(found[:, j, None], people[:, j, 3:], np.float32(0))
    return total / found.sum(axis=1, dtype=np.float32)[:, None]


def _best_pixels_in_tiles(heat_flat, tags_2d, shape, pair_joint, pair_mean, pair_of, tile_of, ntx, tile):
    """Best refine value and its flat pixel index for each (pair, tile) item.

    value = heatmap - round(|tag - mean|) in float32 (the reference's arithmetic), ties broken
    by the lowest raster index. `heat_flat` / `tags_2d` are the [H*W*J] / [H*W*J, T] views.
    """
    h, w, num_j = shape
    offs = np.arange(tile)
    ty, tx = np.divmod(tile_of, ntx)
    ys = np.minimum(ty[:, None, None] * tile + offs[None, :, None], h - 1)
    xs = np.minimum(tx[:, None, None] * tile + offs[None, None, :], w - 1)
    pix = (ys * w + xs).reshape(len(tile_of), -1)
    idx = pix * num_j + pair_joint[pair_of][:, None]
    diff = tags_2d.take(idx, axis=0) - pair_mean[pair_of][:, None, :]
    value = heat_flat.take(idx) - np.round(((diff**2).sum(axis=-1)) ** 0.5)
    vmax = value.max(axis=1)
    first = np.where(value == vmax[:, None], pix, np.iinfo(np.int64).max).min(axis=1)
    return vmax, first


def refine_search(
    heatmaps: np.ndarray,
    tags: np.ndarray,
    pair_joint: np.ndarray,
    pair_mean: np.ndarray,
    tile: int,
    tiles_per_round: int = 2,
) -> np.ndarray:
    """For each (joint, mean tag) pair, the flat pixel index of argmax(heatmap - round(|tag - mean|)).

    Exact, with np.argmax's raster-order tie-breaking, but without reading the whole map per
    pair: each tile gets the bound max(heatmap) - lower_bound(round(dist)) from its heatmap max
    and tag bounding box, tiles are read best bound first, `tiles_per_round` per pair at a
    time, and a pair stops once no unread tile can reach (or tie) its best value.
    """
    h, w, num_j = heatmaps.shape
    n_pairs = pair_joint.size
    heat_max, tag_lo, tag_hi = tile_stats(heatmaps, tags, tile)
    nty, ntx = heat_max.shape[:2]
    n_tiles = nty * ntx
    # Squared lower bound of |tag - mean| per (pair, tile), one tag component at a time.
    gap2 = np.zeros((n_pairs, n_tiles), np.float32)
    for t in range(tags.shape[3]):
        m = pair_mean[:, t : t + 1]
        lo = tag_lo[..., t].reshape(n_tiles, -1).T[pair_joint]  # [pairs, tiles]
        hi = tag_hi[..., t].reshape(n_tiles, -1).T[pair_joint]
        gap = np.maximum(np.maximum(lo - m, m - hi), 0)
        gap2 += gap * gap
    # round(d) >= ceil(d - 0.5) for any d; the margin absorbs float32 rounding of the pixel distances.
    round_lb = np.maximum(np.ceil(np.sqrt(gap2) * np.float32(1 - 1e-5) - np.float32(0.5 + 1e-3)), 0)
    # In float32 like the pixel values: rounding is monotone, so no pixel can exceed its tile's bound.
    bound = heat_max.reshape(n_tiles, -1).T[pair_joint] - round_lb  # [pairs, tiles]
    heat_flat = heatmaps.reshape(-1)
    tags_2d = tags.reshape(-1, tags.shape[3])
    pairs = np.arange(n_pairs)

    def best_of(pair_of, tile_of):
        # Chunked so that at most ~2M pixels are held at once, whatever the bounds let through.
        step = max(1, (1 << 21) // (tile * tile))
        out = [
            _best_pixels_in_tiles(
                heat_flat, tags_2d, (h, w, num_j), pair_joint, pair_mean, pair_of[i : i + step], tile_of[i : i + step], ntx, tile
            )
            for i in range(0, pair_of.size, step)
        ]
        return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out])

    def merge(best_val, best_pix, pair_of, val, pix):
        # Keep, per pair, the highest value and on ties the lowest raster index.
        cand_pair = np.concatenate([pairs, pair_of])
        cand_val = np.concatenate([best_val, val])
        cand_pix = np.concatenate([best_pix, pix])
        order = np.lexsort((cand_pix, -cand_val, cand_pair))
        first = order[np.searchsorted(cand_pair[order], pairs, side="left")]
        return cand_val[first], cand_pix[first]

    # Pass 1: the few most promising tiles give each pair a value to beat.
    k = min(tiles_per_round, n_tiles)
    top = np.argpartition(-bound, k - 1, axis=1)[:, :k] if k < n_tiles else np.tile(np.arange(n_tiles), (n_pairs, 1))
    best_val = np.full(n_pairs, -np.inf, np.float32)
    best_pix = np.full(n_pairs, np.iinfo(np.int64).max, np.int64)
    pair_of = np.repeat(pairs, k)
    best_val, best_pix = merge(best_val, best_pix, pair_of, *best_of(pair_of, top.reshape(-1)))
    # Then every other tile that could reach or tie it (a tie can still win on raster order),
    # best bound first, a few per pair per round, until no unread tile can.
    pair_of, tile_of = np.nonzero(bound >= best_val[:, None])
    tile_bound = bound[pair_of, tile_of]
    order = np.lexsort((-tile_bound, pair_of))
    pair_of, tile_of, tile_bound = pair_of[order], tile_of[order], tile_bound[order]
    starts = np.searchsorted(pair_of, pairs, side="left")
    counts = np.searchsorted(pair_of, pairs, side="right") - starts
    done = 0
    active = pairs[counts > 0]
    while active.size:
        pos = starts[active, None] + done + np.arange(k)
        pos = pos[pos < (starts + counts)[active, None]]
        best_val, best_pix = merge(best_val, best_pix, pair_of[pos], *best_of(pair_of[pos], tile_of[pos]))
        done += k
        active = active[done < counts[active]]
        active = active[tile_bound[starts[active] + done] >= best_val[active]]
    return best_pix


def refine_people(people: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray, tile: int) -> np.ndarray:
    """Fill each person's missing joints from the full maps (the reference's refine), all people at once."""
    if people.shape[0] == 0:
        return people
    people = people.copy()
    mean = person_mean_tags(people, tags.shape[3])
    p_idx, j_idx = np.nonzero(people[:, :, 2] == 0)
    if p_idx.size == 0:
        return people
    flat = refine_search(heatmaps, tags, j_idx, mean[p_idx], tile)
    yy, xx = np.divmod(flat, heatmaps.shape[1])
    val = heatmaps[yy, xx, j_idx]
    dx, dy = quarter_offset(heatmaps, yy, xx, j_idx)
    fill = val > 0
    people[p_idx[fill], j_idx[fill], 0] = (xx + 0.5 + dx)[fill]
    people[p_idx[fill], j_idx[fill], 1] = (yy + 0.5 + dy)[fill]
    people[p_idx[fill], j_idx[fill], 2] = val[fill]
    return people


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

    yy, xx, jj = find_peaks(heatmaps, config.nms_kernel, config.detection_threshold)
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
        people = refine_people(people, heatmaps, tags, config.refine_tile)
    lap("refine")
    return DecodeResult(
        keypoints=np.ascontiguousarray(people[:, :, :3], dtype=np.float32),
        tags=np.ascontiguousarray(people[:, :, 3:], dtype=np.float32),
        scores=scores,
        timings_ms=dict(times, total=sum(times.values())) if return_timings else None,
    )
