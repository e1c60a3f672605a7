"""A synthetic multi-person keypoint dataset, written in exactly the COCO keypoints format.

Each image holds 1 to 8 stick figures drawn from a small 2D kinematic model of the human body
(segment lengths from the person's height, joint angles in plausible ranges, facing the
camera or turned away) on a smooth, noisy background with a few muted distractor shapes. Every
drawn joint is a small disc ringed in dark grey whose colour depends on the keypoint type (no joint
colour is near either limb colour, or a disc vanishes into the limb it ends), limbs are thick lines
coloured by body side, so a small CNN can learn the task in minutes; rotations, scales, partial
occlusion and truncation keep it from being trivial.

The colours say which side a joint is on, and a mirrored image does not swap them: train on this
set with horizontal flips (and test with flip) and half the samples teach the opposite side for the
same colours. The demo turns both off (measured in its spec).

The body model places COCO-17's joints plus a head top and a neck (`BODY_POINTS`), so any keypoint
schema whose names are among those can be generated: COCO-17, CrowdPose-14 ("head" = the top of
the head, "neck" = just above the shoulders' midpoint), or a custom subset. Only the schema's
keypoints are drawn as coloured discs.

Annotation details, as in COCO:
  * v=2 visible and drawn; v=1 inside the image but hidden (by a later person or an occluder
    patch); v=0 outside the image, or the face of a person turned away (not drawn).
  * Some small people are annotated with zero keypoints (masked in training, ignored by COCOeval),
    some images hold a crowd region (iscrowd=1, uncompressed RLE).
  * bbox: the drawn silhouette clipped to the image. segmentation: polygons of that silhouette.
  * area: 0.53 x bbox area. OKS divides by area, and a stick figure's own pixel area is far
    smaller than a real person's, which would make OKS much stricter than on COCO. 0.53 is
    roughly COCO's mean ratio of person segment area to box area, so a synthetic person is
    scored like a real person of the same box.

`make_synthetic_dataset` writes DIR/annotations/person_keypoints_{train,val}.json and
DIR/{train,val}/*.jpg. The output is a pure function of the arguments (same seed -> byte-identical
JSON); each image draws from its own rng (seed, image index).

This module writes the dataset; `efficienthrnet.data.synthetic_scene` renders one image with its
annotations and `efficienthrnet.data.synthetic_figure` holds the body model (both re-exported here).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import cv2
import numpy as np

from efficienthrnet.data.synthetic_figure import (  # noqa: F401  (re-exported for existing callers)
    _COCO_KEYSET,
    _DRAW_SHIFT,
    _FACE,
    _LEFT_LIMBS,
    _LIMB_LEFT_COLOUR,
    _LIMB_RIGHT_COLOUR,
    _RIGHT_LIMBS,
    _SUB,
    BODY_POINTS,
    HEAD_TOP,
    L_ANK,
    L_EAR,
    L_ELB,
    L_EYE,
    L_HIP,
    L_KNE,
    L_SHO,
    L_WRI,
    NECK,
    NOSE,
    R_ANK,
    R_EAR,
    R_ELB,
    R_EYE,
    R_HIP,
    R_KNE,
    R_SHO,
    R_WRI,
    _draw_figure,
    _Figure,
    _fx,
    _hue_stride,
    _joint_colours,
    _Keyset,
    _keyset,
    _rot,
    _sample_figure,
    _silhouette,
)
from efficienthrnet.data.synthetic_scene import (  # noqa: F401
    _MAX_PEOPLE,
    _MIN_HEIGHT,
    AREA_PER_BOX_AREA,
    _background,
    _box_of,
    _overlaps,
    _people_count_weights,
    _person_annotation,
    _place,
    _polygons,
    _uncompressed_rle,
    _visible_keypoints,
    render_synthetic_image,
)
from efficienthrnet.files import building_dir, check_output_dir
from efficienthrnet.keypoints import COCO17, KeypointSchema, get_schema

_JPEG_QUALITY = 95


def _categories(schema: KeypointSchema) -> list[dict]:
    return [{
        "supercategory": "person",
        "id": 1,
        "name": "person",
        "keypoints": list(schema.keypoints),
        "skeleton": [[a + 1, b + 1] for a, b in schema.skeleton],  # COCO's skeleton is 1-based
    }]


def make_synthetic_dataset(
    out_dir: str | os.PathLike,
    num_images: int,
    image_size: int = 128,
    seed: int = 0,
    val_fraction: float = 0.2,
    schema: KeypointSchema | str = COCO17,
    max_people: int = _MAX_PEOPLE,
    min_height: float = _MIN_HEIGHT,
) -> dict[str, dict]:
    """Write a synthetic COCO-format keypoint dataset with splits "train" and "val".

    Args:
      out_dir: root folder; gets annotations/person_keypoints_{train,val}.json and {train,val}/*.jpg.
      num_images: total images over both splits (>= 2 when val_fraction > 0).
      image_size: side of the square images in pixels (>= 64).
      seed: everything is a pure function of the seed (byte-identical JSON for the same seed).
      val_fraction: share of images in "val" (at least one image when > 0).
      schema: a keypoint schema (or its registered name) whose keypoints the body model can
        place (see `BODY_POINTS`): COCO-17, CrowdPose-14, or a custom one of those names.
      max_people: at most this many people with keypoints per image (1..8; fewer people make an
        easier task for short CPU runs).
      min_height: shortest person with keypoints, as a fraction of image_size (0.1..0.85; the
        tallest is 0.9, less when many people share the image). Taller people are easier: their
        joints lie farther apart in pixels and COCO's OKS tolerance grows with the person.

    Returns {"train": {...}, "val": {...}} with each split's annotation file, image folder,
    and image / person / annotation counts.
    """
    schema = get_schema(schema)
    _keyset(schema)  # refuses a schema the body model cannot place, before anything is written
    if image_size < 64:
        raise ValueError(f"image_size {image_size} is too small; use at least 64 pixels")
    if not (isinstance(max_people, int) and 1 <= max_people <= _MAX_PEOPLE):
        raise ValueError(f"max_people {max_people!r} must be an integer in [1, {_MAX_PEOPLE}]")
    if not (isinstance(min_height, (int, float)) and 0.1 <= min_height <= 0.85):
        raise ValueError(f"min_height {min_height!r} must be a fraction of the image size in [0.1, 0.85]")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction {val_fraction} must lie in [0, 1)")
    num_val = int(round(num_images * val_fraction))
    if val_fraction > 0:
        num_val = max(1, num_val)
    num_train = num_images - num_val
    if num_train < 1:
        raise ValueError(f"num_images {num_images} leaves no training image with val_fraction {val_fraction}")
    _check_integers(num_images=num_images, seed=seed, image_size=image_size)

    # Every argument is checked above; the dataset is built in a hidden folder beside the target
    # and renamed into place, so a failure or an interruption leaves the target as it was.
    final_dir = _check_dataset_target(Path(out_dir))
    with building_dir(final_dir) as build:
        summary = _write_dataset(build, num_train, num_val, image_size, seed, schema, max_people, min_height)
    return _relocated(summary, build, final_dir)


_DATASET_ENTRIES = {"annotations", "train", "val"}


def _check_integers(**values) -> None:
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} {value!r} must be a non-negative integer")


def _check_dataset_target(out_dir: Path) -> Path:
    """The target may be absent, an empty folder or an earlier synthetic dataset (replaced whole);
    a folder holding anything else is refused, so that no unrelated file is ever deleted."""
    check_output_dir(out_dir, "synthetic dataset folder")
    if out_dir.is_dir():
        others = sorted(p.name for p in out_dir.iterdir() if p.name not in _DATASET_ENTRIES)
        if others:
            raise FileExistsError(
                f"synthetic dataset folder {out_dir} already holds other files ({', '.join(others[:3])}"
                f"{', ...' if len(others) > 3 else ''}); choose a new or empty folder"
            )
    return out_dir


def _relocated(summary: dict[str, dict], build: Path, final_dir: Path) -> dict[str, dict]:
    """The summary's paths, moved from the build folder to the final one."""
    def move(value):
        return str(final_dir / Path(value).relative_to(build)) if isinstance(value, str) else value

    return {split: {k: move(v) for k, v in info.items()} for split, info in summary.items()}


def _write_dataset(out_dir: Path, num_train: int, num_val: int, image_size: int, seed: int,
                   schema: KeypointSchema, max_people: int, min_height: float) -> dict[str, dict]:
    """Render and write both splits into ``out_dir``; returns the summary of make_synthetic_dataset."""
    (out_dir / "annotations").mkdir(parents=True, exist_ok=True)
    summary = {}
    ann_id = 1
    for split, first, count in (("train", 0, num_train), ("val", num_train, num_val)):
        (out_dir / split).mkdir(exist_ok=True)
        images, annotations = [], []
        for index in range(first, first + count):
            image_id = index + 1
            rng = np.random.default_rng([seed, index])
            image, anns = render_synthetic_image(rng, image_size, max_people, min_height, schema)
            file_name = f"{image_id:012d}.jpg"
            ok = cv2.imwrite(str(out_dir / split / file_name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR),
                             [cv2.IMWRITE_JPEG_QUALITY, _JPEG_QUALITY])
            if not ok:
                raise OSError(f"could not write {out_dir / split / file_name}")
            images.append({"id": image_id, "file_name": file_name, "height": image_size, "width": image_size})
            for ann in anns:
                annotations.append({"id": ann_id, "image_id": image_id, **ann})
                ann_id += 1
        data = {
            "info": {"description": "efficienthrnet synthetic keypoints", "seed": seed, "image_size": image_size},
            "licenses": [],
            "images": images,
            "annotations": annotations,
            "categories": _categories(schema),
        }
        ann_file = out_dir / "annotations" / f"person_keypoints_{split}.json"
        ann_file.write_text(json.dumps(data, separators=(",", ":")))
        summary[split] = {
            "annotation_file": str(ann_file),
            "image_dir": str(out_dir / split),
            "images": len(images),
            "annotations": len(annotations),
            "people_with_keypoints": sum(1 for a in annotations if a["num_keypoints"] > 0),
        }
    return summary
