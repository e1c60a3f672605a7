"""Augmentation and targets: heatmap peaks land on the transformed joints, flips swap sides."""


import numpy as np
import pytest

from conftest import COCO_SAMPLE
from efficienthrnet.data.augment import (
    AffineParams,
    AugmentConfig,
    affine_matrix,
    apply_affine,
    centered_params,
    draw_affine,
    normalize_image,
)
from efficienthrnet.data.coco import CocoKeypoints
from efficienthrnet.data.pipeline import make_eval_example, make_training_example
from efficienthrnet.data.targets import joint_indices, render_heatmaps
from efficienthrnet.keypoints import COCO17

SAMPLE = COCO_SAMPLE
S = 256


@pytest.fixture(scope="module")
def samples():
    ds = CocoKeypoints(SAMPLE / "test_coco.json", SAMPLE)
    return [ds[i] for i in range(len(ds))]


def test_heatmap_window_and_truncation():
    kps = np.zeros((2, 17, 3), np.float32)
    kps[0, 3] = (10.9, 5.2, 2)  # truncates to (10, 5)
    kps[1, 3] = (12.0, 5.0, 1)  # same channel, second person: max-merged
    kps[0, 4] = (-0.5, 3.0, 2)  # int() truncation makes this column 0, as the reference
    kps[0, 5] = (40.0, 3.0, 2)  # outside a 32 map: no heat
    kps[1, 6] = (7.0, 7.0, 0)  # not labelled: no heat
    h = render_heatmaps(kps, 32)
    assert h.shape == (32, 32, 17) and h.dtype == np.float32
    assert h[5, 10, 3] == 1.0 and h[5, 12, 3] == 1.0
    assert h[5, 11, 3] == pytest.approx(np.exp(-1 / 8))  # sigma 2, max of two Gaussians 1 px away
    assert h[5, 17, 3] == pytest.approx(np.exp(-25 / 8))  # 7 px right of the second peak: in the window
    assert h[5, 20, 3] == 0.0  # 8 px: outside the 15 px window
    assert h[3, 0, 4] == 1.0 and h[..., 5].max() == 0.0 and h[..., 6].max() == 0.0
    j = joint_indices(kps, 32, max_people=3)
    assert j.shape == (3, 17, 2) and j.dtype == np.int32
    assert tuple(j[0, 3]) == (5 * 32 + 10, 1) and tuple(j[0, 4]) == (3 * 32 + 0, 1)
    assert tuple(j[0, 5]) == (0, 0) and tuple(j[1, 3]) == (5 * 32 + 12, 1) and j[2].max() == 0


def _peak(channel):
    y, x = np.unravel_index(np.argmax(channel), channel.shape)
    return np.array([x, y])


def _check_peaks(heat, kps, size):
    checked = 0
    cells = np.trunc(kps[..., :2])
    for p in range(kps.shape[0]):
        for k in range(kps.shape[1]):
            if kps[p, k, 2] > 0 and (cells[p, k] >= 0).all() and (cells[p, k] < size).all():
                # Find the local peak nearest the joint (other people may have the same joint type).
                x, y = cells[p, k].astype(int)
                y0, x0 = max(y - 2, 0), max(x - 2, 0)
                win = heat[y0 : y + 3, x0 : x + 3, k]
                assert win.max() == 1.0
                peak = _peak(win) + (x0, y0)
                assert np.abs(peak - kps[p, k, :2]).max() <= 1.0
                checked += 1
    return checked


