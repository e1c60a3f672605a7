"""Read COCO-format person-keypoint files (real COCO 2017 or the synthetic generator's output).

One `CocoKeypoints` object wraps one annotation JSON and its image folder. Indexing it gives a
`PoseSample`: the decoded RGB image, the keypoints of the annotated people and the loss mask
(0 over crowd regions and over people annotated with zero keypoints, as the reference does).

The whole annotation file is validated when it is opened, so a malformed entry fails at once
with its annotation id; image files are checked when they are read.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pycocotools.mask as mask_utils
from pycocotools.coco import COCO

from efficienthrnet.keypoints import COCO17, KeypointSchema, get_schema

# Split names as they appear on disk, per dataset kind.
_SPLIT_DIRS = {
    "coco": {"train": "train2017", "val": "val2017"},
    "synthetic": {"train": "train", "val": "val"},
}
_REQUIRED_IMAGE_KEYS = ("id", "file_name", "height", "width")
_REQUIRED_ANNOTATION_KEYS = ("id", "image_id", "category_id", "keypoints", "iscrowd")


class CocoFormatError(ValueError):
    """An annotation file that does not follow the COCO keypoints format."""


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


def _check_annotation(ann: dict, source: Path, num_keypoints: int, image_ids: set[int]) -> None:
    """Raise a `CocoFormatError` naming the file and the annotation when `ann` is malformed."""
    where = f"{source}: annotation id {ann.get('id', '?')} (image id {ann.get('image_id', '?')})"
    missing = [k for k in _REQUIRED_ANNOTATION_KEYS if k not in ann]
    if missing:
        raise CocoFormatError(f"{where} lacks the key(s) {missing}; every keypoint annotation needs them")
    if ann["image_id"] not in image_ids:
        raise CocoFormatError(f"{where} refers to an image id that is not in 'images'")
    kps = ann["keypoints"]
    if not isinstance(kps, list) or len(kps) != 3 * num_keypoints:
        length = len(kps) if isinstance(kps, list) else type(kps).__name__
        raise CocoFormatError(
            f"{where} has keypoints of length {length}; the schema has {num_keypoints} keypoints, "
            f"so it must be a list of {3 * num_keypoints} numbers (x, y, v per keypoint)"
        )
    if not all(isinstance(v, (int, float)) for v in kps):
        raise CocoFormatError(f"{where} has non-numeric keypoint values")
    zero_keypoints = _count_keypoints(ann) == 0
    if ann["iscrowd"] and "segmentation" not in ann:
        raise CocoFormatError(f"{where} is a crowd region without 'segmentation'; add its RLE")
    if zero_keypoints and not ann["iscrowd"] and "segmentation" not in ann and "bbox" not in ann:
        raise CocoFormatError(
            f"{where} has zero keypoints but neither 'segmentation' nor 'bbox', so it cannot be masked"
        )


def _count_keypoints(ann: dict) -> int:
    """COCO's num_keypoints, computed from the visibility flags when the field is absent."""
    if "num_keypoints" in ann:
        return int(ann["num_keypoints"])
    return int(sum(1 for v in ann["keypoints"][2::3] if v > 0))


def load_coco_annotations(annotation_file: str | os.PathLike, schema: KeypointSchema = COCO17) -> COCO:
    """Load and validate a COCO keypoints JSON; return the pycocotools `COCO` object."""
    annotation_file = Path(annotation_file)
    if not annotation_file.is_file():
        raise FileNotFoundError(f"annotation file {annotation_file} does not exist")
    try:
        with open(annotation_file) as f:
            data = json.load(f)
    except json.JSONDecodeError as e:
        raise CocoFormatError(f"{annotation_file} is not valid JSON: {e}") from e
    for key in ("images", "annotations", "categories"):
        if key not in data:
            raise CocoFormatError(f"{annotation_file} has no {key!r} list; it is not a COCO annotation file")
    for img in data["images"]:
        missing = [k for k in _REQUIRED_IMAGE_KEYS if k not in img]
        if missing:
            raise CocoFormatError(f"{annotation_file}: image entry {img.get('id', img)} lacks {missing}")
    image_ids = {img["id"] for img in data["images"]}
    for ann in data["annotations"]:
        _check_annotation(ann, annotation_file, schema.num_keypoints, image_ids)
    coco = COCO()
    coco.dataset = data
    # pycocotools prints progress lines; keep library output quiet.
    with contextlib.redirect_stdout(io.StringIO()):
        coco.createIndex()
    return coco


