"""One synthetic image and its COCO annotations: background, people placed with little overlap,
occluders, and each person's box, polygons and visible keypoints (`render_synthetic_image`)."""

from __future__ import annotations

import cv2
import numpy as np

from efficienthrnet.data.synthetic_figure import (
    _DRAW_SHIFT,
    _SUB,
    _draw_figure,
    _Figure,
    _fx,
    _Keyset,
    _keyset,
    _sample_figure,
    _silhouette,
)
from efficienthrnet.keypoints import COCO17, KeypointSchema, get_schema

AREA_PER_BOX_AREA = 0.53
_MAX_PEOPLE = 8
_MIN_HEIGHT = 0.35  # shortest person with keypoints, as a fraction of the image side


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Smooth colour noise, pixel noise and a few low-saturation distractor shapes (float RGB)."""
    cells = int(rng.integers(3, 9))
    low = rng.uniform(30, 220, (cells, cells, 3))
    grey = low.mean(-1, keepdims=True)
    low = (grey + 0.35 * (low - grey)).astype(np.float32)  # muted, so joint colours stand out
    img = cv2.resize(low, (size, size), interpolation=cv2.INTER_CUBIC)
    img += rng.normal(0, 8, img.shape).astype(np.float32)
    for _ in range(int(rng.integers(2, 8))):
        grey = rng.uniform(20, 235)
        colour = tuple(float(c) for c in grey + rng.uniform(-25, 25, 3))
        a, b = rng.uniform(0, size, 2), rng.uniform(0, size, 2)
        kind = rng.integers(3)
        if kind == 0:
            cv2.line(img, _fx(a), _fx(b), colour, int(rng.integers(1, max(2, size // 40))), cv2.LINE_AA, _DRAW_SHIFT)
        elif kind == 1:
            cv2.rectangle(img, _fx(a), _fx(a + (b - a) * 0.3), colour, -1, cv2.LINE_AA, _DRAW_SHIFT)
        else:
            cv2.circle(img, _fx(a), int(rng.uniform(0.03, 0.12) * size * _SUB), colour, -1, cv2.LINE_AA, _DRAW_SHIFT)
    return np.clip(img, 0, 255).astype(np.uint8)


def _overlaps(box, boxes, limit: float) -> bool:
    """True when box covers more than `limit` of itself or of any placed box."""
    x0, y0, x1, y1 = box
    area = max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)
    for a0, b0, a1, b1 in boxes:
        inter = max(0.0, min(x1, a1) - max(x0, a0)) * max(0.0, min(y1, b1) - max(y0, b0))
        if inter > limit * min(area, max(a1 - a0, 1e-6) * max(b1 - b0, 1e-6)):
            return True
    return False


def _place(rng, size, height, boxes, limit, tries=40):
    """Sample a figure that overlaps placed boxes little; None when no spot is found."""
    for _ in range(tries):
        # Pelvis range lets some people reach over the border (truncation).
        # Mostly inside; the ranges let about one person in ten reach over the border (truncation).
        pelvis = np.array([rng.uniform(0.08 * size, 0.92 * size), rng.uniform(0.3 * height, size - 0.2 * height)])
        fig = _sample_figure(rng, height, pelvis)
        box = fig.bbox()
        on_image = (min(box[2], size) - max(box[0], 0)) * (min(box[3], size) - max(box[1], 0))
        if on_image < 0.6 * (box[2] - box[0]) * (box[3] - box[1]):
            continue
        if not _overlaps(box, boxes, limit):
            boxes.append(box)
            return fig
    return None


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    return [[round(float(v), 2) for v in c.reshape(-1)] for c in contours if len(c) >= 3]


def _uncompressed_rle(mask: np.ndarray) -> dict:
    """COCO's uncompressed RLE (column-major run lengths, starting with a run of zeros)."""
    flat = mask.astype(np.uint8).reshape(-1, order="F")
    change = np.flatnonzero(np.diff(flat)) + 1
    bounds = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(bounds).tolist()
    if flat[0] == 1:
        counts = [0] + counts
    return {"counts": [int(c) for c in counts], "size": [int(mask.shape[0]), int(mask.shape[1])]}