def test_peaks_follow_random_augmentations(samples):
    rng = np.random.default_rng(0)
    cfg = AugmentConfig()
    checked = flips = 0
    for trial in range(12):
        s = samples[trial % len(samples)]
        params = draw_affine(rng, *s.image.shape[:2], cfg)
        flips += params.flip
        ex = make_training_example(s, params, S)
        for size, key in ((S // 4, "heatmaps_4"), (S // 2, "heatmaps_2")):
            kps = apply_affine(s.image, s.mask, s.keypoints, params, S, (size,)).keypoints[0]
            checked += _check_peaks(ex[key], kps, size)
    assert checked > 200 and flips >= 3


def test_flip_swaps_left_and_right(samples):
    s = samples[0]  # one person, all 17 joints visible
    base = AffineParams(center=(330.0, 220.0), box_size=420.0, rotation=12.0, flip=False)
    flipped = AffineParams(center=base.center, box_size=base.box_size, rotation=base.rotation, flip=True)
    size = S // 4
    m = affine_matrix(base, size)
    xy = s.keypoints[0, :, :2] @ m[:, :2].T + m[:, 2]
    heat = make_training_example(s, flipped, S)["heatmaps_4"]
    l_sho, r_sho = COCO17.keypoints.index("left_shoulder"), COCO17.keypoints.index("right_shoulder")
    for left, right in COCO17.flip_pairs:
        mirrored = np.array([size * (S - 1) / S - xy[right, 0], xy[right, 1]])
        assert np.abs(_peak(heat[..., left]) - np.trunc(mirrored)).max() <= 1
    # The shoulders really are apart, so the check distinguishes sides.
    assert abs(xy[l_sho, 0] - xy[r_sho, 0]) > 5
    # The image is mirrored too: the flipped crop is the plain crop reversed left-right (up to
    # OpenCV's fixed-point sub-pixel interpolation).
    plain = apply_affine(s.image, s.mask, s.keypoints, base, S, (size,)).image.astype(int)
    mirror = apply_affine(s.image, s.mask, s.keypoints, flipped, S, (size,)).image.astype(int)
    assert np.abs(mirror - plain[:, ::-1]).mean() < 1.0
    assert np.abs(mirror - plain).mean() > 10 * np.abs(mirror - plain[:, ::-1]).mean()


@pytest.mark.parametrize("flip", [False, True])
def test_every_map_is_the_crop_scaled_flipped_or_not(samples, flip):
    # A flip mirrors the input crop; each output map must show that same mirror at its own scale
    # (the reference mirrors each map about its own last column, 0.75 cells off on the 1/4 map).
    s = samples[0]
    params = AffineParams(center=(330.0, 220.0), box_size=420.0, rotation=12.0, flip=flip)
    sizes = (S, S // 2, S // 4)
    kps = apply_affine(s.image, s.mask, s.keypoints, params, S, sizes).keypoints
    for size, at_size in zip(sizes, kps, strict=True):
        np.testing.assert_allclose(at_size[..., :2], kps[0][..., :2] * size / S, atol=1e-3)
    if flip:  # and at the crop itself it is the column reversal: x -> S - 1 - x
        plain = apply_affine(s.image, s.mask, s.keypoints, params.__class__(params.center, params.box_size,
                                                                               params.rotation, False), S, (S,))
        mirrored = kps[0][:, COCO17.flip_permutation, 0]
        np.testing.assert_allclose(mirrored, S - 1 - plain.keypoints[0][..., 0], atol=1e-3)


def test_masks_follow_warp_and_border_is_masked(samples):
    s = next(x for x in samples if x.mask.min() == 0.0)
    ex = make_eval_example(s, S)
    h, w = s.image.shape[:2]
    # Centre crop fits the short side: the masked person stays masked at both resolutions.
    assert ex["mask_4"].min() == 0.0 and ex["mask_2"].min() == 0.0
    assert set(np.unique(ex["mask_2"])) <= {0.0, 1.0}
    # Zoomed out, the crop shows padding outside the image, which must not count in the loss.
    far = AffineParams(center=(w / 2, h / 2), box_size=3.0 * max(h, w))
    out = apply_affine(s.image, np.ones_like(s.mask), s.keypoints, far, S, (S // 4,))
    assert out.masks[0][0, 0] == 0.0 and out.masks[0][S // 8, S // 8] == 1.0


def test_draw_affine_ranges_and_normalize():
    rng = np.random.default_rng(1)
    cfg = AugmentConfig()
    ps = [draw_affine(rng, 400, 600, cfg) for _ in range(300)]
    rot = np.array([p.rotation for p in ps])
    box = np.array([p.box_size for p in ps]) / 400
    shift = np.array([p.center for p in ps]) - (300, 200)
    assert -30 <= rot.min() < -25 and 25 < rot.max() <= 30
    assert 0.75 <= box.min() < 0.8 and 1.45 < box.max() <= 1.5
    assert (np.abs(shift) <= 40 * box[:, None] * 2).all() and np.abs(shift).max() > 40
    assert np.all(shift == np.round(shift))
    assert 0.4 < np.mean([p.flip for p in ps]) < 0.6
    assert centered_params(400, 600) == AffineParams(center=(300.0, 200.0), box_size=400.0)
    img = np.full((2, 2, 3), 255, np.uint8)
    np.testing.assert_allclose(normalize_image(img)[0, 0], (1 - np.array(cfg.mean)) / np.array(cfg.std), rtol=1e-6)
    with pytest.raises(ValueError, match="scale_range"):
        AugmentConfig(scale_range=(2.0, 1.0))
