"""The synthetic generator writes valid, deterministic COCO keypoint data."""

import contextlib
import io
import json

import numpy as np
import pytest
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from efficienthrnet.data.coco import CocoKeypoints
from efficienthrnet.data.synthetic import make_synthetic_dataset


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth")
    summary = make_synthetic_dataset(root, num_images=40, image_size=128, seed=3, val_fraction=0.25)
    return root, summary


def test_summary_and_layout(synth):
    root, summary = synth
    assert summary["train"]["images"] == 30 and summary["val"]["images"] == 10
    assert len(list((root / "train").glob("*.jpg"))) == 30 and len(list((root / "val").glob("*.jpg"))) == 10
    data = json.loads((root / "annotations" / "person_keypoints_val.json").read_text())
    cat = data["categories"][0]
    assert cat["id"] == 1 and len(cat["keypoints"]) == 17 and [16, 14] in cat["skeleton"]
    ids = [a["id"] for split in ("train", "val")
           for a in json.loads((root / "annotations" / f"person_keypoints_{split}.json").read_text())["annotations"]]
    assert len(ids) == len(set(ids))


def test_content_has_every_annotation_kind(synth):
    root, _ = synth
    ds = CocoKeypoints.from_spec(f"synthetic:{root}", "train")
    anns = ds.coco.dataset["annotations"]
    people = [a for a in anns if a["num_keypoints"] > 0]
    per_image = np.bincount([a["image_id"] for a in people])
    vis = np.array([a["keypoints"][2::3] for a in people])
    assert 1 <= per_image[per_image > 0].min() and per_image.max() <= 8
    assert any(a["iscrowd"] for a in anns) and any(a["num_keypoints"] == 0 and not a["iscrowd"] for a in anns)
    assert (vis == 1).sum() > 5 and (vis == 0).sum() > 20 and (vis == 2).mean() > 0.75
    heights = np.array([a["bbox"][3] for a in people])
    assert np.median(heights) > 128 / 3
    for a in people:
        assert a["area"] == pytest.approx(0.53 * a["bbox"][2] * a["bbox"][3], abs=0.01)
        assert a["num_keypoints"] == int((np.array(a["keypoints"][2::3]) > 0).sum())
    # Visible joints are drawn as coloured discs: strongly saturated pixels at v=2 joints.
    sat = []
    for i in range(5):
        s = ds[i]
        for person in s.keypoints:
            for x, y, v in person:
                if v == 2:
                    px = s.image[int(round(y)), int(round(x))].astype(int)
                    sat.append(px.max() - px.min())
    assert np.median(sat) > 90


def test_ground_truth_scores_ap_one(synth):
    root, _ = synth
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(str(root / "annotations" / "person_keypoints_val.json"))
        results = [{"image_id": a["image_id"], "category_id": 1, "keypoints": a["keypoints"], "score": 1.0}
                   for a in gt.dataset["annotations"] if a["num_keypoints"] > 0]
        ev = COCOeval(gt, gt.loadRes(results), "keypoints")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    assert len(results) > 10
    assert ev.stats[0] == pytest.approx(1.0)


def test_same_seed_same_bytes(tmp_path, synth):
    root, _ = synth
    make_synthetic_dataset(tmp_path / "a", num_images=40, image_size=128, seed=3, val_fraction=0.25)
    make_synthetic_dataset(tmp_path / "b", num_images=40, image_size=128, seed=4, val_fraction=0.25)
    same = (tmp_path / "a" / "annotations" / "person_keypoints_train.json").read_bytes()
    assert same == (root / "annotations" / "person_keypoints_train.json").read_bytes()
    assert same != (tmp_path / "b" / "annotations" / "person_keypoints_train.json").read_bytes()


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="image_size 16"):
        make_synthetic_dataset(tmp_path, 4, image_size=16)
    with pytest.raises(ValueError, match="num_images 1"):
        make_synthetic_dataset(tmp_path, 1, val_fraction=0.5)


