"""Predictions -> COCO results JSON -> pycocotools COCOeval (keypoints) -> a dict of AP/AR figures.

As in the reference evaluation: every decoded person is written (no rescoring, no OKS-NMS),
keypoint triplets carry the joint score as their third value, the person score is the mean
joint score, and COCOeval runs with its default keypoint settings (maxDets 20) and the
schema's OKS sigmas. Unlike the reference, the image id comes from the annotation file, not
from the image file name.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from efficienthrnet.keypoints import (
    COCO17,
    KeypointSchema,
    available_schemas,
    get_schema,
    schema_for_keypoints,
)

# The order of COCOeval.stats for iouType "keypoints".
METRIC_NAMES = ("AP", "AP50", "AP75", "APM", "APL", "AR", "AR50", "AR75", "ARM", "ARL")
PERSON_CATEGORY_ID = 1


def coco_results(
    image_id: int, people: np.ndarray, scores: np.ndarray, score_as_visibility: bool = True
) -> list[dict[str, Any]]:
    """COCO keypoint result entries for one image.

    Args:
      image_id: the image's id in the annotation file.
      people: [P, J, 3] (x, y, joint score) in original image pixels (pixel i spans [i, i+1)).
      scores: [P] person scores.
      score_as_visibility: write the joint score as each triplet's third value (the
        reference); otherwise write 1.
    """
    people = np.asarray(people, dtype=np.float64)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if people.ndim != 3 or people.shape[2] < 3:
        raise ValueError(f"people must be [P, J, 3] (x, y, score); got shape {people.shape}")
    if scores.shape[0] != people.shape[0]:
        raise ValueError(f"{scores.shape[0]} person scores for {people.shape[0]} people")
    triplets = people[:, :, :3].copy()
    if not score_as_visibility:
        triplets[:, :, 2] = 1.0
    return [
        {
            "image_id": int(image_id),
            "category_id": PERSON_CATEGORY_ID,
            "keypoints": [float(v) for v in triplets[p].reshape(-1)],
            "score": float(scores[p]),
        }
        for p in range(people.shape[0])
    ]


def _as_coco(gt: str | os.PathLike | COCO, schema: KeypointSchema = COCO17) -> COCO:
    """The ground truth as a COCO object whose annotations all carry the bbox and area COCOeval reads.

    A missing area is filled in from the bbox, as the reader does (see
    `efficienthrnet.data.coco.fill_missing_areas`: 0.53 x box width x height, CrowdPose's convention).
    """
    from efficienthrnet.data.coco import fill_missing_areas, load_coco_annotations

    if isinstance(gt, COCO):
        source = "the ground truth"
        fill_missing_areas(list(gt.anns.values()))  # the same dicts as gt.dataset's: filled in place
    else:
        source = str(gt)
        gt = load_coco_annotations(gt, schema)
    for ann in gt.anns.values():
        if "bbox" not in ann:
            raise ValueError(
                f"{source}: annotation id {ann.get('id')} (image id {ann.get('image_id')}) has no 'bbox'; "
                f"COCOeval needs a box for every ground-truth person (its area is derived from it when absent)"
            )
    return gt


def ground_truth_schema(gt: str | os.PathLike | COCO) -> KeypointSchema:
    """The registered schema named by the ground truth's person category (its `keypoints` list).

    COCO-17 when the file names no keypoints; an error when it names a list no schema has.
    """
    if isinstance(gt, COCO):
        categories = list(gt.cats.values())
    else:
        with open(gt) as f:
            categories = json.load(f).get("categories") or []
    named = [c["keypoints"] for c in categories if isinstance(c, dict) and c.get("keypoints")]
    if not named:
        return COCO17
    schema = schema_for_keypoints(named[0])
    if schema is None:
        where = "the ground truth" if isinstance(gt, COCO) else str(gt)
        raise ValueError(
            f"{where} names keypoints {named[0]} that no registered schema has ({', '.join(available_schemas())}); "
            f"register one with efficienthrnet.keypoints.register_schema or pass schema="
        )
    return schema


def score_coco(
    gt: str | os.PathLike | COCO,
    results: Sequence[dict[str, Any]],
    sigmas: Sequence[float] | np.ndarray | None = None,
    image_ids: Sequence[int] | None = None,
    schema: KeypointSchema | str | None = None,
) -> dict[str, float]:
    """Run COCOeval('keypoints') and return {AP, AP50, AP75, APM, APL, AR, AR50, AR75, ARM, ARL}.

    Args:
      gt: the ground-truth annotation JSON path or a pycocotools COCO object. Annotations without
        'area' get 0.53 x bbox width x height (CrowdPose's convention; see `_as_coco`).
      results: COCO keypoint result entries (see `coco_results`).
      sigmas: per-keypoint OKS sigmas (default: the schema's).
      image_ids: evaluate only these images (default: every image of the ground truth).
      schema: the keypoint schema (default: the one the ground truth's category names).

    An empty result list scores 0 everywhere (pycocotools cannot load one).
    """
    if schema is not None:
        schema = get_schema(schema)
    elif sigmas is None or not isinstance(gt, COCO):  # needed to read the file or for its sigmas
        schema = ground_truth_schema(gt)
    coco_gt = _as_coco(gt, schema or COCO17)
    sigmas = schema.sigmas_array if sigmas is None else sigmas
    if len(results) == 0:
        return {name: 0.0 for name in METRIC_NAMES}
    known = set(coco_gt.getImgIds())
    unknown = sorted({int(r["image_id"]) for r in results} - known)
    if unknown:
        raise ValueError(f"results name image ids {unknown[:5]} that the ground truth does not have")
    quiet = io.StringIO()
    with contextlib.redirect_stdout(quiet):
        coco_dt = coco_gt.loadRes(list(results))
        evaluator = COCOeval(coco_gt, coco_dt, "keypoints")
        if sigmas is not None:
            sigmas = np.asarray(sigmas, dtype=np.float64)
            num_kpts = len(results[0]["keypoints"]) // 3
            if sigmas.shape != (num_kpts,):
                raise ValueError(f"{sigmas.size} OKS sigmas for {num_kpts} keypoints per result")
            evaluator.params.kpt_oks_sigmas = sigmas
        if image_ids is not None:
            evaluator.params.imgIds = sorted(int(i) for i in image_ids)
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    # COCOeval reports -1 where a figure is undefined (no ground truth in an area range).
    return {name: float(max(v, 0.0)) for name, v in zip(METRIC_NAMES, evaluator.stats)}


def evaluate_dataset(
    predictor,
    dataset,
    split: str = "val",
    limit: int | None = None,
    out_json: str | os.PathLike | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Predict every image of a COCO-format split, write the results JSON, return the metrics.

    Args:
      predictor: a callable image (uint8 RGB HWC) -> object with `keypoints` [P, J, 3] in image
        pixels and `scores` [P] (e.g. `efficienthrnet.predict.Predictor`).
      dataset: a spec ("coco:DIR", "synthetic:DIR") or an opened
        `efficienthrnet.data.coco.CocoKeypoints`.
      split: "train" or "val" (used with a spec).
      limit: evaluate only the first `limit` images (sorted by id).
      out_json: where to write the COCO results list (skipped when None).
      progress: show a progress bar.

    Returns the metrics of `score_coco` plus num_images, num_people and seconds_per_image.
    """
    from efficienthrnet.data.coco import CocoKeypoints

    if isinstance(dataset, (str, os.PathLike)):
        dataset = CocoKeypoints.from_spec(str(dataset), split, schema=getattr(predictor, "schema", "coco17"))
    image_ids = list(dataset.image_ids)
    if limit is not None:
        if limit < 1:
            raise ValueError(f"limit={limit} must be >= 1 (or None for every image)")
        image_ids = image_ids[:limit]
    results: list[dict[str, Any]] = []
    iterator = image_ids
    if progress:
        from tqdm import tqdm

        iterator = tqdm(image_ids, desc="evaluate", unit="img")
    start = time.perf_counter()
    for image_id in iterator:
        found = predictor(dataset.load_image(image_id))
        results.extend(coco_results(image_id, found.keypoints, found.scores))
    seconds = time.perf_counter() - start
    if out_json is not None:
        Path(out_json).parent.mkdir(parents=True, exist_ok=True)
        with open(out_json, "w") as f:
            json.dump(results, f)
    schema = getattr(dataset, "schema", None)
    metrics: dict[str, Any] = score_coco(
        dataset.coco, results, sigmas=None if schema is None else schema.sigmas_array, image_ids=image_ids,
        schema=schema,
    )
    metrics.update(
        num_images=len(image_ids),
        num_people=len(results),
        seconds_per_image=seconds / max(len(image_ids), 1),
    )
    return metrics
