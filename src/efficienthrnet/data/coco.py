"""Read COCO-format person-keypoint files (real COCO 2017 or the synthetic generator's output).

One `CocoKeypoints` object wraps one annotation JSON and its image folder. Indexing it gives a
`PoseSample`: the decoded RGB image, the keypoints of the annotated people and the loss mask
(0 over crowd regions and over people annotated with zero keypoints, as the reference does).

The whole annotation file is validated when it is opened, so a malformed entry fails at once
with its image or annotation id; image files are checked when they are read (`decode_image_file`:
format, size from the header before any decoding, truncation).

A missing `area` is filled in as `AREA_PER_BOX_AREA` x bbox width x height: CrowdPose's
files carry no area, and its official evaluation (crowdposetools, xtcocotools with
use_area=False) scales OKS by exactly that quantity; the synthetic generator writes the same.

This module holds the dataset (`resolve_dataset`, `CocoKeypoints`, `PoseSample`); the annotation
file's validation lives in `efficienthrnet.data.coco_annotations` and image decoding in
`efficienthrnet.data.image_file`, both re-exported here.
"""

from __future__ import annotations

import contextlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO  # noqa: F401  (importable from here, as before the split)

from efficienthrnet.data.coco_annotations import (  # noqa: F401  (re-exported for existing callers)
    _REQUIRED_ANNOTATION_KEYS,
    _REQUIRED_IMAGE_KEYS,
    AREA_PER_BOX_AREA,
    CocoFormatError,
    _check_annotation,
    _check_box_and_area,
    _check_images,
    _count_keypoints,
    _is_finite_number,
    _is_int,
    fill_missing_areas,
    load_coco_annotations,
)
from efficienthrnet.data.image_file import (  # noqa: F401
    _JPEG_SOF_MARKERS,
    _JPEG_STANDALONE_MARKERS,
    _PNG_SIGNATURE,
    DEFAULT_MAX_PIXELS,
    ImageFileError,
    _check_max_pixels,
    _jpeg_header,
    _png_header,
    decode_image_file,
    image_header,
)
from efficienthrnet.keypoints import COCO17, KeypointSchema, get_schema

# Split names as they appear on disk, per dataset kind.
_SPLIT_DIRS = {
    "coco": {"train": "train2017", "val": "val2017"},
    "synthetic": {"train": "train", "val": "val"},
}

logger = logging.getLogger(__name__)


def resolve_dataset(spec: str, split: str) -> tuple[Path, Path]:
    """Turn a dataset spec ("coco:DIR" or "synthetic:DIR") into (annotation_json, image_dir).

    COCO uses the official layout (DIR/annotations/person_keypoints_val2017.json, DIR/val2017/);
    the synthetic generator writes the same layout with split names "train" and "val".
    """
    if split not in ("train", "val"):
        raise ValueError(f"split {split!r} is not known; use 'train' or 'val'")
    kind, sep, root = spec.partition(":")
    if not sep or kind not in _SPLIT_DIRS or not root:
        raise ValueError(
            f"dataset spec {spec!r} is not understood; write 'coco:DIR' (COCO 2017 download) or "
            f"'synthetic:DIR' (made by make_synthetic_dataset)"
        )
    split_dir = _SPLIT_DIRS[kind][split]
    annotation_file = Path(root) / "annotations" / f"person_keypoints_{split_dir}.json"
    image_dir = Path(root) / split_dir
    if not annotation_file.is_file():
        hint = (
            "download annotations_trainval2017.zip from cocodataset.org and unzip it into DIR"
            if kind == "coco"
            else "run `efficienthrnet make-synthetic --out DIR` first"
        )
        raise FileNotFoundError(f"dataset {spec!r}: annotation file {annotation_file} is missing; {hint}")
    if not image_dir.is_dir():
        raise FileNotFoundError(
            f"dataset {spec!r}: image folder {image_dir} is missing; it should hold the {split_dir} images"
        )
    return annotation_file, image_dir


@dataclass(frozen=True)
class PoseSample:
    """One image with its people, as read from disk (original resolution).

    Attributes:
      image_id: COCO image id.
      file_name: path of the image file.
      image: uint8 [H, W, 3] RGB.
      keypoints: float32 [N, J, 3] (x, y, visibility) for the people that carry keypoints
        (every annotation except crowd regions without keypoints, as the reference keeps them).
      mask: float32 [H, W], 0 over crowd regions and zero-keypoint people, 1 elsewhere.
      annotation_ids: the COCO annotation id of each of the N people.
    """

    image_id: int
    file_name: str
    image: np.ndarray
    keypoints: np.ndarray
    mask: np.ndarray
    annotation_ids: tuple[int, ...]