def test_max_people_caps_the_people_with_keypoints(tmp_path):
    make_synthetic_dataset(tmp_path, num_images=30, image_size=96, seed=1, val_fraction=0.0, max_people=2)
    data = json.loads((tmp_path / "annotations" / "person_keypoints_train.json").read_text())
    per_image = {}
    for ann in data["annotations"]:
        if ann["num_keypoints"] > 0:
            per_image[ann["image_id"]] = per_image.get(ann["image_id"], 0) + 1
    assert max(per_image.values()) == 2 and min(per_image.values()) == 1
    with pytest.raises(ValueError, match="max_people 9"):
        make_synthetic_dataset(tmp_path / "x", 4, max_people=9)


def test_min_height_makes_the_people_with_keypoints_taller(tmp_path):
    def keypoint_extents(min_height):
        out = tmp_path / f"h{min_height}"
        make_synthetic_dataset(out, num_images=30, image_size=96, seed=2, val_fraction=0.0,
                               max_people=2, min_height=min_height)
        data = json.loads((out / "annotations" / "person_keypoints_train.json").read_text())
        extents = []
        for ann in data["annotations"]:
            kps = np.asarray(ann["keypoints"], float).reshape(17, 3)
            if ann["num_keypoints"] > 0:
                labelled = kps[kps[:, 2] > 0, :2]
                extents.append(np.ptp(labelled, axis=0).max())
        return np.percentile(extents, 10)

    # Keypoint extent: the figure's height times its pose and cut by the image: compare the short tail.
    default, tall = keypoint_extents(0.35), keypoint_extents(0.8)
    assert tall > 1.5 * default  # measured 51 vs 28 px
    with pytest.raises(ValueError, match="min_height 0.95"):
        make_synthetic_dataset(tmp_path / "x", 4, min_height=0.95)


def _hue_gap(a: float, b: float) -> float:
    d = abs(a - b) % 360.0
    return min(d, 360.0 - d)


@pytest.mark.parametrize("num", [17, 14, 5])
def test_joint_colours_stay_off_the_limb_hues_and_apart(num):
    # A joint disc whose hue matches the limb it ends (the old palette's right wrist: orange on the
    # orange arm) vanishes into it; the network then never found that joint.
    from efficienthrnet.data.synthetic_figure import (
        _LIMB_HUE_MARGIN, _LIMB_LEFT_COLOUR, _LIMB_RIGHT_COLOUR, _hue_deg, _joint_colours,
    )

    colours = _joint_colours(num)
    assert colours.shape == (num, 3)
    assert np.array_equal(colours[0], [255, 255, 255])
    limb_hues = [_hue_deg(c) for c in (_LIMB_LEFT_COLOUR, _LIMB_RIGHT_COLOUR)]
    for colour in colours[1:]:
        assert min(_hue_gap(_hue_deg(colour), h) for h in limb_hues) >= _LIMB_HUE_MARGIN - 1e-6
    gaps = np.linalg.norm(colours[:, None] - colours[None], axis=-1) + 1e9 * np.eye(num)
    assert gaps.min() > 40.0


def test_every_drawn_joint_disc_has_a_dark_ring():
    from efficienthrnet.data.synthetic_figure import _COCO_KEYSET, _JOINT_OUTLINE, _draw_figure, _sample_figure

    fig = _sample_figure(np.random.default_rng(3), 100.0, np.array([64.0, 70.0]))
    canvas = np.full((160, 160, 3), 128, np.uint8)
    _draw_figure(canvas, fig)
    points, drawn = fig.points(), fig.points_drawn()
    yy, xx = np.mgrid[:160, :160]
    for point in _COCO_KEYSET.points:
        if not drawn[point]:
            continue
        x, y = points[point]
        radius = fig.joint_radius * (0.7 if point < 5 else 1.0)
        dist = np.hypot(xx - x, yy - y)  # cv2 puts pixel centres on integer coordinates
        ring = canvas[(dist > radius + 0.5) & (dist < radius + 1.0)]
        # Without the ring this annulus shows the grey background (128) or a limb (a channel
        # >= 190); the face's small discs may cover each other's rings, so they are left out.
        if point >= 5:
            assert np.median(ring.max(axis=1)) < 118, (point, np.median(ring.max(axis=1)))
        assert canvas[int(y), int(x)].max() > 150
