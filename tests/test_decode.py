"""Decoding maps rendered from ground truth recovers the people (COCO AP), with and without flip."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import COCO_SAMPLE
from efficienthrnet.decode import DecodeConfig, decode
from efficienthrnet.evaluate import coco_results, score_coco
from efficienthrnet.keypoints import COCO17
from efficienthrnet.predict import merge_flip

SAMPLE = COCO_SAMPLE / "test_coco.json"


def render_ground_truth(people: np.ndarray, map_hw: tuple[int, int], scale: float, sigma: float = 2.0):
    """Perfect maps for [N, J, 3] COCO keypoints at `scale` map pixels per image pixel.

    Each visible joint is a Gaussian (sigma in map pixels, peak 1) centred on the pixel
    int(coordinate * scale), the reference's target convention; each person's tag is its
    index + 1, written wherever its Gaussian is the largest for that joint.
    """
    h, w = map_hw
    num_j = people.shape[1]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    heat = np.zeros((h, w, num_j), np.float32)
    tags = np.zeros((h, w, num_j), np.float32)
    for j in range(num_j):
        best = np.zeros((h, w))
        for p, person in enumerate(people):
            x, y, v = person[j]
            if v <= 0:
                continue
            cx, cy = int(x * scale), int(y * scale)
            g = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
            tags[:, :, j] = np.where(g > best, p + 1.0, tags[:, :, j])
            best = np.maximum(best, g)
        heat[:, :, j] = best
    return heat, tags


def mirror_people(people: np.ndarray, map_w: int, scale: float) -> np.ndarray:
    """The same people in the horizontally mirrored map (image coordinates), left/right swapped.

    Pixel i of the map mirrors to pixel map_w - 1 - i, so that flipping the rendered maps back
    lands every Gaussian on the pixel of the unflipped rendering.
    """
    mirrored = people[:, COCO17.flip_permutation].copy()
    column = np.floor(mirrored[:, :, 0] * scale)
    mirrored[:, :, 0] = np.where(mirrored[:, :, 2] > 0, (map_w - 1 - column + 0.5) / scale, 0)
    return mirrored


def decode_ground_truth(coco: dict, scale: float, flip: bool, config: DecodeConfig = DecodeConfig()) -> list[dict]:
    anns_by_image: dict[int, list] = {}
    for ann in coco["annotations"]:
        anns_by_image.setdefault(ann["image_id"], []).append(ann)
    results = []
    for image in coco["images"]:
        anns = anns_by_image.get(image["id"], [])
        people = np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
        map_hw = (int(np.ceil(image["height"] * scale)), int(np.ceil(image["width"] * scale)))
        heat, tags = render_ground_truth(people, map_hw, scale)
        if flip:
            heat_f, tags_f = render_ground_truth(mirror_people(people, map_hw[1], scale), map_hw, scale)
            heat, tags = merge_flip(heat, tags, heat_f, tags_f, COCO17.flip_permutation)
            assert tags.shape[-1] == 2
        found = decode(heat, tags, COCO17, config)
        keypoints = found.keypoints.copy()
        keypoints[:, :, :2] /= scale
        results += coco_results(image["id"], keypoints, found.scores)
    return results


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("scale", [1.0, 0.5])
def test_coco_sample_ground_truth_is_recovered(flip, scale):
    coco = json.loads(SAMPLE.read_text())
    results = decode_ground_truth(coco, scale, flip)
    people_with_keypoints = sum(a["num_keypoints"] > 0 for a in coco["annotations"])
    assert len(results) == people_with_keypoints
    assert score_coco(SAMPLE, results, COCO17.sigmas_array)["AP"] >= 0.99


def test_synthetic_ground_truth_is_recovered(tmp_path):
    from efficienthrnet.data.synthetic import make_synthetic_dataset

    splits = make_synthetic_dataset(tmp_path, num_images=4, image_size=96, seed=3, val_fraction=0.5)
    ann_file = Path(splits["val"]["annotation_file"])
    coco = json.loads(ann_file.read_text())
    assert sum(a["num_keypoints"] > 0 for a in coco["annotations"]) >= 2
    for flip in (False, True):
        results = decode_ground_truth(coco, 1.0, flip)
        assert score_coco(ann_file, results, COCO17.sigmas_array)["AP"] >= 0.99


def test_flip_merge_equals_unflipped_maps():
    """Rendering the mirrored people and merging gives back the original maps exactly."""
    coco = json.loads(SAMPLE.read_text())
    image = coco["images"][1]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    people = np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
    hw = (image["height"], image["width"])
    heat, tags = render_ground_truth(people, hw, 1.0)
    heat_f, tags_f = render_ground_truth(mirror_people(people, hw[1], 1.0), hw, 1.0)
    merged_heat, merged_tags = merge_flip(heat, tags, heat_f, tags_f, COCO17.flip_permutation)
    np.testing.assert_allclose(merged_heat, heat, atol=1e-6)
    visible = heat > 0.5
    np.testing.assert_array_equal(merged_tags[..., 1][visible], tags[visible])


def test_timings_and_switches():
    coco = json.loads(SAMPLE.read_text())
    image = coco["images"][2]
    anns = [a for a in coco["annotations"] if a["image_id"] == image["id"]]
    people = np.asarray([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
    heat, tags = render_ground_truth(people, (image["height"], image["width"]), 1.0)
    found = decode(heat, tags, COCO17, return_timings=True)
    assert set(found.timings_ms) == {"nms", "topk", "group", "adjust", "refine", "total"}
    assert found.timings_ms["total"] == pytest.approx(sum(v for k, v in found.timings_ms.items() if k != "total"))
    plain = decode(heat, tags, COCO17, DecodeConfig(adjust=False, refine=False))
    found_xy = plain.keypoints[plain.keypoints[:, :, 2] > 0][:, :2]
    assert np.all(found_xy == np.round(found_xy))  # integer pixels without adjust


def test_refine_recovers_a_joint_below_the_detection_threshold():
    """A faint joint (peak 0.08 < 0.1) is not a candidate, but refine finds it by its tag."""
    people = np.zeros((2, 17, 3))
    people[0, :, :] = [20, 30, 2]
    people[0, :, 0] += np.arange(17) * 4
    people[1, :, :] = [25, 70, 2]
    people[1, :, 0] += np.arange(17) * 4
    heat, tags = render_ground_truth(people, (96, 112), 1.0)
    heat[:, :, 9] = np.where(tags[:, :, 9] == 1, heat[:, :, 9] * 0.08, heat[:, :, 9])
    without = decode(heat, tags, COCO17, DecodeConfig(refine=False))
    found = decode(heat, tags, COCO17)
    first = int(np.argmin(np.abs(found.keypoints[:, 0, 1] - 30.5)))
    assert without.keypoints[first, 9, 2] == 0
    assert found.keypoints[first, 9, 2] == pytest.approx(0.08, rel=1e-5)
    np.testing.assert_allclose(found.keypoints[first, 9, :2], [20 + 36 + 0.25, 30 + 0.25])
    assert found.scores[first] == pytest.approx(without.scores[first])  # score is taken before refine


def test_bad_shapes_are_rejected():
    with pytest.raises(ValueError, match=r"J=17"):
        decode(np.zeros((8, 8, 5)), np.zeros((8, 8, 5)), COCO17)
    with pytest.raises(ValueError, match="tags must be"):
        decode(np.zeros((8, 8, 17)), np.zeros((8, 9, 17)), COCO17)
    with pytest.raises(ValueError, match="nms_kernel"):
        DecodeConfig(nms_kernel=4)
