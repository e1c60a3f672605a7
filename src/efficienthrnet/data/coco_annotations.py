"""A COCO keypoints annotation file, validated whole when it is opened (`load_coco_annotations`):
a malformed entry fails at once with its image or annotation id (`CocoFormatError`), and a
missing `area` is filled in as `AREA_PER_BOX_AREA` x bbox area (`fill_missing_areas`)."""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
from pathlib import Path

from pycocotools.coco import COCO

from efficienthrnet.keypoints import COCO17, KeypointSchema

_REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
_REQUIRED_ANNOTATION_KEYS = ("id", "image_id", "category_id", "keypoints", "iscrowd")
# Person segment area / box area: the factor CrowdPose's evaluation applies to the box area in
# place of a segment area, roughly COCO's mean ratio (see the module docstring).
AREA_PER_BOX_AREA = 0.53


class CocoFormatError(ValueError):
    """An annotation file that does not follow the COCO keypoints format."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check_images(images: list, source: Path) -> set[int]:
    """Validate the 'images' list; return its ids. Raises naming the file and the image id."""
    seen: set[int] = set()
    for img in images:
        if not isinstance(img, dict):
            raise CocoFormatError(f"{source}: an entry of 'images' is {img!r}, not an object")
        where = f"{source}: image id {img.get('id', '?')!r}"
        missing = [k for k in _REQUIRED_IMAGE_KEYS if k not in img]
        if missing:
            raise CocoFormatError(
                f"{where} lacks {missing}; every image entry needs {list(_REQUIRED_IMAGE_KEYS)}"
            )
        if not _is_int(img["id"]):
            raise CocoFormatError(f"{where}: the id must be an integer")
        if img["id"] in seen:
            raise CocoFormatError(f"{where} appears twice in 'images'; image ids must be unique")
        seen.add(img["id"])
        for key in ("width", "height"):
            if not _is_int(img[key]) or img[key] < 1:
                raise CocoFormatError(
                    f"{where} has {key} {img[key]!r}; it must be a positive integer (pixels)"
                )
        if not isinstance(img["file_name"], str) or not img["file_name"]:
            raise CocoFormatError(f"{where} has file_name {img['file_name']!r}; it must name the image file")
    return seen


def _check_annotation(ann: dict, source: Path, num_keypoints: int, image_ids: set[int]) -> None:
    """Raise a `CocoFormatError` naming the file and the annotation when `ann` is malformed."""
    if not isinstance(ann, dict):
        raise CocoFormatError(f"{source}: an entry of 'annotations' is {ann!r}, not an object")
    where = f"{source}: annotation id {ann.get('id', '?')!r} (image id {ann.get('image_id', '?')!r})"
    missing = [k for k in _REQUIRED_ANNOTATION_KEYS if k not in ann]
    if missing:
        raise CocoFormatError(f"{where} lacks the key(s) {missing}; every keypoint annotation needs them")
    if not _is_int(ann["id"]):
        raise CocoFormatError(f"{where}: the annotation id must be an integer")
    if ann["image_id"] not in image_ids:
        raise CocoFormatError(f"{where} refers to an image id that is not in 'images'")
    if ann["iscrowd"] not in (0, 1):
        raise CocoFormatError(f"{where} has iscrowd {ann['iscrowd']!r}; it must be 0 or 1")
    kps = ann["keypoints"]
    if not isinstance(kps, list) or len(kps) != 3 * num_keypoints:
        length = len(kps) if isinstance(kps, list) else type(kps).__name__
        raise CocoFormatError(
            f"{where} has keypoints of length {length}; the schema has {num_keypoints} keypoints, "
            f"so it must be a list of {3 * num_keypoints} numbers (x, y, v per keypoint)"
        )
    bad = next((i for i, v in enumerate(kps) if not _is_finite_number(v)), None)
    if bad is not None:
        raise CocoFormatError(
            f"{where} has keypoint value {kps[bad]!r} at position {bad} (keypoint {bad // 3}); "
            f"keypoints must be finite numbers"
        )
    if "num_keypoints" in ann and (not _is_int(ann["num_keypoints"]) or ann["num_keypoints"] < 0):
        raise CocoFormatError(
            f"{where} has num_keypoints {ann['num_keypoints']!r}; it must be an integer >= 0"
        )
    _check_box_and_area(ann, where)
    masked = ann["iscrowd"] or _count_keypoints(ann) == 0
    if masked and not ann.get("segmentation") and "bbox" not in ann:
        what = "is a crowd region" if ann["iscrowd"] else "has zero keypoints"
        raise CocoFormatError(
            f"{where} {what} but has neither a 'segmentation' nor a 'bbox', so its region cannot be masked; "
            f"add one of them"
        )


def _check_box_and_area(ann: dict, where: str) -> None:
    """bbox (when present) is 4 finite numbers with width, height >= 0; area a finite number >= 0."""
    if "bbox" in ann:
        box = ann["bbox"]
        if not isinstance(box, list) or len(box) != 4 or not all(_is_finite_number(v) for v in box):
            raise CocoFormatError(
                f"{where} has bbox {box!r}; it must be 4 finite numbers [x, y, width, height]"
            )
        if box[2] < 0 or box[3] < 0:
            raise CocoFormatError(f"{where} has bbox {box!r} with a negative width or height")
    if "area" in ann and (not _is_finite_number(ann["area"]) or ann["area"] < 0):
        raise CocoFormatError(f"{where} has area {ann['area']!r}; it must be a finite number >= 0")


def fill_missing_areas(annotations: list[dict]) -> int:
    """Give each annotation without 'area' AREA_PER_BOX_AREA x its bbox width x height (in place).

    pycocotools' COCOeval needs every ground-truth area (OKS scale, area ranges); CrowdPose
    leaves it out. Annotations with neither area nor bbox are left alone. Returns the count filled.
    """
    filled = 0
    for ann in annotations:
        if "area" not in ann and "bbox" in ann:
            ann["area"] = AREA_PER_BOX_AREA * float(ann["bbox"][2]) * float(ann["bbox"][3])
            filled += 1
    return filled


def _count_keypoints(ann: dict) -> int:
    """COCO's num_keypoints, computed from the visibility flags when the field is absent."""
    if "num_keypoints" in ann:
        return int(ann["num_keypoints"])
    return int(sum(1 for v in ann["keypoints"][2::3] if v > 0))


