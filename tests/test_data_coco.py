"""The COCO reader on real COCO samples, and its errors on bad input."""

import json
import shutil

import numpy as np
import pycocotools.mask as mask_utils
import pytest
from conftest import COCO_SAMPLE

from efficienthrnet.data.coco import CocoFormatError, CocoKeypoints, resolve_dataset

SAMPLE = COCO_SAMPLE
ANN = SAMPLE / "test_coco.json"


@pytest.fixture(scope="module")
def sample_ds():
    return CocoKeypoints(ANN, SAMPLE)


def test_reader_returns_people_and_masks(sample_ds):
    assert len(sample_ds) == 4
    samples = [sample_ds[i] for i in range(4)]
    assert sum(s.keypoints.shape[0] for s in samples) == 14
    by_id = {s.image_id: s for s in samples}
    assert [by_id[i].keypoints.shape[0] for i in (785, 40083, 196141, 197388)] == [1, 3, 5, 5]
    raw = json.loads(ANN.read_text())
    for ann in raw["annotations"]:
        s = by_id[ann["image_id"]]
        row = s.annotation_ids.index(ann["id"])
        np.testing.assert_array_equal(s.keypoints[row].reshape(-1), np.asarray(ann["keypoints"], np.float32))
        h, w = s.image.shape[:2]
        region = mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(ann["segmentation"], h, w))).astype(bool)
        if ann["num_keypoints"] == 0:  # the two zero-keypoint people are masked out entirely
            assert region.sum() > 100 and s.mask[region].max() == 0.0
        else:
            assert s.mask[region].mean() > 0.95
    for s in samples:
        assert s.image.dtype == np.uint8 and s.image.shape[2] == 3 and s.mask.shape == s.image.shape[:2]
        assert s.mask.dtype == np.float32
    # Images with zero-keypoint people are exactly the ones with masked pixels.
    assert {i for i, s in by_id.items() if s.mask.min() == 0.0} == {40083, 196141}


def test_reader_decodes_rgb(sample_ds):
    import cv2

    s = sample_ds[0]
    bgr = cv2.imread(s.file_name)
    np.testing.assert_array_equal(s.image[..., ::-1], bgr)


def _write_variant(tmp_path, edit):
    data = json.loads(ANN.read_text())
    edit(data)
    out = tmp_path / "ann.json"
    out.write_text(json.dumps(data))
    return out


def test_missing_image_file_names_file_and_id(tmp_path):
    img_dir = tmp_path / "images"
    img_dir.mkdir()
    for p in SAMPLE.glob("*.jpg"):
        if p.name != "000000040083.jpg":
            shutil.copy(p, img_dir / p.name)
    ds = CocoKeypoints(ANN, img_dir)
    index = ds.image_ids.index(40083)
    with pytest.raises(FileNotFoundError, match=r"000000040083\.jpg.*image id 40083"):
        ds[index]


def test_unreadable_image_names_file(tmp_path):
    for p in SAMPLE.glob("*.jpg"):
        shutil.copy(p, tmp_path / p.name)
    (tmp_path / "000000000785.jpg").write_bytes(b"not a jpeg")
    ds = CocoKeypoints(ANN, tmp_path)
    with pytest.raises(OSError, match=r"000000000785\.jpg.*785"):
        ds[ds.image_ids.index(785)]


def test_wrong_keypoint_length_names_annotation(tmp_path):
    def edit(d):
        d["annotations"][2]["keypoints"] = d["annotations"][2]["keypoints"][:-3]

    bad = _write_variant(tmp_path, edit)
    ann_id = json.loads(ANN.read_text())["annotations"][2]["id"]
    with pytest.raises(CocoFormatError, match=rf"ann\.json.*annotation id {ann_id}.*length 48.*51"):
        CocoKeypoints(bad, SAMPLE)


def test_missing_key_names_annotation(tmp_path):
    def edit(d):
        del d["annotations"][5]["iscrowd"]

    bad = _write_variant(tmp_path, edit)
    ann_id = json.loads(ANN.read_text())["annotations"][5]["id"]
    with pytest.raises(CocoFormatError, match=rf"annotation id {ann_id}.*'iscrowd'"):
        CocoKeypoints(bad, SAMPLE)


def test_unknown_image_and_bad_segmentation(tmp_path):
    bad = _write_variant(tmp_path, lambda d: d["annotations"][0].update(image_id=123456))
    with pytest.raises(CocoFormatError, match="image id 123456"):
        CocoKeypoints(bad, SAMPLE)

    def edit(d):
        ann = next(a for a in d["annotations"] if a["num_keypoints"] == 0)
        ann["segmentation"] = {"counts": "??", "size": [1, 1]}

    bad = _write_variant(tmp_path, edit)
    ds = CocoKeypoints(bad, SAMPLE)
    with pytest.raises(CocoFormatError, match="segmentation"):
        for i in range(len(ds)):
            ds.load_annotations(ds.image_ids[i])


def test_crowd_rle_is_masked_and_dropped(tmp_path):
    h, w = 425, 640
    region = np.zeros((h, w), np.uint8, order="F")
    region[10:60, 20:200] = 1
    rle = mask_utils.encode(np.asfortranarray(region))
    rle["counts"] = rle["counts"].decode()

    def edit(d):
        d["annotations"].append({"id": 1, "image_id": 785, "category_id": 1, "iscrowd": 1, "num_keypoints": 0,
                                 "keypoints": [0] * 51, "segmentation": rle, "bbox": [20, 10, 180, 50], "area": 9000})

    ds = CocoKeypoints(_write_variant(tmp_path, edit), SAMPLE)
    kps, mask, ids = ds.load_annotations(785)
    assert 1 not in ids and kps.shape == (1, 17, 3)
    assert mask[10:60, 20:200].max() == 0.0 and mask.sum() == h * w - 50 * 180


def test_skip_images_without_people(tmp_path):
    def edit(d):
        d["images"].append({"id": 7, "file_name": "000000000785.jpg", "height": 425, "width": 640})

    ann = _write_variant(tmp_path, edit)
    assert len(CocoKeypoints(ann, SAMPLE)) == 5
    assert len(CocoKeypoints(ann, SAMPLE, skip_images_without_people=True)) == 4


def test_resolve_dataset(tmp_path):
    with pytest.raises(ValueError, match="'imagenet:/x'.*coco:DIR"):
        resolve_dataset("imagenet:/x", "train")
    with pytest.raises(ValueError, match="split 'test'"):
        resolve_dataset("coco:/x", "test")
    with pytest.raises(FileNotFoundError, match="person_keypoints_val2017.json"):
        resolve_dataset(f"coco:{tmp_path}", "val")
    (tmp_path / "annotations").mkdir()
    (tmp_path / "annotations" / "person_keypoints_train.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="image folder"):
        resolve_dataset(f"synthetic:{tmp_path}", "train")
    (tmp_path / "train").mkdir()
    assert resolve_dataset(f"synthetic:{tmp_path}", "train") == (
        tmp_path / "annotations" / "person_keypoints_train.json", tmp_path / "train")
