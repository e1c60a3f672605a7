"""Pictures from predictions, and evaluate_dataset end to end on a tiny synthetic set."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from efficienthrnet.decode import DecodeResult
from efficienthrnet.evaluate import evaluate_dataset
from efficienthrnet.keypoints import COCO17
from efficienthrnet.visualize import draw_people, save_debug_png, save_people_png


def test_skeletons_are_drawn_in_distinct_colours(tmp_path):
    image = np.zeros((80, 120, 3), np.uint8)
    people = np.zeros((2, 17, 3))
    people[:, :, 2] = 1.0
    people[0, :, :2] = [20.5, 40.5]
    people[0, 5, :2], people[0, 6, :2] = [10.5, 10.5], [30.5, 70.5]  # shoulders: an edge
    people[1, :, :2] = [90.5, 40.5]
    people[1, 5, :2], people[1, 6, :2] = [80.5, 10.5], [100.5, 70.5]
    drawn = draw_people(image, people, COCO17)
    left, right = drawn[:, :60].reshape(-1, 3), drawn[:, 60:].reshape(-1, 3)

    def main_colour(pixels):
        values, counts = np.unique(pixels[pixels.sum(1) > 0], axis=0, return_counts=True)
        return tuple(values[counts.argmax()])

    assert main_colour(left) != main_colour(right)
    assert drawn[40, 20].sum() > 0 and image.sum() == 0  # drawn on a copy
    path = save_people_png(tmp_path / "people.png", image, people)
    assert cv2.imread(str(path)).shape == (80, 120, 3)
    debug = save_debug_png(tmp_path / "debug.png", image, np.random.rand(20, 30, 17), np.random.rand(20, 30, 17, 2), people)
    assert cv2.imread(str(debug)).shape[0] > 100
    with pytest.raises(ValueError, match=r"\[P, 17, 3\]"):
        draw_people(image, np.zeros((2, 5, 3)))


class GroundTruthPredictor:
    """Returns an image's annotated people (the image is recognised by its bytes), shifted by `shift` px."""

    def __init__(self, dataset, shift):
        self.coco, self.shift = dataset.coco, shift
        self.lookup = {hash(dataset.load_image(i).tobytes()): i for i in dataset.image_ids}
        self.calls = 0

    def __call__(self, image):
        self.calls += 1
        image_id = self.lookup[hash(image.tobytes())]
        anns = [a for a in self.coco.imgToAnns[image_id] if a["num_keypoints"] > 0]
        kpts = np.asarray([a["keypoints"] for a in anns], np.float32).reshape(-1, 17, 3)
        kpts[:, :, 0] += self.shift
        return DecodeResult(kpts, np.zeros((len(anns), 17, 1), np.float32), np.ones(len(anns), np.float32))


def test_evaluate_dataset_on_synthetic(tmp_path):
    from efficienthrnet.data.coco import CocoKeypoints
    from efficienthrnet.data.synthetic import make_synthetic_dataset

    make_synthetic_dataset(tmp_path / "syn", num_images=6, image_size=64, seed=1, val_fraction=0.5)
    spec = f"synthetic:{tmp_path / 'syn'}"
    dataset = CocoKeypoints.from_spec(spec, "val")
    for shift, expect_perfect in ((0.0, True), (6.0, False)):
        predictor = GroundTruthPredictor(dataset, shift)
        out = tmp_path / f"results_{shift}.json"
        metrics = evaluate_dataset(predictor, spec, "val", limit=2, out_json=out, progress=False)
        assert predictor.calls == metrics["num_images"] == 2
        written = json.loads(out.read_text())
        assert len(written) == metrics["num_people"] and {r["image_id"] for r in written} <= set(dataset.image_ids[:2])
        assert (metrics["AP"] == pytest.approx(1.0)) == expect_perfect
    with pytest.raises(ValueError, match="limit=0"):
        evaluate_dataset(predictor, dataset, limit=0, progress=False)
