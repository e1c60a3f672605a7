"""Decoding steps 4 and 6, where joints land: the quarter-pixel adjust, and refine, which fills each
person's missing joints from the full maps with an exact, pruned search (`refine_search`)."""

from __future__ import annotations

import numpy as np

from efficienthrnet.decode_peaks import Strips, pixels_above, strip_max


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
