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


# ------------------------------------------------- tiny synthetic files: valid edge cases, bad input


def _tiny_dataset(tmp_path, images=None, annotations=None, suffix=".png", size=(12, 8)):
    """One w x h image file (suffix .png or .jpg) and a COCO file; entries can be overridden."""
    import cv2

    width, height = size
    image = np.zeros((height, width, 3), np.uint8)
    image[:, :, 0] = np.arange(width, dtype=np.uint8) * 10
    cv2.imwrite(str(tmp_path / f"a{suffix}"), image)
    person = {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 1,
              "keypoints": [3, 4, 2] + [0] * 48, "bbox": [1, 1, 6, 5], "area": 20}
    data = {
        "images": images if images is not None else
        [{"id": 1, "file_name": f"a{suffix}", "width": width, "height": height}],
        "annotations": annotations if annotations is not None else [person],
        "categories": [{"id": 1, "name": "person"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def _person(**changes):
    ann = {"id": 11, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 1,
           "keypoints": [3, 4, 2] + [0] * 48, "bbox": [1, 1, 6, 5], "area": 20}
    ann.update(changes)
    return ann


def test_zero_keypoint_person_with_only_a_bbox_is_masked_by_its_box(tmp_path):
    # Valid COCO (CrowdPose has such entries): no segmentation, the box is the ignore region.
    box_only = {"id": 12, "image_id": 1, "category_id": 1, "iscrowd": 0, "num_keypoints": 0,
                "keypoints": [0] * 51, "bbox": [2, 3, 4, 2]}
    ds = CocoKeypoints(_tiny_dataset(tmp_path, annotations=[_person(), box_only]), tmp_path)
    kps, mask, ids = ds.load_annotations(1)
    assert ids == (11, 12) and kps.shape == (2, 17, 3)
    expected = np.ones((8, 12), np.float32)
    expected[3:5, 2:6] = 0.0  # pixel centres inside [2, 6) x [3, 5)
    np.testing.assert_array_equal(mask, expected)
    assert ds[0].image.shape == (8, 12, 3)


def test_missing_area_is_filled_from_the_bbox(tmp_path):
    from efficienthrnet.data.coco import AREA_PER_BOX_AREA

    person = _person()
    del person["area"]
    ds = CocoKeypoints(_tiny_dataset(tmp_path, annotations=[person]), tmp_path)
    assert ds.coco.anns[11]["area"] == pytest.approx(AREA_PER_BOX_AREA * 6 * 5)


@pytest.mark.parametrize(
    "images,message",
    [
        ([{"id": 1, "file_name": "a.png", "width": 12, "height": 8}] * 2, r"image id 1 appears twice"),
        ([{"id": 1, "file_name": "a.png", "width": -12, "height": 8}], r"image id 1 has width -12"),
        ([{"id": 1, "file_name": "a.png", "width": 12, "height": 0}], r"image id 1 has height 0"),
        ([{"id": 1, "file_name": "a.png", "width": 12.5, "height": 8}], r"image id 1 has width 12\.5"),
        ([{"id": "1", "file_name": "a.png", "width": 12, "height": 8}], r"image id '1'.*integer"),
    ],
)
def test_bad_image_entries_name_file_and_image_id(tmp_path, images, message):
    with pytest.raises(CocoFormatError, match=r"ann\.json: " + message):
        CocoKeypoints(_tiny_dataset(tmp_path, images=images), tmp_path)


@pytest.mark.parametrize(
    "changes,message",
    [
        ({"keypoints": [3, 4, 2, float("nan")] + [0] * 47}, r"keypoint value nan at position 3"),
        ({"keypoints": [3, float("inf"), 2] + [0] * 48}, r"keypoint value inf at position 1"),
        ({"bbox": [1, 1, -6, 5]}, r"bbox \[1, 1, -6, 5\] with a negative width"),
        ({"bbox": [1, 1, float("inf"), 5]}, r"bbox \[1, 1, inf, 5\]; it must be 4 finite numbers"),
        ({"bbox": [1, 1, 5]}, r"bbox \[1, 1, 5\]; it must be 4 finite numbers"),
        ({"area": float("nan")}, r"area nan"),
        ({"iscrowd": 2}, r"iscrowd 2"),
    ],
)
def test_bad_annotation_values_name_file_and_annotation_id(tmp_path, changes, message):
    # json writes NaN/Infinity, which Python's json (and so this reader) reads back.
    path = _tiny_dataset(tmp_path, annotations=[_person(**changes)])
    with pytest.raises(CocoFormatError, match=r"ann\.json: annotation id 11 \(image id 1\) has " + message):
        CocoKeypoints(path, tmp_path)


def test_duplicate_annotation_ids_are_refused(tmp_path):
    path = _tiny_dataset(tmp_path, annotations=[_person(), _person()])
    with pytest.raises(CocoFormatError, match=r"ann\.json: annotation id 11 appears twice"):
        CocoKeypoints(path, tmp_path)


def test_masked_entry_without_region_is_refused(tmp_path):
    crowd = _person(iscrowd=1, segmentation=[])
    del crowd["bbox"]
    with pytest.raises(CocoFormatError, match=r"annotation id 11 .*crowd region.*neither a 'segmentation' nor"):
        CocoKeypoints(_tiny_dataset(tmp_path, annotations=[crowd]), tmp_path)


def test_image_header_larger_than_max_pixels_is_refused_before_decoding(tmp_path):
    # A 20000 x 20000 PNG header on a few bytes: refused from the header, nothing decoded.
    import struct
    import zlib

    ihdr = struct.pack(">II5B", 20000, 20000, 8, 2, 0, 0, 0)
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    images = [{"id": 1, "file_name": "bomb.png", "width": 20000, "height": 20000}]
    path = _tiny_dataset(tmp_path, images=images)
    (tmp_path / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))
    ds = CocoKeypoints(path, tmp_path)
    with pytest.raises(OSError, match=r"bomb\.png \(image id 1 in .*ann\.json\) is 20000x20000 .*max_pixels=50000000"):
        ds[0]
    small = CocoKeypoints(_tiny_dataset(tmp_path), tmp_path, max_pixels=95)
    with pytest.raises(ValueError, match=r"a\.png .* is 12x8 .*max_pixels=95"):
        small[0]
    with pytest.raises(ValueError, match=r"ann\.json: image id 1 is 20000x20000, more than max_pixels"):
        ds.load_annotations(1)
    with pytest.raises(ValueError, match=r"max_pixels=0"):
        CocoKeypoints(path, tmp_path, max_pixels=0)


def test_header_size_must_match_the_annotation(tmp_path):
    images = [{"id": 1, "file_name": "a.png", "width": 20, "height": 8}]
    ds = CocoKeypoints(_tiny_dataset(tmp_path, images=images), tmp_path)
    with pytest.raises(ValueError, match=r"a\.png \(image id 1 .*\) is 12x8 by its PNG header but the annotation says 20x8"):
        ds[0]


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_refused(tmp_path, suffix):
    ds = CocoKeypoints(_tiny_dataset(tmp_path, suffix=suffix, size=(64, 48)), tmp_path)
    assert ds[0].image.shape == (48, 64, 3)  # whole file: fine
    path = tmp_path / f"a{suffix}"
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(OSError, match=rf"a\{suffix} \(image id 1 .*\) is truncated.*(FFD9|IEND)"):
        ds[0]


def test_not_an_image_and_empty_files_are_named(tmp_path):
    from efficienthrnet.data.coco import decode_image_file

    (tmp_path / "x.gif").write_bytes(b"GIF89a....")
    with pytest.raises(ValueError, match=r"x\.gif cannot be used: it is not a JPEG or PNG file"):
        decode_image_file(tmp_path / "x.gif")
    (tmp_path / "e.jpg").write_bytes(b"")
    with pytest.raises(ValueError, match=r"e\.jpg is empty"):
        decode_image_file(tmp_path / "e.jpg")
    with pytest.raises(FileNotFoundError, match=r"nope\.jpg does not exist"):
        decode_image_file(tmp_path / "nope.jpg")


def test_skipped_images_are_counted_and_logged(tmp_path, caplog):
    images = [{"id": i, "file_name": "a.png", "width": 12, "height": 8} for i in (1, 2, 3)]
    path = _tiny_dataset(tmp_path, images=images)
    with caplog.at_level("WARNING", logger="efficienthrnet.data.coco"):
        ds = CocoKeypoints(path, tmp_path, skip_images_without_people=True)
    assert ds.image_ids == [1] and ds.skipped_image_ids == (2, 3)
    assert "ann.json: skipping 2 of 3 images" in caplog.text
    assert CocoKeypoints(path, tmp_path).skipped_image_ids == ()


def test_predict_read_image_names_the_path(tmp_path):
    import cv2

    from efficienthrnet.predict import read_image

    rgb = np.zeros((6, 10, 3), np.uint8)
    rgb[..., 0] = 200  # red: checks the BGR -> RGB order
    cv2.imwrite(str(tmp_path / "ok.jpg"), rgb[..., ::-1])
    image = read_image(tmp_path / "ok.jpg")
    assert image.dtype == np.uint8 and image.shape == (6, 10, 3) and image[..., 0].min() > 180
    with pytest.raises(FileNotFoundError, match=r"missing\.png does not exist"):
        read_image(tmp_path / "missing.png")
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path.name} is a folder"):
        read_image(tmp_path)
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ValueError, match=r"notes\.txt cannot be used: it is not a JPEG or PNG file"):
        read_image(tmp_path / "notes.txt")
    (tmp_path / "cut.jpg").write_bytes((tmp_path / "ok.jpg").read_bytes()[:-2])
    with pytest.raises(ValueError, match=r"cut\.jpg is truncated"):
        read_image(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match=r"ok\.jpg is 10x6 .*max_pixels=59"):
        read_image(tmp_path / "ok.jpg", max_pixels=59)