def load_coco_annotations(annotation_file: str | os.PathLike, schema: KeypointSchema = COCO17) -> COCO:
    """Load and validate a COCO keypoints JSON; return the pycocotools `COCO` object.

    A missing `area` is filled in from the bbox (`fill_missing_areas`), so COCOeval can score it.
    """
    annotation_file = Path(annotation_file)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"annotation file {annotation_file} does not exist")
    try:
        with open(annotation_file) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CocoFormatError(f"{annotation_file} is not valid JSON: {e}") from e
    if not isinstance(data, dict):
        raise CocoFormatError(f"{annotation_file} holds a JSON {type(data).__name__}, not a COCO object")
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise CocoFormatError(f"{annotation_file} has no {key!r} list; it is not a COCO annotation file")
    for key in ("images", "annotations"):
        if not isinstance(data[key], list):
            raise CocoFormatError(f"{annotation_file}: {key!r} is a {type(data[key]).__name__}, not a list")
    image_ids = _check_images(data["images"], annotation_file)
    annotation_ids: set[int] = set()
    for ann in data["annotations"]:
        _check_annotation(ann, annotation_file, schema.num_keypoints, image_ids)
        if ann["id"] in annotation_ids:  # pycocotools would silently keep only the last one
            raise CocoFormatError(
                f"{annotation_file}: annotation id {ann['id']} appears twice; annotation ids must be unique"
            )
        annotation_ids.add(ann["id"])
    fill_missing_areas(data["annotations"])
    coco = COCO()
    coco.dataset = data
    # pycocotools prints progress lines; keep library output quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco
