"""A synthetic multi-person keypoint dataset, written in exactly the COCO keypoints format.

Each image holds 1 to 8 stick figures drawn from a small 2D kinematic model of the human body
(segment lengths from the person's height, joint angles in plausible ranges, facing the
camera or turned away) on a smooth, noisy background with a few muted distractor shapes. Every
drawn joint is a small disc whose colour depends on the keypoint type (left and right joints have
clearly different hues), limbs are thick lines coloured by body side, so a small CNN can learn the
task in minutes; rotations, scales, partial occlusion and truncation keep it from being trivial.

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
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from efficienthrnet.files import building_dir, check_output_dir
from efficienthrnet.keypoints import COCO17, KeypointSchema, get_schema

AREA_PER_BOX_AREA = 0.53
_MAX_PEOPLE = 8
_MIN_HEIGHT = 0.35  # shortest person with keypoints, as a fraction of the image side
_JPEG_QUALITY = 95
# COCO-17 indices used by the body model.
(NOSE, L_EYE, R_EYE, L_EAR, R_EAR, L_SHO, R_SHO, L_ELB, R_ELB, L_WRI, R_WRI,
 L_HIP, R_HIP, L_KNE, R_KNE, L_ANK, R_ANK) = range(17)  # fmt: skip
HEAD_TOP, NECK = 17, 18  # points the body model adds to COCO's joints
BODY_POINTS = COCO17.keypoints + ("head", "neck")
_FACE = (NOSE, L_EYE, R_EYE, L_EAR, R_EAR, HEAD_TOP)
_LEFT_LIMBS = ((L_SHO, L_ELB), (L_ELB, L_WRI), (L_HIP, L_KNE), (L_KNE, L_ANK))
_RIGHT_LIMBS = ((R_SHO, R_ELB), (R_ELB, R_WRI), (R_HIP, R_KNE), (R_KNE, R_ANK))
_LIMB_LEFT_COLOUR = np.array([40.0, 110.0, 255.0])  # RGB, blue side
_LIMB_RIGHT_COLOUR = np.array([255.0, 140.0, 20.0])  # RGB, orange side
_DRAW_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate discs
_SUB = 1 << _DRAW_SHIFT


def _hue_stride(num: int) -> int:
    """A stride coprime to num (7 for COCO-17), so that stepping through the hues visits them all."""
    return next((s for s in (7, 5, 3, 11, 13) if np.gcd(s, num) == 1), 1)


def _joint_colours(num: int) -> np.ndarray:
    """Distinct saturated RGB colours per keypoint type; neighbours in index order get far-apart hues."""
    hues = (np.arange(num) * _hue_stride(num) % num) / num * 180.0  # OpenCV hue range is 0..180
    hsv = np.stack([hues, np.full(num, 255.0), np.full(num, 255.0)], -1).astype(np.uint8)[None]
    rgb = cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)[0].astype(np.float64)
    rgb[0] = (255.0, 255.0, 255.0)  # the first keypoint (COCO's nose) is white
    return rgb


@dataclass(frozen=True)
class _Keyset:
    """Which body points a schema annotates (in the schema's order) and their disc colours."""

    points: tuple[int, ...]
    colours: np.ndarray


def _keyset(schema: KeypointSchema) -> _Keyset:
    """Map a schema's keypoint names onto the body model's points; refuse names it cannot place."""
    missing = [k for k in schema.keypoints if k not in BODY_POINTS]
    if missing:
        raise ValueError(
            f"keypoint schema {schema.name!r}: the synthetic body model cannot place {missing}; "
            f"it places {list(BODY_POINTS)}"
        )
    points = tuple(BODY_POINTS.index(k) for k in schema.keypoints)
    return _Keyset(points, _joint_colours(len(points)))


_COCO_KEYSET = _keyset(COCO17)


@dataclass
class _Figure:
    """One stick figure: joint positions and drawing sizes (image pixels)."""

    joints: np.ndarray  # float64 [17, 2]
    drawn: np.ndarray  # bool [17]: False for the face of a person turned away
    height: float
    head_centre: np.ndarray
    head_radius: float
    head_top: np.ndarray
    neck: np.ndarray
    limb_thickness: int
    joint_radius: float
    brightness: float
    torso_colour: tuple[float, float, float]
    skin_colour: tuple[float, float, float]

    def bbox(self) -> tuple[float, float, float, float]:
        pts = np.concatenate([self.joints, self.head_centre[None] + [[-self.head_radius, -self.head_radius],
                                                                      [self.head_radius, self.head_radius]]])
        lo, hi = pts.min(0), pts.max(0)
        return lo[0], lo[1], hi[0], hi[1]

    def points(self) -> np.ndarray:
        """float64 [len(BODY_POINTS), 2]: the joints, head top and neck."""
        return np.concatenate([self.joints, self.head_top[None], self.neck[None]])

    def points_drawn(self) -> np.ndarray:
        """bool [len(BODY_POINTS)]: head top and neck are seen from behind too."""
        return np.concatenate([self.drawn, [True, True]])


def _rot(v: np.ndarray, deg: float) -> np.ndarray:
    r = np.deg2rad(deg)
    c, s = np.cos(r), np.sin(r)
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _sample_figure(rng: np.random.Generator, height: float, pelvis: np.ndarray) -> _Figure:
    """Draw one pose from the kinematic model, pelvis at `pelvis`, standing height `height`."""
    j = lambda: rng.uniform(0.9, 1.1)  # noqa: E731  per-segment length jitter
    lean = float(np.clip(rng.normal(0.0, 12.0), -35, 35)) if rng.random() > 0.1 else rng.uniform(-90, 90)
    up = _rot(np.array([0.0, -1.0]), lean)  # image y grows downwards
    side = _rot(np.array([1.0, 0.0]), lean)
    facing = 1.0 if rng.random() < 0.8 else -1.0  # -1: turned away, left side on the image left
    width = np.cos(np.deg2rad(rng.uniform(0, 55)))  # body yaw foreshortens the shoulder/hip widths
    left = side * facing * width  # direction of the person's left side in the image

    joints = np.zeros((17, 2))
    neck = pelvis + up * 0.30 * height * j()
    joints[L_SHO], joints[R_SHO] = neck + left * 0.11 * height * j(), neck - left * 0.11 * height * j()
    joints[L_HIP], joints[R_HIP] = pelvis + left * 0.08 * height * j(), pelvis - left * 0.08 * height * j()

    head_up = _rot(up, rng.normal(0, 12))
    head_radius = 0.07 * height * j()
    head_centre = neck + head_up * (0.05 * height + head_radius)
    head_side = _rot(head_up, 90.0) * facing * width
    turn = rng.uniform(-0.4, 0.4)  # the nose slides sideways as the head turns
    joints[NOSE] = head_centre - head_up * 0.15 * head_radius + head_side * turn * head_radius
    for eye, sign in ((L_EYE, 1.0), (R_EYE, -1.0)):
        joints[eye] = joints[NOSE] + head_up * 0.4 * head_radius + head_side * (sign * 0.45 + turn * 0.2) * head_radius
    for ear, sign in ((L_EAR, 1.0), (R_EAR, -1.0)):
        joints[ear] = head_centre + head_side * sign * 0.95 * head_radius

    for sho, elb, wri, sign in ((L_SHO, L_ELB, L_WRI, 1.0), (R_SHO, R_ELB, R_WRI, -1.0)):
        outward = left * sign / max(width, 1e-6)
        down = -up
        raise_deg = rng.uniform(-20, 160)
        upper = down * np.cos(np.deg2rad(raise_deg)) + outward * np.sin(np.deg2rad(raise_deg))
        fore = _rot(upper, rng.choice([-1.0, 1.0]) * rng.uniform(0, 130))
        joints[elb] = joints[sho] + upper * 0.16 * height * j()
        joints[wri] = joints[elb] + fore * 0.15 * height * j()
    for hip, kne, ank, sign in ((L_HIP, L_KNE, L_ANK, 1.0), (R_HIP, R_KNE, R_ANK, -1.0)):
        outward = left * sign / max(width, 1e-6)
        spread = rng.uniform(-15, 40)
        thigh = -up * np.cos(np.deg2rad(spread)) + outward * np.sin(np.deg2rad(spread))
        shin = _rot(thigh, rng.choice([-1.0, 1.0]) * rng.uniform(0, 100))
        joints[kne] = joints[hip] + thigh * 0.23 * height * j()
        joints[ank] = joints[kne] + shin * 0.23 * height * j()

    drawn = np.ones(17, dtype=bool)
    if facing < 0:
        drawn[[NOSE, L_EYE, R_EYE]] = False
    muted = rng.uniform(60, 170, 3)
    muted = muted.mean() + 0.3 * (muted - muted.mean())  # low saturation: no confusion with joints
    # Derived points draw no random numbers, so adding them left COCO-17 datasets byte-identical.
    # The head top sits just inside the head disc (on its rim it could round onto the background
    # and be marked hidden); the neck sits on the drawn neck line, a little above the shoulders.
    shoulders = (joints[L_SHO] + joints[R_SHO]) / 2
    return _Figure(
        joints=joints,
        drawn=drawn,
        height=height,
        head_centre=head_centre,
        head_radius=head_radius,
        head_top=head_centre + head_up * 0.85 * head_radius,
        neck=shoulders + (head_centre - shoulders) * 0.25,
        limb_thickness=max(2, int(round(0.045 * height))),
        joint_radius=max(2.0, 0.03 * height),
        brightness=rng.uniform(0.75, 1.1),
        torso_colour=tuple(muted),
        skin_colour=tuple(np.array([224.0, 172.0, 140.0]) * rng.uniform(0.55, 1.0)),
    )


def _fx(p) -> tuple[int, int]:
    return int(round(p[0] * _SUB)), int(round(p[1] * _SUB))


def _draw_figure(
    canvas: np.ndarray, fig: _Figure, colour_of=None, line=cv2.LINE_AA, keyset: _Keyset = _COCO_KEYSET
) -> None:
    """Draw a figure with discs on the keyset's points; colour_of(role, index) -> colour, default
    the RGB palette (index: the keypoint's position in the schema).

    Label and mask canvases pass a constant colour and line=cv2.LINE_8 (no blended edge values).
    """
    if colour_of is None:
        def colour_of(role, k):
            if role == "torso":
                return fig.torso_colour
            if role == "skin":
                return fig.skin_colour
            if role == "left":
                return tuple(np.clip(_LIMB_LEFT_COLOUR * fig.brightness, 0, 255))
            if role == "right":
                return tuple(np.clip(_LIMB_RIGHT_COLOUR * fig.brightness, 0, 255))
            return tuple(np.clip(keyset.colours[k] * fig.brightness, 0, 255))
    j = fig.joints
    torso = np.array([_fx(j[L_SHO]), _fx(j[R_SHO]), _fx(j[R_HIP]), _fx(j[L_HIP])], dtype=np.int32)
    cv2.fillConvexPoly(canvas, torso, colour_of("torso", -1), line, _DRAW_SHIFT)
    neck = (j[L_SHO] + j[R_SHO]) / 2
    cv2.line(canvas, _fx(neck), _fx(fig.head_centre), colour_of("skin", -1), fig.limb_thickness, line, _DRAW_SHIFT)
    cv2.circle(canvas, _fx(fig.head_centre), int(fig.head_radius * _SUB), colour_of("skin", -1), -1, line, _DRAW_SHIFT)
    for limbs, role in ((_LEFT_LIMBS, "left"), (_RIGHT_LIMBS, "right")):
        for a, b in limbs:
            cv2.line(canvas, _fx(j[a]), _fx(j[b]), colour_of(role, -1), fig.limb_thickness, line, _DRAW_SHIFT)
    points, drawn = fig.points(), fig.points_drawn()
    for k, point in enumerate(keyset.points):
        if drawn[point]:
            radius = fig.joint_radius * (0.7 if point in _FACE else 1.0)
            cv2.circle(canvas, _fx(points[point]), int(radius * _SUB), colour_of("joint", k), -1, line, _DRAW_SHIFT)


def _silhouette(fig: _Figure, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), dtype=np.uint8)
    _draw_figure(canvas, fig, colour_of=lambda role, k: 255, line=cv2.LINE_8)
    return canvas > 0


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
