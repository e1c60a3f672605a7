"""COCO scoring: the regression values of tests/data/README.md and result formatting."""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import COCO_SAMPLE
from efficienthrnet.evaluate import METRIC_NAMES, coco_results, score_coco
from efficienthrnet.keypoints import COCO17

SAMPLE = COCO_SAMPLE / "test_coco.json"


def gt_as_results(shift_x: float) -> list[dict]:
    """Every annotated person (with keypoints) as a detection, keypoints shifted in x."""
    data = json.loads(SAMPLE.read_text())
    results = []
    for ann in data["annotations"]:
        if ann["num_keypoints"] == 0:
            continue
        kpts = np.asarray(ann["keypoints"], float).reshape(-1, 3)
        kpts[:, 0] += shift_x
        results += coco_results(ann["image_id"], kpts[None], np.array([1.0]))
    return results


@pytest.mark.parametrize("shift,expected", [(0, 1.0), (2, 0.9532), (5, 0.6790)])
def test_readme_regression_values(shift, expected):
    metrics = score_coco(SAMPLE, gt_as_results(shift), COCO17.sigmas_array)
    assert set(metrics) == set(METRIC_NAMES)
    assert metrics["AP"] == pytest.approx(expected, abs=5e-5)


def test_empty_results_score_zero():
    assert score_coco(SAMPLE, [], COCO17.sigmas_array) == {name: 0.0 for name in METRIC_NAMES}


def test_unknown_image_id_is_named():
    bad = coco_results(123456789, np.ones((1, 17, 3)), np.ones(1))
    with pytest.raises(ValueError, match="123456789"):
        score_coco(SAMPLE, bad)


def test_wrong_number_of_sigmas_is_rejected():
    with pytest.raises(ValueError, match="5 OKS sigmas for 17"):
        score_coco(SAMPLE, gt_as_results(0), sigmas=np.ones(5))


def test_coco_results_layout():
    people = np.arange(2 * 17 * 3, dtype=np.float32).reshape(2, 17, 3)
    entries = coco_results(7, people, np.array([0.5, 0.25]))
    assert [e["score"] for e in entries] == [0.5, 0.25]
    assert entries[1]["keypoints"][:3] == [51.0, 52.0, 53.0]  # x, y, v = joint score
    assert all(e["category_id"] == 1 and e["image_id"] == 7 for e in entries)
    flat = coco_results(7, people, np.array([0.5, 0.25]), score_as_visibility=False)
    assert flat[0]["keypoints"][2::3] == [1.0] * 17
    with pytest.raises(ValueError, match="3 person scores for 2 people"):
        coco_results(7, people, np.ones(3))


def _tiny_gt(tmp_path, with_area: bool, with_bbox: bool = True) -> Path:
    """Two people on one image, COCO-17, written the way CrowdPose writes them (no 'area')."""
    anns = []
    for i, x in enumerate((20.0, 60.0)):
        kpts = np.zeros((17, 3))
        kpts[:, 0], kpts[:, 1], kpts[:, 2] = x + np.arange(17), 30 + 2 * np.arange(17), 2
        ann = {"id": i + 1, "image_id": 5, "category_id": 1, "iscrowd": 0, "num_keypoints": 17,
               "keypoints": kpts.reshape(-1).tolist()}
        if with_bbox:
            ann["bbox"] = [x, 30.0, 17.0, 34.0]
        if with_area:
            ann["area"] = 17.0 * 34.0
        anns.append(ann)
    data = {"images": [{"id": 5, "file_name": "a.png", "width": 100, "height": 80}], "annotations": anns,
            "categories": [{"id": 1, "name": "person"}]}
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(data))
    return path


def _results_of(path: Path, shift: float) -> list[dict]:
    results = []
    for ann in json.loads(path.read_text())["annotations"]:
        kpts = np.asarray(ann["keypoints"], float).reshape(1, 17, 3)
        kpts[..., 0] += shift
        results += coco_results(ann["image_id"], kpts, np.array([1.0]))
    return results


def test_ground_truth_without_area_is_scored_from_its_bbox(tmp_path):
    from pycocotools.coco import COCO

    from efficienthrnet.data.coco import AREA_PER_BOX_AREA

    gt = _tiny_gt(tmp_path, with_area=False)
    assert score_coco(gt, _results_of(gt, 0.0))["AP"] == pytest.approx(1.0)
    # A shift makes the score depend on the area: it must equal scoring with area = 0.53 w h.
    shifted = score_coco(gt, _results_of(gt, 1.5))
    explicit = json.loads(gt.read_text())
    for ann in explicit["annotations"]:
        ann["area"] = AREA_PER_BOX_AREA * ann["bbox"][2] * ann["bbox"][3]
    (tmp_path / "explicit.json").write_text(json.dumps(explicit))
    assert shifted == score_coco(tmp_path / "explicit.json", _results_of(gt, 1.5))
    assert 0.0 < shifted["AP"] < 1.0
    # A pycocotools object read directly (no reader checks) is filled in the same way.
    with contextlib.redirect_stdout(io.StringIO()):
        raw = COCO(str(gt))
    assert score_coco(raw, _results_of(gt, 1.5)) == shifted


def test_ground_truth_without_bbox_is_named(tmp_path):
    gt = _tiny_gt(tmp_path, with_area=True, with_bbox=False)
    with pytest.raises(ValueError, match=r"gt\.json: annotation id 1 \(image id 5\) has no 'bbox'"):
        score_coco(gt, _results_of(gt, 0.0))
