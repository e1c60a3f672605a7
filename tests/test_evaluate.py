"""COCO scoring: the regression values of tests/data/README.md and result formatting."""

from __future__ import annotations

import json

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
