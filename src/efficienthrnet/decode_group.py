"""Decoding step 3, grouping: candidates assigned to people by their associative-embedding tags."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from scipy.optimize import linear_sum_assignment

from efficienthrnet.decode_peaks import Candidates
from efficienthrnet.keypoints import KeypointSchema

if TYPE_CHECKING:
    from efficienthrnet.decode import DecodeConfig

# Cost given to the padding columns of the assignment matrix (the reference's value).
PAD_COST = 1e10


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
