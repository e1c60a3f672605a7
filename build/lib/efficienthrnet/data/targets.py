"""Training targets: Gaussian heatmaps and associative-embedding joint indices.

Matches the reference target generators: a Gaussian of sigma 2 (at every resolution), a
window of 6 * sigma + 3 pixels, peak 1, centred on the int-truncated joint coordinate, merged
over people by element-wise max. A joint counts if its visibility flag is > 0 and its
truncated coordinate lies inside the map.
"""

from __future__ import annotations

import functools

import numpy as np

DEFAULT_SIGMA = 2.0
DEFAULT_MAX_PEOPLE = 30


@functools.lru_cache(maxsize=8)
def _gaussian_window(sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """(offsets, kernel): integer offsets -c..c and the (2c+1)^2 peak-1 Gaussian on them."""
    size = int(6 * sigma + 3)
    centre = int(3 * sigma + 1)
    offsets = np.arange(size) - centre
    g1 = np.exp(-(offsets.astype(np.float64) ** 2) / (2 * sigma**2))
    kernel = np.outer(g1, g1).astype(np.float32)
    return offsets, kernel


def joint_cells(keypoints: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """(cells int64 [N, J, 2] as (x, y), valid bool [N, J]) of keypoints on a size x size map.

    Coordinates are truncated toward zero like Python's int(), as the reference does.
    """
    cells = np.trunc(keypoints[..., :2]).astype(np.int64)
    inside = (cells >= 0).all(-1) & (cells < size).all(-1)
    return cells, (keypoints[..., 2] > 0) & inside


def render_heatmaps(keypoints: np.ndarray, size: int, sigma: float = DEFAULT_SIGMA) -> np.ndarray:
    """float32 [size, size, J] heatmaps of [N, J, 3] keypoints given in map pixels."""
    num_joints = keypoints.shape[1]
    heat = np.zeros(size * size * num_joints, dtype=np.float32)
    cells, valid = joint_cells(keypoints, size)
    person, joint = np.nonzero(valid)
    if person.size:
        offsets, kernel = _gaussian_window(sigma)
        xs = cells[person, joint, 0][:, None, None] + offsets[None, None, :]  # [K, 1, w]
        ys = cells[person, joint, 1][:, None, None] + offsets[None, :, None]  # [K, w, 1]
        inside = (xs >= 0) & (xs < size) & (ys >= 0) & (ys < size)  # [K, w, w]
        flat = (ys * size + xs) * num_joints + joint[:, None, None]
        values = np.broadcast_to(kernel, inside.shape)
        np.maximum.at(heat, flat[inside], values[inside])
    return heat.reshape(size, size, num_joints)


def joint_indices(keypoints: np.ndarray, size: int, max_people: int = DEFAULT_MAX_PEOPLE) -> np.ndarray:
    """int32 [max_people, J, 2] associative-embedding targets at one resolution.

    Row p, joint j holds (y * size + x, 1) when person p's joint j counts, else (0, 0). Only
    people with at least one counting joint take a row, in annotation order; beyond max_people
    the remaining people are left out of the tag loss (their heatmaps still count), as the
    reference's fixed-size array implies.
    """
    num_joints = keypoints.shape[1]
    out = np.zeros((max_people, num_joints, 2), dtype=np.int32)
    cells, valid = joint_cells(keypoints, size)
    rows = np.nonzero(valid.any(-1))[0][:max_people]
    v = valid[rows]
    out[: rows.size, :, 0] = np.where(v, cells[rows, :, 1] * size + cells[rows, :, 0], 0)
    out[: rows.size, :, 1] = v
    return out
