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


@dataclass(frozen=True)
class Strips:
    """Max of every "strip" of a [H, W, J] map: one column of a block of `height` rows.

    `max` is float32 [J, ceil(H / height), W] (joint first, so that selecting strips is a scan
    of a contiguous array). NMS and refine read only the strips whose max reaches their level
    instead of the whole map.
    """

    max: np.ndarray
    height: int


def strip_max(heatmaps: np.ndarray, height: int) -> Strips:
    """One pass over the map, reducing the rows of each block while they are in cache."""
    h, w, num_j = heatmaps.shape
    out = np.empty((-(-h // height), w, num_j), np.float32)
    for i in range(out.shape[0]):
        np.max(heatmaps[i * height : (i + 1) * height], axis=0, out=out[i])
    return Strips(np.ascontiguousarray(out.transpose(2, 0, 1)), height)


def pixels_above(
    heatmaps: np.ndarray, strips: Strips, level: np.ndarray, strict: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Pixels with heatmap > level[joint] (strict) or >= level[joint] (`level`: float32 [J]).

    Returns the pixels' flat indices into the [H, W, J] array and the flat index of each one's
    strip into `strips.max` ([J, blocks, W]), sorted by strip, then row.
    """
    h, w, num_j = heatmaps.shape
    height = strips.height
    above = np.greater if strict else np.greater_equal
    # flatnonzero + divmod: several times faster than np.nonzero on a 3-D mask.
    s_id = np.flatnonzero(above(strips.max, level[:, None, None]))
    s_joint, s_rest = np.divmod(s_id, strips.max.shape[1] * w)
    s_block, s_x = np.divmod(s_rest, w)
    # Each strip's top pixel, then one image row further per step.
    idx = (((s_block * height) * w + s_x) * num_j + s_joint)[:, None] + np.arange(height) * (w * num_j)
    if h % height:  # the last block is short: clamp its rows to the map, then drop the duplicates
        idx = np.minimum(idx, (((h - 1) * w + s_x) * num_j + s_joint)[:, None])
    keep = above(heatmaps.reshape(-1).take(idx), level[s_joint, None])
    if h % height:
        keep[:, 1:] &= idx[:, 1:] > idx[:, :-1]
    flat = np.flatnonzero(keep)
    return idx.reshape(-1)[flat], s_id[flat // height]


def find_peaks(
    heatmaps: np.ndarray, kernel: int, threshold: float, strips: Strips | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixels above `threshold` that equal the max of their kernel x kernel window.

    Returns (y, x, joint) index arrays in raster order of the [H, W, J] array. Only pixels
    above the threshold are tested (the only ones the grouping keeps), each against its
    window read with clamped coordinates, which equals max-pooling with -inf padding. When
    most of the map is above the threshold a full max filter is cheaper and is used instead.
    `strips` (from `strip_max`, made here if not given) finds those pixels without comparing
    the whole map.
    """
    h, w, j = heatmaps.shape
    if strips is None:
        strips = strip_max(heatmaps, 16)
    # A float32 level, as `heatmaps > threshold` compares with a Python float.
    flat = pixels_above(heatmaps, strips, np.full(j, threshold, np.float32), strict=True)[0]
    r = kernel // 2
    if flat.size * kernel * kernel > 2 * heatmaps.size:
        # cv2's dilate pads with -inf (its default morphology border) and handles up to 512 channels.
        if j <= 512:
            pooled = cv2.dilate(heatmaps, np.ones((kernel, kernel), np.uint8)).reshape(heatmaps.shape)
        else:
            pooled = maximum_filter(heatmaps, size=(kernel, kernel, 1), mode="constant", cval=-np.inf)
        keep = heatmaps.reshape(-1)[flat] >= pooled.reshape(-1)[flat]
        flat = np.sort(flat[keep])
        pix, jj = np.divmod(flat, j)
        yy, xx = np.divmod(pix, w)
        return yy, xx, jj
    heat_flat = heatmaps.reshape(-1)
    val = heat_flat[flat]
    pix, jj = np.divmod(flat, j)
    yy, xx = np.divmod(pix, w)
    # Nearest neighbours first, left and right before up and down: they reject most non-peaks
    # (on a blob only its ridge column passes both), so later offsets test fewer pixels.
    offsets = sorted(
        ((dy, dx) for dy in range(-r, r + 1) for dx in range(-r, r + 1) if (dy, dx) != (0, 0)),
        key=lambda o: (max(abs(o[0]), abs(o[1])), abs(o[0]) + abs(o[1]), abs(o[0]), o),
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


def person_mean_tags(people: np.ndarray, num_tags: int) -> np.ndarray:
    """float32 [P, T]: mean tag of each person's found joints, summed in joint order like np.mean."""
    found = people[:, :, 2] > 0
    total = np.zeros((people.shape[0], num_tags), dtype=np.float32)
    for j in range(people.shape[1]):
        # Adding 0 for absent joints keeps the float32 running sum identical to the reference's.
        total += np.where(found[:, j, None], people[:, j, 3:], np.float32(0))
    return total / found.sum(axis=1, dtype=np.float32)[:, None]


def refine_value(heat: np.ndarray, tags: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """heatmap - round(|tag - mean|) in float32 with the reference's arithmetic.

    `tags` and `mean` hold the T tag components on their first axis (broadcastable).
    """
    if tags.shape[0] > 2:
        squares = ((np.moveaxis(tags, 0, -1) - np.moveaxis(mean, 0, -1)) ** 2).sum(axis=-1)
    else:
        # For T <= 2 the float32 sum has a single order (x0 + x1), so adding the components one
        # by one equals the reference's .sum(axis=-1), which is slow over such a short axis.
        squares = None
        for tag, m in zip(tags, mean):
            d = tag - m
            squares = d * d if squares is None else squares + d * d
    return heat - np.round(squares**0.5)


def tile_peaks(strips: Strips, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Max of each square tile (side `strips.height`) per joint, and where its column starts.

    Returns float32 [J, n_tiles] maxima and the flat pixel index (y * W + x) of the tile's top
    row in the (first) column holding the max; tiles in raster order, the last row / column
    of tiles may be short.
    """
    num_j, nty, w = strips.max.shape
    tile = strips.height
    ntx = -(-w // tile)
    padded = np.full((num_j, nty, ntx * tile), -np.inf, np.float32)  # -inf pads the short last tile column
    padded[:, :, :w] = strips.max
    # Column within the tile first: numpy reduces slowly over a short last axis.
    blocks = np.ascontiguousarray(padded.reshape(num_j, nty, ntx, tile).transpose(3, 0, 1, 2))
    tile_max = blocks[0].copy()  # [J, nty, ntx]
    for col in blocks[1:]:
        np.maximum(tile_max, col, out=tile_max)
    first = np.zeros(tile_max.shape, np.int64)
    for k in range(tile - 1, -1, -1):  # the first column holding the max (never a -inf pad)
        np.copyto(first, k, where=blocks[k] == tile_max)
    top = np.arange(nty)[:, None] * tile * w + np.arange(ntx) * tile + first
    return tile_max.reshape(num_j, -1), top.reshape(num_j, -1)


def _ragged(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For consecutive segments of `counts` items: the segment of each item and its position in it."""
    seg = np.repeat(np.arange(counts.size), counts)
    return seg, np.arange(seg.size) - (np.cumsum(counts) - counts)[seg]


def _chunks(ends: np.ndarray, size: int):
    """(lo, hi) ranges of items, given their cumulative sizes `ends`, of about `size` in all each."""
    lo = 0
    while lo < ends.size:
        base = ends[lo - 1] if lo else 0
        hi = max(lo + 1, int(np.searchsorted(ends, base + size, side="right")))
        yield lo, hi
        lo = hi


def refine_search(
    heatmaps: np.ndarray,
    tags: np.ndarray,
    pair_joint: np.ndarray,
    pair_mean: np.ndarray,
    tile: int,
    strips: Strips | None = None,
    seed_tiles: int = 3,
) -> np.ndarray:
    """For each (joint, mean tag) pair, the flat pixel index of argmax(heatmap - round(|tag - mean|)).

    Exact, with np.argmax's raster-order tie-breaking, but without scoring the whole map per
    pair. It rests on round(|tag - mean|) being an integer >= 0, so no pixel scores above its
    heatmap value:

    1. Seed: each pair scores the max pixel of the few tiles that look best for it. Any
       pixel's score is a lower bound of the pair's best, and this one usually equals it: for
       a person whose joint is missing (the common case), the best is the highest background
       pixel in its own tag region. A poor seed costs time only, never exactness.
    2. A pixel whose heatmap is below tau[j], the lowest seed among the pairs of joint j, can
       neither win nor tie, so only the pixels at or above it are kept (found through the
       strip maxima): the joint's peaks and a few background pixels.
    3. The kept pixels are grouped by tile. A group's bound is its heatmap max minus a lower
       bound of round(dist) from its tag bounding box; a pair scores only the groups whose
       bound reaches its seed (other people's peaks are far in tag space, so few do).

    `strips` (from `strip_max` with height `tile`) is made here if not given.
    """
    h, w, num_j = heatmaps.shape
    n_pairs = pair_joint.size
    if n_pairs == 0:
        return np.zeros(0, np.int64)
    if strips is None:
        strips = strip_max(heatmaps, tile)
    assert strips.height == tile, "strips must have the tile's height"
    heat_flat = heatmaps.reshape(-1)
    tags_2d = tags.reshape(-1, tags.shape[3])
    mean_t = np.ascontiguousarray(pair_mean.T)  # [T, pairs]: tag components first, see refine_value
    tile_max, top = tile_peaks(strips, w)  # [J, n_tiles]
    n_tiles = tile_max.shape[1]
    joints = np.arange(num_j)

    # 1. Seeds. Each pair first guesses its `seed_tiles` most promising tiles, pairing each
    # tile's max with the tag at the top of its column (tags vary little within a person's
    # region), then scores the true max pixel of those tiles. Chunked: ~2M guesses at once.
    guess_tags = np.ascontiguousarray(tags_2d.take(top * num_j + joints[:, None], axis=0).transpose(2, 0, 1))
    k = min(seed_tiles, n_tiles)
    picks = np.empty((n_pairs, k), np.int64)
    step = max(1, (1 << 21) // n_tiles)
    for i in range(0, n_pairs, step):
        jj = pair_joint[i : i + step]
        guess = refine_value(tile_max[jj], guess_tags[:, jj], mean_t[:, i : i + step, None])
        picks[i : i + step] = np.argpartition(-guess, k - 1, axis=1)[:, :k] if k < n_tiles else np.arange(k)
    s_pair = np.repeat(np.arange(n_pairs), k)
    s_joint, s_tile = pair_joint[s_pair], picks.reshape(-1)
    s_max, s_top = tile_max[s_joint, s_tile], top[s_joint, s_tile]
    # The max's row: the first in the column equal to the max (rows clamped to the map).
    rows = np.minimum(s_top[:, None] // w + np.arange(tile), h - 1)
    column = heat_flat.take((rows * w + (s_top % w)[:, None]) * num_j + s_joint[:, None])
    s_pix = rows[np.arange(s_pair.size), np.argmax(column == s_max[:, None], axis=1)] * w + s_top % w
    s_value = refine_value(s_max, tags_2d.take(s_pix * num_j + s_joint, axis=0).T, mean_t[:, s_pair])
    seed = np.full(n_pairs, -np.inf, np.float32)
    np.maximum.at(seed, s_pair, s_value)

    # 2. Kept pixels (members): heatmap >= tau[joint] (tau = inf for joints without pairs).
    tau = np.full(num_j, np.inf, np.float32)
    np.minimum.at(tau, pair_joint, seed)
    m_idx, m_strip = pixels_above(heatmaps, strips, tau, strict=False)  # sorted by joint, row block, column
    m_heat = heat_flat.take(m_idx)
    m_tags = tags_2d.take(m_idx, axis=0)  # [members, T]
    # Groups: the members of one tile of one joint, consecutive in that order. Strips are
    # numbered (joint, block, column), so with W a multiple of the tile, strip // tile is the tile.
    key = m_strip // tile if w % tile == 0 else (m_strip // w) * w + m_strip % w // tile
    g_start = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    g_size = np.diff(np.append(g_start, key.size))
    g_joint = m_idx[g_start] % num_j
    g_max = np.maximum.reduceat(m_heat, g_start)
    g_lo = np.minimum.reduceat(m_tags, g_start, axis=0).T  # [T, groups]
    g_hi = np.maximum.reduceat(m_tags, g_start, axis=0).T

    # 3. Bound every (pair, group of the pair's joint); keep those that can reach or tie the seed.
    j_first = np.searchsorted(g_joint, joints, side="left")
    j_count = np.searchsorted(g_joint, joints, side="right") - j_first
    b_pair, b_pos = _ragged(j_count[pair_joint])
    b_group = j_first[pair_joint][b_pair] + b_pos
    m = mean_t[:, b_pair]
    gap = np.maximum(np.maximum(g_lo[:, b_group] - m, m - g_hi[:, b_group]), 0)
    # round(d) >= ceil(d - 0.5) for any d; the margin absorbs float32 rounding of the pixel distances.
    dist_lb = np.sqrt((gap * gap).sum(axis=0)) * np.float32(1 - 1e-5)
    round_lb = np.maximum(np.ceil(dist_lb - np.float32(0.5 + 1e-3)), 0)
    # In float32 like the pixel values: rounding is monotone, so no member can exceed its group's bound.
    live = g_max[b_group] - round_lb >= seed[b_pair]
    b_pair, b_group = b_pair[live], b_group[live]

    # Score the members of those groups, in chunks of ~2M; scores below the seed cannot win.
    # The highest score wins, ties go to the lowest pixel index (np.argmax's raster order).
    pairs, values, pixels = [], [], []
    for lo, hi in _chunks(np.cumsum(g_size[b_group]), 1 << 21):
        e_item, e_pos = _ragged(g_size[b_group[lo:hi]])
        member = g_start[b_group[lo:hi]][e_item] + e_pos
        pair = b_pair[lo:hi][e_item]
        value = refine_value(m_heat[member], m_tags[member].T, mean_t[:, pair])
        high = value >= seed[pair]
        pairs.append(pair[high]), values.append(value[high]), pixels.append(m_idx[member[high]] // num_j)
    pair, value, pixel = np.concatenate(pairs), np.concatenate(values), np.concatenate(pixels)
    best_val = np.full(n_pairs, -np.inf, np.float32)
    np.maximum.at(best_val, pair, value)
    best_pix = np.full(n_pairs, np.iinfo(np.int64).max, np.int64)
    tied = value == best_val[pair]
    np.minimum.at(best_pix, pair[tied], pixel[tied])
    return best_pix


def refine_people(
    people: np.ndarray, heatmaps: np.ndarray, tags: np.ndarray, tile: int, strips: Strips | None = None
) -> np.ndarray:
    """Fill each person's missing joints from the full maps (the reference's refine), all people at once."""
    if people.shape[0] == 0:
        return people
    people = people.copy()
    mean = person_mean_tags(people, tags.shape[3])
    p_idx, j_idx = np.nonzero(people[:, :, 2] == 0)
    if p_idx.size == 0:
        return people
    flat = refine_search(heatmaps, tags, j_idx, mean[p_idx], tile, strips)
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