def _ignore_region(ann: dict, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] region of a crowd or zero-keypoint annotation (segmentation, else its bbox).

    Both are ignore regions: the loss mask is 0 there, as for crowds and unannotated people.
    """
    if ann.get("segmentation"):
        segm = ann["segmentation"]
        if isinstance(segm, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, height, width)
        else:  # compressed RLE
            rle = segm
        return mask_utils.decode(rle)
    return _box_region(ann["bbox"], height, width)


def _box_region(bbox: list[float], height: int, width: int) -> np.ndarray:
    """uint8 [H, W]: 1 on the pixels whose centre (i + 0.5) lies in the box [x, x + w) x [y, y + h)."""
    x, y, w, h = bbox
    x0, x1 = (int(np.clip(np.ceil(v - 0.5), 0, width)) for v in (x, x + w))
    y0, y1 = (int(np.clip(np.ceil(v - 0.5), 0, height)) for v in (y, y + h))
    region = np.zeros((height, width), np.uint8)
    region[y0:y1, x0:x1] = 1
    return region


@contextlib.contextmanager
def _quiet_logger():
    previous = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(previous)


class CocoKeypoints:
    """Random access to the images and person keypoints of one COCO-format split.

    Args:
      annotation_file: the person_keypoints JSON.
      image_dir: folder holding the images named by each entry's file_name.
      schema: keypoint schema; each annotation must carry 3 * schema.num_keypoints numbers.
      skip_images_without_people: drop images with no annotation that has keypoints (for
        training: they carry no target). Keep them (the default) for evaluation. The dropped
        ids are kept in `skipped_image_ids` and their count is logged (a warning line).
      max_pixels: refuse image files larger than this (width x height, read from the header
        before decoding).

    The object pickles by path (the annotation file is re-read on unpickling), so it can be
    sent to data-loading worker processes cheaply.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        schema: KeypointSchema | str = COCO17,
        skip_images_without_people: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
    ):
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.schema = get_schema(schema)
        self.skip_images_without_people = skip_images_without_people
        self.max_pixels = _check_max_pixels(max_pixels)
        if not self.image_dir.is_dir():
            raise FileNotFoundError(f"image folder {self.image_dir} does not exist")
        self._load()

    @classmethod
    def from_spec(cls, spec: str, split: str, **kwargs) -> CocoKeypoints:
        """Open a split of a dataset spec ("coco:DIR" / "synthetic:DIR")."""
        annotation_file, image_dir = resolve_dataset(spec, split)
        return cls(annotation_file, image_dir, **kwargs)

    def _load(self) -> None:
        self.coco = load_coco_annotations(self.annotation_file, self.schema)
        ids = sorted(self.coco.imgs)
        skipped: list[int] = []
        if self.skip_images_without_people:
            skipped = [
                i for i in ids if not any(_count_keypoints(a) > 0 for a in self.coco.imgToAnns.get(i, []))
            ]
            ids = sorted(set(ids) - set(skipped))
            if skipped:
                logger.warning(
                    "%s: skipping %d of %d images that have no person with keypoints (no training target)",
                    self.annotation_file,
                    len(skipped),
                    len(self.coco.imgs),
                )
        self.image_ids: list[int] = ids
        self.skipped_image_ids: tuple[int, ...] = tuple(skipped)

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("coco", "image_ids", "skipped_image_ids")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        with _quiet_logger():  # the opening process has logged the skips already
            self._load()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> PoseSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image_id = self.image_ids[index]
        image = self.load_image(image_id)  # first: its checks keep a huge image from allocating masks
        keypoints, mask, ann_ids = self.load_annotations(image_id)
        path = self.image_path(image_id)
        return PoseSample(
            image_id=image_id,
            file_name=str(path),
            image=image,
            keypoints=keypoints,
            mask=mask,
            annotation_ids=ann_ids,
        )

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def load_image(self, image_id: int) -> np.ndarray:
        """Decode an image as uint8 RGB [H, W, 3] (see `decode_image_file`); errors name the file,
        the image id and the annotation file."""
        info = self.coco.imgs[image_id]
        return decode_image_file(
            self.image_path(image_id),
            max_pixels=self.max_pixels,
            expected_size=(info["width"], info["height"]),
            context=f" (image id {image_id} in {self.annotation_file})",
        )

    def load_annotations(self, image_id: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """(keypoints [N, J, 3] float32, mask [H, W] float32, annotation ids) of one image."""
        info = self.coco.imgs[image_id]
        height, width = info["height"], info["width"]
        if width * height > self.max_pixels:
            raise CocoFormatError(
                f"{self.annotation_file}: image id {image_id} is {width}x{height}, more than "
                f"max_pixels={self.max_pixels} pixels; raise max_pixels if the image is genuine"
            )
        ignore = np.zeros((height, width), dtype=bool)
        people, ann_ids = [], []
        for ann in self.coco.imgToAnns.get(image_id, []):
            has_keypoints = _count_keypoints(ann) > 0
            if ann["iscrowd"] or not has_keypoints:
                try:
                    ignore |= _ignore_region(ann, height, width).astype(bool)
                except Exception as e:  # pycocotools raises bare errors on bad polygons / RLE
                    raise CocoFormatError(
                        f"{self.annotation_file}: annotation id {ann['id']} (image id {image_id}) has a "
                        f"segmentation pycocotools cannot decode: {e!r}"
                    ) from e
            # As the reference: drop crowd regions without keypoints, keep everyone else.
            if not ann["iscrowd"] or has_keypoints:
                people.append(ann["keypoints"])
                ann_ids.append(ann["id"])
        keypoints = np.asarray(people, dtype=np.float32).reshape(len(people), self.schema.num_keypoints, 3)
        mask = (~ignore).astype(np.float32)
        return keypoints, mask, tuple(ann_ids)
