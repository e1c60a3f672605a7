"""The vectorised decoder against a slow, literal port of the reference decoder.

`oracle_decode` follows HigherHRNet's `HeatmapParser` (used unchanged by EfficientHRNet) step
by step: max-pool NMS, top-k, `match_by_tag` with a dict of groups keyed by the first tag value
of the seeding candidate, per-element adjust, and per-person refine over the full maps. The
Hungarian step runs `linear_sum_assignment` on the same padded matrix the reference gives
munkres. Inputs use continuous random tags, so the reference's float-key collisions (fixed in
`efficienthrnet.decode`) do not occur.

`benchmarks/decode.py` imports `oracle_decode` and `render_people` from here.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import maximum_filter
from scipy.optimize import linear_sum_assignment

from efficienthrnet.decode import DecodeConfig, decode, find_peaks, pixels_above, refine_search, strip_max
from efficienthrnet.keypoints import COCO17


def oracle_match_by_tag(tag_k, loc_k, val_k, order, cfg: DecodeConfig):
    """Literal port of the reference `match_by_tag` (tag_k [J,k,T], loc_k [J,k,2], val_k [J,k])."""
    num_joints = len(order)
    default_ = np.zeros((num_joints, 3 + tag_k.shape[2]))
    joint_dict = {}
    tag_dict = {}
    for i in range(num_joints):
        idx = order[i]
        tags = tag_k[idx]
        joints = np.concatenate((loc_k[idx], val_k[idx, :, None], tags), 1)
        mask = joints[:, 2] > cfg.detection_threshold
        tags = tags[mask]
        joints = joints[mask]
        if joints.shape[0] == 0:
            continue
        if i == 0 or len(joint_dict) == 0:
            for tag, joint in zip(tags, joints):
                key = tag[0]
                joint_dict.setdefault(key, np.copy(default_))[idx] = joint
                tag_dict[key] = [tag]
        else:
            grouped_keys = list(joint_dict.keys())[: cfg.max_groups]
            grouped_tags = [np.mean(tag_dict[k], axis=0) for k in grouped_keys]
            diff = joints[:, None, 3:] - np.array(grouped_tags)[None, :, :]
            diff_normed = np.linalg.norm(diff, ord=2, axis=2)
            diff_saved = np.copy(diff_normed)
            if cfg.use_detection_val:
                diff_normed = np.round(diff_normed) * 100 - joints[:, 2:3]
            num_added = diff.shape[0]
            num_grouped = diff.shape[1]
            if num_added > num_grouped:
                diff_normed = np.concatenate(
                    (diff_normed, np.zeros((num_added, num_added - num_grouped)) + 1e10), axis=1
                )
            rows, cols = linear_sum_assignment(diff_normed)
            for row, col in zip(rows, cols):
                if row < num_added and col < num_grouped and diff_saved[row][col] < cfg.tag_threshold:
                    key = grouped_keys[col]
                    joint_dict[key][idx] = joints[row]
                    tag_dict[key].append(tags[row])
                else:
                    key = tags[row][0]
                    joint_dict.setdefault(key, np.copy(default_))[idx] = joints[row]
                    tag_dict[key] = [tags[row]]
    return np.array([joint_dict[k] for k in joint_dict]).astype(np.float32).reshape(-1, num_joints, 3 + tag_k.shape[2])


def oracle_adjust(ans, det):
    """Literal port of the reference `adjust` (det [J,H,W]); note its swapped x/y names."""
    for people_id, i in enumerate(ans):
        for joint_id, joint in enumerate(i):
            if joint[2] > 0:
                y, x = joint[0:2]
                xx, yy = int(x), int(y)
                tmp = det[joint_id]
                if tmp[xx, min(yy + 1, tmp.shape[1] - 1)] > tmp[xx, max(yy - 1, 0)]:
                    y += 0.25
                else:
                    y -= 0.25
                if tmp[min(xx + 1, tmp.shape[0] - 1), yy] > tmp[max(0, xx - 1), yy]:
                    x += 0.25
                else:
                    x -= 0.25
                ans[people_id, joint_id, 0:2] = (y + 0.5, x + 0.5)
    return ans


def oracle_refine(det, tag, keypoints):
    """Literal port of the reference `refine` for one person (det [J,H,W], tag [J,H,W,T])."""
    tags = []
    for i in range(keypoints.shape[0]):
        if keypoints[i, 2] > 0:
            x, y = keypoints[i][:2].astype(np.int32)
            tags.append(tag[i, y, x])
    prev_tag = np.mean(tags, axis=0)
    ans = []
    for i in range(keypoints.shape[0]):
        tmp = det[i, :, :]
        tt = ((tag[i, :, :] - prev_tag[None, None, :]) ** 2).sum(axis=2) ** 0.5
        tmp2 = tmp - np.round(tt)
        y, x = np.unravel_index(np.argmax(tmp2), tmp.shape)
        xx, yy = x, y
        val = tmp[y, x]
        x = x + 0.5
        y = y + 0.5
        if tmp[yy, min(xx + 1, tmp.shape[1] - 1)] > tmp[yy, max(xx - 1, 0)]:
            x += 0.25
        else:
            x -= 0.25
        if tmp[min(yy + 1, tmp.shape[0] - 1), xx] > tmp[max(0, yy - 1), xx]:
            y += 0.25
        else:
            y -= 0.25
        ans.append((x, y, val))
    ans = np.array(ans)
    for i in range(det.shape[0]):
        if ans[i, 2] > 0 and keypoints[i, 2] == 0:
            keypoints[i, :2] = ans[i, :2]
            keypoints[i, 2] = ans[i, 2]
    return keypoints


def oracle_decode(heatmaps, tags, order, cfg: DecodeConfig = DecodeConfig()):
    """The reference parse on [H,W,J] heatmaps and [H,W,J,T] tags: (people [P,J,3+T], scores [P])."""
    det = np.ascontiguousarray(np.asarray(heatmaps, np.float32).transpose(2, 0, 1))
    tag = np.ascontiguousarray(np.asarray(tags, np.float32).transpose(2, 0, 1, 3))
    num_j, h, w = det.shape
    k = cfg.nms_kernel
    pooled = maximum_filter(det, size=(1, k, k), mode="constant", cval=-np.inf)
    nms = (det * (pooled == det)).reshape(num_j, -1)
    ind = np.argsort(-nms, axis=1, kind="stable")[:, : cfg.top_k]
    val_k = np.take_along_axis(nms, ind, axis=1)
    loc_k = np.stack([ind % w, ind // w], axis=2)
    tag_k = np.stack([tag[j].reshape(h * w, -1)[ind[j]] for j in range(num_j)])
    ans = oracle_match_by_tag(tag_k, loc_k, val_k, order, cfg)
    if cfg.adjust:
        ans = oracle_adjust(ans, det)
    scores = np.array([i[:, 2].mean() for i in ans], dtype=np.float32)
    if cfg.refine:
        for i in range(len(ans)):
            ans[i] = oracle_refine(det, tag, ans[i])
    return ans, scores


def render_people(rng, h, w, num_people, num_joints=17, num_tags=2, sigma=2.0, missing=0.2, noise=0.02, tag_noise=0.05):
    """Network-like maps: Gaussian joints, per-person tags spread 1 apart, nearest-joint tag field.

    Returns heatmaps [H,W,J], tags [H,W,J,T] (float32). A fraction `missing` of joints is left
    out, so refine has work to do.
    """
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    heat = rng.random((h, w, num_joints), dtype=np.float32) * noise
    tags = np.empty((h, w, num_joints, num_tags), np.float32)
    person_tag = rng.permutation(num_people).astype(np.float32) + 0.5
    for j in range(num_joints):
        best_d2 = np.full((h, w), np.inf, np.float32)
        field = np.zeros((h, w), np.float32)
        for p in range(num_people):
            cy, cx = rng.uniform(2, h - 3), rng.uniform(2, w - 3)
            d2 = (yy - cy) ** 2 + (xx - cx) ** 2
            closer = d2 < best_d2
            best_d2 = np.where(closer, d2, best_d2)
            field = np.where(closer, person_tag[p], field)
            if rng.random() >= missing:
                heat[:, :, j] = np.maximum(heat[:, :, j], np.exp(-d2 / (2 * sigma**2)))
        for t in range(num_tags):
            tags[:, :, j, t] = field + rng.normal(0, tag_noise, (h, w)).astype(np.float32)
    return heat, tags


def assert_same_people(result, oracle_people, oracle_scores):
    assert result.num_people == oracle_people.shape[0]
    np.testing.assert_allclose(result.as_array(), oracle_people, rtol=0, atol=1e-5)
    np.testing.assert_allclose(result.scores, oracle_scores, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("use_detection_val", [True, False])
def test_random_maps_match_oracle(seed, use_detection_val):
    """Dense random heatmaps (NMS via the full max filter), random tags: many groups, >30 groups."""
    rng = np.random.default_rng(seed)
    h, w, t = 24 + seed, 30 - seed, 1 + seed % 2
    heat = rng.random((h, w, 17), dtype=np.float32) ** 2
    tags = rng.normal(0, 2.0, (h, w, 17, t)).astype(np.float32)
    cfg = DecodeConfig(use_detection_val=use_detection_val, refine_tile=4 + seed)
    got = decode(heat, tags, COCO17, cfg)
    people, scores = oracle_decode(heat, tags, COCO17.grouping_order, cfg)
    assert people.shape[0] > cfg.max_groups  # the 30-group cap is exercised
    assert_same_people(got, people, scores)


@pytest.mark.parametrize("seed", range(4))
def test_people_like_maps_match_oracle(seed):
    """Sparse Gaussian people (NMS via the thresholded path), missing joints, noisy tags near 1.0 apart."""
    rng = np.random.default_rng(100 + seed)
    heat, tags = render_people(rng, 60, 52 + 4 * seed, num_people=3 + 3 * seed, tag_noise=0.3)
    got = decode(heat, tags, COCO17, DecodeConfig(refine_tile=8))
    people, scores = oracle_decode(heat, tags, COCO17.grouping_order)
    assert np.any(people[:, :, 3] == 0)  # some joints came from refine
    assert_same_people(got, people, scores)


@pytest.mark.parametrize("adjust,refine", [(False, False), (True, False), (False, True)])
def test_switches_match_oracle(adjust, refine):
    rng = np.random.default_rng(7)
    heat, tags = render_people(rng, 40, 48, num_people=5, tag_noise=0.2)
    cfg = DecodeConfig(adjust=adjust, refine=refine)
    got = decode(heat, tags, COCO17, cfg)
    people, scores = oracle_decode(heat, tags, COCO17.grouping_order, cfg)
    assert_same_people(got, people, scores)


@pytest.mark.parametrize("density", [0.02, 0.9])
def test_find_peaks_equals_maxpool(density):
    """Both NMS paths (thresholded gather, full dilate) equal max-pool with -inf padding."""
    rng = np.random.default_rng(3)
    heat = rng.random((33, 27, 5), dtype=np.float32)
    heat = np.where(heat < density, heat, heat * 0.05).astype(np.float32)
    heat[5:8, 5:8, 0] = 0.5  # a plateau: all its pixels equal the window max
    yy, xx, jj = find_peaks(heat, 5, 0.1 * density)
    pooled = maximum_filter(heat, size=(5, 5, 1), mode="constant", cval=-np.inf)
    want = np.nonzero((heat == pooled) & (heat > 0.1 * density))
    np.testing.assert_array_equal(np.stack([yy, xx, jj]), np.stack(want))


@pytest.mark.parametrize("tile", [3, 8, 64])
def test_refine_search_ties_follow_raster_order(tile):
    """Quantised maps make many exact ties; the pruned search must return np.argmax's pixel."""
    rng = np.random.default_rng(tile)
    h, w, j, t = 37, 29, 4, 2
    heat = (rng.integers(0, 5, (h, w, j)) * 0.25).astype(np.float32)
    tags = (rng.integers(-6, 6, (h, w, j, t)) * 0.5).astype(np.float32)
    pair_joint = np.array([0, 1, 2, 3, 3, 0])
    pair_mean = (rng.integers(-8, 8, (6, t)) * 0.5).astype(np.float32)
    got = refine_search(heat, tags, pair_joint, pair_mean, tile)
    for n, (jj, m) in enumerate(zip(pair_joint, pair_mean)):
        value = heat[:, :, jj] - np.round(((tags[:, :, jj] - m) ** 2).sum(axis=2) ** 0.5)
        assert got[n] == np.argmax(value)


@pytest.mark.parametrize("seed_tiles", [1, 3, 1000])
def test_refine_search_is_exact_whatever_the_seeds(seed_tiles):
    """Seeds only prune: with poor (1 tile) or exhaustive ones the pixel is np.argmax's."""
    rng = np.random.default_rng(seed_tiles)
    h, w, j, t = 45, 38, 3, 2
    heat, tags = render_people(rng, h, w, num_people=4, num_joints=j, num_tags=t, tag_noise=0.4)
    pair_joint = np.repeat(np.arange(j), 5)
    pair_mean = rng.uniform(0, 4, (pair_joint.size, t)).astype(np.float32)
    got = refine_search(heat, tags, pair_joint, pair_mean, 8, seed_tiles=seed_tiles)
    for n, (jj, m) in enumerate(zip(pair_joint, pair_mean)):
        value = heat[:, :, jj] - np.round(((tags[:, :, jj] - m) ** 2).sum(axis=2) ** 0.5)
        assert got[n] == np.argmax(value)


@pytest.mark.parametrize("height", [1, 5, 16, 64])
def test_pixels_above_equals_a_full_comparison(height):
    rng = np.random.default_rng(height)
    heat = (rng.integers(0, 8, (37, 29, 4)) * 0.125).astype(np.float32)
    level = np.array([0.5, 0.75, 0.0, 2.0], np.float32)
    strips = strip_max(heat, height)
    for strict in (True, False):
        flat, _ = pixels_above(heat, strips, level, strict)
        want = np.flatnonzero(heat > level if strict else heat >= level)
        np.testing.assert_array_equal(np.sort(flat), want)