def _box_of(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
    return [float(x0), float(y0), float(x1 - x0), float(y1 - y0)]


def _person_annotation(mask: np.ndarray, keypoints: np.ndarray | None, num_keypoints: int) -> dict:
    bbox = _box_of(mask)
    kps = np.zeros((num_keypoints, 3)) if keypoints is None else keypoints
    flat = []
    for x, y, v in kps:
        flat += [round(float(x), 2), round(float(y), 2), int(v)] if v > 0 else [0, 0, 0]
    return {
        "segmentation": _polygons(mask),
        "num_keypoints": int((kps[:, 2] > 0).sum()),
        "area": round(AREA_PER_BOX_AREA * bbox[2] * bbox[3], 2),
        "iscrowd": 0,
        "keypoints": flat,
        "bbox": bbox,
        "category_id": 1,
    }


def render_synthetic_image(
    rng: np.random.Generator,
    size: int,
    max_people: int = _MAX_PEOPLE,
    min_height: float = _MIN_HEIGHT,
    schema: KeypointSchema | str = COCO17,
) -> tuple[np.ndarray, list[dict]]:
    """One synthetic image (uint8 RGB) and its annotations (without ids), 1..max_people people
    with keypoints of `schema`, each at least ``min_height * size`` pixels tall."""
    schema = get_schema(schema)
    keyset = _keyset(schema)
    num_kpts = schema.num_keypoints
    img = _background(rng, size)
    boxes: list = []
    num_people = int(rng.choice(np.arange(1, max_people + 1), p=_people_count_weights(max_people)))
    h_max = size * min(0.9, 1.6 / np.sqrt(num_people))
    people = []
    for _ in range(num_people):
        height = rng.uniform(min_height * size, max(h_max, (min_height + 0.01) * size))
        fig = _place(rng, size, height, boxes, limit=0.15)
        if fig is not None:
            people.append(fig)
    annotations = []
    label = np.zeros((size, size), dtype=np.uint8)  # who is on top, to find hidden joints

    # Background people without keypoints, and now and then a crowd region.
    if rng.random() < 0.25:
        for _ in range(int(rng.integers(1, 3))):
            fig = _place(rng, size, rng.uniform(0.12, 0.2) * size, boxes, limit=0.05)
            if fig is not None:
                _draw_figure(img, fig, keyset=keyset)
                sil = _silhouette(fig, size)
                if sil.any():
                    annotations.append(_person_annotation(sil, None, num_kpts))
    if rng.random() < 0.15:
        w, h = rng.uniform(0.2, 0.35, 2) * size
        for _ in range(20):
            x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
            region_box = (x0, y0, x0 + w, y0 + h)
            if not _overlaps(region_box, boxes, 0.05):
                break
        else:
            region_box = None
        if region_box is not None:
            boxes.append(region_box)
            region = np.zeros((size, size), dtype=bool)
            for _ in range(int(rng.integers(4, 9))):
                small = rng.uniform(0.5, 0.8) * h
                pelvis = np.array([rng.uniform(x0 + 0.15 * small, x0 + w - 0.15 * small), y0 + 0.5 * small + rng.uniform(0, h - small)])
                fig = _sample_figure(rng, small, pelvis)
                _draw_figure(img, fig, keyset=keyset)
                region |= _silhouette(fig, size)
            cv2.rectangle(region.view(np.uint8), (int(x0), int(y0)), (int(x0 + w), int(y0 + h)), 1, -1)
            region = region.astype(bool)
            annotations.append({
                "segmentation": _uncompressed_rle(region),
                "num_keypoints": 0,
                "area": float(region.sum()),
                "iscrowd": 1,
                "keypoints": [0] * (3 * num_kpts),
                "bbox": _box_of(region),
                "category_id": 1,
            })

    silhouettes = []
    for k, fig in enumerate(people):
        _draw_figure(img, fig, keyset=keyset)
        _draw_figure(label, fig, colour_of=lambda role, idx, k=k: k + 1, line=cv2.LINE_8)
        silhouettes.append(_silhouette(fig, size))
    # Occluder patches over a few joints: those joints become v=1 (labelled, not visible).
    if people and rng.random() < 0.3:
        for _ in range(int(rng.integers(1, 3))):
            fig = people[int(rng.integers(len(people)))]
            centre = fig.joints[int(rng.integers(17))] + rng.normal(0, 0.03 * fig.height, 2)
            half = rng.uniform(0.05, 0.09) * fig.height
            grey = rng.uniform(40, 210)
            colour = tuple(float(c) for c in grey + rng.uniform(-20, 20, 3))
            p0, p1 = _fx(centre - half), _fx(centre + half)
            cv2.rectangle(img, p0, p1, colour, -1, cv2.LINE_8, _DRAW_SHIFT)
            cv2.rectangle(label, p0, p1, 255, -1, cv2.LINE_8, _DRAW_SHIFT)

    for k, fig in enumerate(people):
        sil = silhouettes[k]
        if not sil.any():
            continue
        annotations.append(_person_annotation(sil, _visible_keypoints(fig, keyset, label, k + 1), num_kpts))

    return img, annotations


def _visible_keypoints(fig: _Figure, keyset: _Keyset, label: np.ndarray, who: int) -> np.ndarray:
    """[J, 3] keypoints of the keyset: v=2 on top in the label image, 1 hidden, 0 off the image
    or not drawn (the face of a person turned away)."""
    size = label.shape[0]
    xy = fig.points()[list(keyset.points)]
    drawn = fig.points_drawn()[list(keyset.points)]
    inside = (xy >= 0).all(1) & (xy < size - 0.5).all(1) & drawn
    cells = np.clip(np.round(xy).astype(int), 0, size - 1)
    on_top = label[cells[:, 1], cells[:, 0]] == who
    return np.concatenate([xy, np.where(inside, np.where(on_top, 2, 1), 0)[:, None]], axis=1)


def _people_count_weights(max_people: int) -> np.ndarray:
    w = 1.0 / np.arange(1, max_people + 1) ** 0.7  # fewer people more often
    return w / w.sum()
