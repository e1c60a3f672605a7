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
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import math
import os
import struct
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
# Person segment area / box area: the factor CrowdPose's evaluation applies to the box area in
# place of a segment area, roughly COCO's mean ratio (see the module docstring).
AREA_PER_BOX_AREA = 0.53
# Largest image (width x height) decoded by default: far above any pose dataset, far below the
# gigabytes a crafted header can ask the decoder for.
DEFAULT_MAX_PIXELS = 50_000_000

logger = logging.getLogger(__name__)


class CocoFormatError(ValueError):
    """An annotation file that does not follow the COCO keypoints format."""


class ImageFileError(OSError, ValueError):
    """An image file that cannot be used: not JPEG/PNG, truncated, too large, or the wrong size."""


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


# ---------------------------------------------------------------------------------- image files

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG markers that start a frame (SOF0-SOF15 minus DHT C4, JPG C8, DAC CC): they carry the size.
_JPEG_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers with no length field after them (TEM, RST0-RST7).
_JPEG_STANDALONE_MARKERS = frozenset([0x01, *range(0xD0, 0xD8)])


def _png_header(data: bytes) -> tuple[int, int, bool]:
    """(width, height, complete) of a PNG: size from IHDR; complete when the chunks reach IEND."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError("its PNG header (IHDR) is cut short or missing")
    width, height = struct.unpack(">II", data[16:24])
    pos = 8
    while pos + 8 <= len(data):  # walk the chunk lengths only; nothing is decompressed
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        pos += 12 + length  # length, type, data, CRC
        if kind == b"IEND":
            return width, height, pos <= len(data)
    return width, height, False


def _jpeg_header(data: bytes) -> tuple[int, int, bool]:
    """(width, height, complete) of a JPEG: size from the SOF segment; complete when an
    end-of-image marker (FFD9) follows it (an EXIF thumbnail's own FFD9 comes before the SOF)."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError(f"its JPEG header is corrupt (no segment marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE_MARKERS:
            pos += 2
            continue
        if marker == 0xDA:  # start of scan before any frame header
            break
        if marker in _JPEG_SOF_MARKERS and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return width, height, data.rfind(b"\xff\xd9") > pos
        pos += 2 + int.from_bytes(data[pos + 2 : pos + 4], "big")
    raise ValueError("its JPEG header has no frame (SOF) segment; the file is cut short or corrupt")


def image_header(data: bytes) -> tuple[str, int, int, bool]:
    """(format, width, height, complete) read from a JPEG or PNG file's bytes, without decoding.

    Raises ValueError (without the file name) for other formats and broken headers.
    """
    if data.startswith(_PNG_SIGNATURE):
        return ("PNG", *_png_header(data))
    if data.startswith(b"\xff\xd8\xff"):
        return ("JPEG", *_jpeg_header(data))
    raise ValueError(f"it is not a JPEG or PNG file (it starts with {data[:8]!r}); convert it to JPEG or PNG")


def _check_max_pixels(max_pixels: int) -> int:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, int) or max_pixels < 1:
        raise ValueError(
            f"max_pixels={max_pixels!r} must be a positive integer (default {DEFAULT_MAX_PIXELS})"
        )
    return max_pixels


def decode_image_file(
    path: str | os.PathLike,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    expected_size: tuple[int, int] | None = None,
    context: str = "",
) -> np.ndarray:
    """Read a JPEG or PNG file as uint8 RGB [H, W, 3], checking it before decoding.

    The size is read from the file header first, so an image above `max_pixels` (width x
    height) or not of `expected_size` (width, height; either orientation before decoding, as
    EXIF may rotate) is refused without being decoded. A file that ends before its
    end-of-image marker (JPEG FFD9, PNG IEND) is refused too: OpenCV would decode the part
    that is there and fill the rest with grey. Errors name the file, followed by `context`
    (e.g. " (image id 7 in ann.json)").
    """
    path = Path(path)
    _check_max_pixels(max_pixels)
    name = f"image file {path}{context}"
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"{name} {what}")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ImageFileError(f"{name} cannot be read ({e.strerror}); check its permissions") from e
    if not data:
        raise ImageFileError(f"{name} is empty (0 bytes)")
    try:
        kind, width, height, complete = image_header(data)
    except ValueError as e:
        raise ImageFileError(f"{name} cannot be used: {e}") from e
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ImageFileError(
            f"{name} is {width}x{height} pixels by its {kind} header, outside 1..max_pixels={max_pixels} "
            f"pixels; shrink the image, or raise max_pixels if it is genuine"
        )
    if expected_size is not None and (width, height) not in (expected_size, expected_size[::-1]):
        raise ImageFileError(
            f"{name} is {width}x{height} by its {kind} header but the annotation says "
            f"{expected_size[0]}x{expected_size[1]}; fix the annotation's width/height or the file"
        )
    if not complete:
        end = "FFD9 end-of-image marker" if kind == "JPEG" else "IEND chunk"
        raise ImageFileError(f"{name} is truncated: the {kind} data stops before its {end}; re-copy the file")
    bgr = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ImageFileError(f"{name} has a valid {kind} header but OpenCV could not decode its data")
    if expected_size is not None and bgr.shape[:2] != (expected_size[1], expected_size[0]):
        raise ImageFileError(
            f"{name} decodes to {bgr.shape[1]}x{bgr.shape[0]} (after its EXIF rotation) but the annotation "
            f"says {expected_size[0]}x{expected_size[1]}; fix the annotation's width/height or the file"
        )
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


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