def _ignore_region(ann: dict, height: int, width: int) -> np.ndarray:
    """uint8 [H, W] region of a crowd or zero-keypoint annotation (segmentation, else its bbox)."""
    if "segmentation" in ann and ann["segmentation"]:
        segm = ann["segmentation"]
        if isinstance(segm, list):  # polygons
            rle = mask_utils.merge(mask_utils.frPyObjects(segm, height, width))
        elif isinstance(segm.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(segm, height, width)
        else:  # compressed RLE
            rle = segm
        return mask_utils.decode(rle)
    x, y, w, h = ann["bbox"]
    return mask_utils.decode(mask_utils.frPyObjects([[x, y, w, h]], height, width))[..., 0]


class CocoKeypoints:
    """Random access to the images and person keypoints of one COCO-format split.

    Args:
      annotation_file: the person_keypoints JSON.
      image_dir: folder holding the images named by each entry's file_name.
      schema: keypoint schema; each annotation must carry 3 * schema.num_keypoints numbers.
      skip_images_without_people: drop images with no annotation that has keypoints (for
        training: they carry no target). Keep them (the default) for evaluation.

    The object pickles by path (the annotation file is re-read on unpickling), so it can be
    sent to data-loading worker processes cheaply.
    """

    def __init__(
        self,
        annotation_file: str | os.PathLike,
        image_dir: str | os.PathLike,
        schema: KeypointSchema | str = COCO17,
        skip_images_without_people: bool = False,
    ):
        self.annotation_file = Path(annotation_file)
        self.image_dir = Path(image_dir)
        self.schema = get_schema(schema)
        self.skip_images_without_people = skip_images_without_people
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
        if self.skip_images_without_people:
            ids = [
                i for i in ids if any(_count_keypoints(a) > 0 for a in self.coco.imgToAnns.get(i, []))
            ]
        self.image_ids: list[int] = ids

    def __getstate__(self):
        return {k: v for k, v in self.__dict__.items() if k not in ("coco", "image_ids")}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._load()

    def __len__(self) -> int:
        return len(self.image_ids)

    def __getitem__(self, index: int) -> PoseSample:
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} images")
        image_id = self.image_ids[index]
        keypoints, mask, ann_ids = self.load_annotations(image_id)
        path = self.image_path(image_id)
        return PoseSample(
            image_id=image_id,
            file_name=str(path),
            image=self.load_image(image_id),
            keypoints=keypoints,
            mask=mask,
            annotation_ids=ann_ids,
        )

    def image_path(self, image_id: int) -> Path:
        return self.image_dir / self.coco.imgs[image_id]["file_name"]

    def load_image(self, image_id: int) -> np.ndarray:
        """Decode an image as uint8 RGB [H, W, 3]; raise naming the file if absent or unreadable."""
        path = self.image_path(image_id)
        if not path.is_file():
            raise FileNotFoundError(
                f"image file {path} (image id {image_id} in {self.annotation_file}) does not exist"
            )
        bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if bgr is None:
            raise OSError(f"image file {path} (image id {image_id}) could not be decoded by OpenCV")
        info = self.coco.imgs[image_id]
        if bgr.shape[:2] != (info["height"], info["width"]):
            raise CocoFormatError(
                f"image file {path} is {bgr.shape[1]}x{bgr.shape[0]} but image id {image_id} in "
                f"{self.annotation_file} says {info['width']}x{info['height']}"
            )
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def load_annotations(self, image_id: int) -> tuple[np.ndarray, np.ndarray, tuple[int, ...]]:
        """(keypoints [N, J, 3] float32, mask [H, W] float32, annotation ids) of one image."""
        info = self.coco.imgs[image_id]
        height, width = info["height"], info["width"]
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
