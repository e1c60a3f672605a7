"""Decoding steps 1-2, NMS and top-k: the peak candidates of each joint type's heatmap.

`strip_max` summarises a map by strips (shared with refine), `pixels_above` finds the pixels
above a level through them, `find_peaks` keeps those equal to their window's max, and
`top_candidates` the `top_k` best per joint as `Candidates`.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from scipy.ndimage import maximum_filter


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
