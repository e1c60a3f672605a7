"""The synthetic body model: a stick figure sampled from a small 2D kinematic model, and its drawing.

`_sample_figure` places COCO-17's joints plus a head top and a neck (`BODY_POINTS`) from the
person's height and plausible joint angles; `_draw_figure` draws it with cv2 (limbs coloured by
body side, joints as discs coloured by keypoint type); `_keyset` maps a keypoint schema onto the
model's points.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import cv2
import numpy as np

from efficienthrnet.keypoints import COCO17, KeypointSchema

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
_LIMB_HUE_MARGIN = 35.0  # degrees: a joint disc of a hue this close to its limb's vanished into it
_JOINT_OUTLINE = (25.0, 25.0, 25.0)  # RGB of the ring that outlines every joint disc
_DRAW_SHIFT = 4  # cv2 fixed-point bits: sub-pixel accurate discs
_SUB = 1 << _DRAW_SHIFT


def _hue_stride(num: int) -> int:
    """A stride coprime to num (3 for 16 colours), so that stepping through the hues visits them all."""
    return next((s for s in (3, 5, 7, 11, 13) if np.gcd(s, num) == 1), 1)


def _hue_deg(rgb: np.ndarray) -> float:
    return 360.0 * colorsys.rgb_to_hsv(*(np.asarray(rgb, np.float64) / 255.0))[0]


def _free_hues(count: int) -> np.ndarray:
    """`count` hues (degrees) evenly spread over the hue circle minus +-_LIMB_HUE_MARGIN around each
    limb colour's hue, so that no joint disc shares the colour of the limb it sits on."""
    limbs = sorted(_hue_deg(c) for c in (_LIMB_LEFT_COLOUR, _LIMB_RIGHT_COLOUR))
    arcs = [(limbs[0] + _LIMB_HUE_MARGIN, limbs[1] - _LIMB_HUE_MARGIN),
            (limbs[1] + _LIMB_HUE_MARGIN, limbs[0] + 360.0 - _LIMB_HUE_MARGIN)]
    lengths = np.array([hi - lo for lo, hi in arcs])
    along = (np.arange(count) + 0.5) * lengths.sum() / count
    first = along < lengths[0]
    return np.where(first, arcs[0][0] + along, arcs[1][0] + along - lengths[0]) % 360.0


def _joint_colours(num: int) -> np.ndarray:
    """Distinct RGB colours per keypoint type: the first (COCO's nose) white, the others on hues
    away from both limb colours, saturation alternating full / pale between neighbouring hues;
    neighbours in index order get far-apart hues."""
    count = num - 1
    hues = _free_hues(count)
    saturation = np.where(np.arange(count) % 2 == 0, 1.0, 0.5)
    palette = np.array([colorsys.hsv_to_rgb(h / 360.0, s, 1.0) for h, s in zip(hues, saturation)]) * 255.0
    order = np.arange(count) * _hue_stride(count) % count
    return np.concatenate([[[255.0, 255.0, 255.0]], palette.reshape(-1, 3)[order]])[:num]


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
    j = lambda: rng.uniform(0.9, 1.1)  # per-segment length jitter
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
        joint_radius=max(2.0, 0.045 * height),
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
            if role == "outline":
                return _JOINT_OUTLINE
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
            # A dark ring first: the disc's outline marks the joint even where its hue is close to
            # what lies under it.
            cv2.circle(canvas, _fx(points[point]), int((radius + 1.0) * _SUB), colour_of("outline", k), -1, line, _DRAW_SHIFT)
            cv2.circle(canvas, _fx(points[point]), int(radius * _SUB), colour_of("joint", k), -1, line, _DRAW_SHIFT)


def _silhouette(fig: _Figure, size: int) -> np.ndarray:
    canvas = np.zeros((size, size), dtype=np.uint8)
    _draw_figure(canvas, fig, colour_of=lambda role, k: 255, line=cv2.LINE_8)
    return canvas > 0
