"""Random affine augmentation, applied consistently to image, masks and keypoints.

Follows the reference (HigherHRNet's `RandomAffineTransform` + `RandomHorizontalFlip`):
a square box of side 200 * scale source pixels, scale = short_side / 200 * U(min, max),
centred on the image centre plus an integer translation in +-max_translate * scale per axis,
rotated by U(-max_rotation, max_rotation) degrees, is mapped onto the square input crop and
onto each output map. The flip happens after the warp, with left/right keypoints swapped by the
schema's flip permutation.

One deliberate difference from the reference: the flip is the input crop's mirror (x -> S - 1 - x
in input pixels, which is what reversing the crop's columns does) carried to every output
resolution r, i.e. x -> r (S - 1) / S - x there. The reference mirrors each map about its own
last column (x -> r - 1 - x), which puts the targets of flipped samples 1 - r / S cells left of
the mirrored joints (0.75 cells, 3 input pixels, on the 1/4 map). A network can tell flipped
synthetic figures from plain ones, so it learned that shift and flip testing then moved its joints
~2 image pixels right, costing AP (measured in README "Flip alignment").
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from efficienthrnet.keypoints import COCO17, KeypointSchema

# The reference expresses scale in units of 200 source pixels (a legacy of MPII's person scale).
_SCALE_UNIT = 200.0


@dataclass(frozen=True)
class AugmentConfig:
    """Ranges of the random affine; defaults are the reference's COCO training values."""

    max_rotation: float = 30.0
    scale_range: tuple[float, float] = (0.75, 1.5)
    max_translate: float = 40.0
    flip_prob: float = 0.5
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)

    def __post_init__(self):
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"scale_range {self.scale_range} must satisfy 0 < min <= max")
        if not 0.0 <= self.flip_prob <= 1.0:
            raise ValueError(f"flip_prob {self.flip_prob} must lie in [0, 1]")
        if self.max_rotation < 0 or self.max_translate < 0:
            raise ValueError("max_rotation and max_translate must be >= 0")


@dataclass(frozen=True)
class AffineParams:
    """One drawn augmentation: which square of the source maps onto the crop.

    Attributes:
      center: (x, y) source-pixel centre of the box.
      box_size: side of the (unrotated) box in source pixels (= 200 * reference scale).
      rotation: degrees, counter-clockwise as the reference.
      flip: horizontal flip after the warp.
    """

    center: tuple[float, float]
    box_size: float
    rotation: float = 0.0
    flip: bool = False


def draw_affine(rng: np.random.Generator, height: int, width: int, config: AugmentConfig) -> AffineParams:
    """Draw one random augmentation for an image of the given size (reference ranges)."""
    lo, hi = config.scale_range
    scale = min(height, width) / _SCALE_UNIT * rng.uniform(lo, hi)
    rotation = rng.uniform(-config.max_rotation, config.max_rotation)
    cx, cy = width / 2.0, height / 2.0
    if config.max_translate > 0:
        # An integer shift per axis in [-max_translate * scale, max_translate * scale), as numpy randint.
        bound = config.max_translate * scale
        cx += int(rng.integers(int(-bound), max(int(bound), int(-bound) + 1)))
        cy += int(rng.integers(int(-bound), max(int(bound), int(-bound) + 1)))
    flip = bool(rng.random() < config.flip_prob)
    return AffineParams(center=(cx, cy), box_size=scale * _SCALE_UNIT, rotation=float(rotation), flip=flip)


def centered_params(height: int, width: int) -> AffineParams:
    """The deterministic 'no augmentation' transform: centre crop, short side fits the crop."""
    return AffineParams(center=(width / 2.0, height / 2.0), box_size=float(min(height, width)))


def affine_matrix(params: AffineParams, out_size: int, input_size: int | None = None) -> np.ndarray:
    """2x3 float64 matrix from source pixels to an out_size x out_size map (reference convention).

    ``input_size`` is the crop the maps belong to (default: ``out_size`` itself): a flip mirrors the
    crop, x -> input_size - 1 - x in its pixels, which is x -> out_size (input_size - 1) /
    input_size - x on this map.
    """
    r = float(out_size)
    mirror_axis = r * (input_size - 1) / input_size if input_size else r - 1.0
    k = r / params.box_size
    cx, cy = params.center
    t = np.array([[k, 0.0, r * (0.5 - cx / params.box_size)], [0.0, k, r * (0.5 - cy / params.box_size)], [0, 0, 1]])
    if params.rotation != 0.0:
        # Rotate about the map centre; the reference negates the angle to match its crop direction.
        rad = np.deg2rad(-params.rotation)
        sn, cs = np.sin(rad), np.cos(rad)
        rot = np.array([[cs, -sn, 0.0], [sn, cs, 0.0], [0.0, 0.0, 1.0]])
        to_centre = np.array([[1.0, 0.0, -r / 2], [0.0, 1.0, -r / 2], [0.0, 0.0, 1.0]])
        back = np.array([[1.0, 0.0, r / 2], [0.0, 1.0, r / 2], [0.0, 0.0, 1.0]])
        t = back @ rot @ to_centre @ t
    if params.flip:
        t = np.array([[-1.0, 0.0, mirror_axis], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]) @ t
    return t[:2]


def transform_keypoints(
    keypoints: np.ndarray, matrix: np.ndarray, flip: bool, schema: KeypointSchema = COCO17
) -> np.ndarray:
    """Apply a 2x3 matrix to [N, J, 3] keypoints; with flip, also swap left/right channels."""
    out = np.array(keypoints, dtype=np.float32, copy=True)
    xy = out[..., :2].astype(np.float64)
    out[..., :2] = xy @ matrix[:, :2].T + matrix[:, 2]
    if flip:
        out = out[:, schema.flip_permutation]
    return out


def warp_mask(mask: np.ndarray, matrix: np.ndarray, out_size: int) -> np.ndarray:
    """Warp a {0,1} mask and threshold at 0.5; outside the source image counts as masked (0)."""
    warped = cv2.warpAffine((mask * 255).astype(np.uint8), matrix, (out_size, out_size), flags=cv2.INTER_LINEAR)
    return (warped > 127.5).astype(np.float32)


@dataclass(frozen=True)
class AugmentedSample:
    """Image crop plus masks and keypoints at each output size (in the order asked for)."""

    image: np.ndarray  # uint8 [S, S, 3]
    masks: tuple[np.ndarray, ...]  # float32 [r, r] per output size
    keypoints: tuple[np.ndarray, ...]  # float32 [N, J, 3] per output size


def apply_affine(
    image: np.ndarray,
    mask: np.ndarray,
    keypoints: np.ndarray,
    params: AffineParams,
    input_size: int,
    output_sizes: tuple[int, ...],
    schema: KeypointSchema = COCO17,
) -> AugmentedSample:
    """Warp the image to the input crop, and mask and keypoints to each output size."""
    image_matrix = affine_matrix(params, input_size)
    crop = cv2.warpAffine(image, image_matrix, (input_size, input_size), flags=cv2.INTER_LINEAR)
    masks, kps = [], []
    for size in output_sizes:
        m = affine_matrix(params, size, input_size)
        masks.append(warp_mask(mask, m, size))
        kps.append(transform_keypoints(keypoints, m, params.flip, schema))
    return AugmentedSample(image=crop, masks=tuple(masks), keypoints=tuple(kps))


def normalize_image(image: np.ndarray, config: AugmentConfig = AugmentConfig()) -> np.ndarray:
    """uint8 RGB -> float32 (x / 255 - mean) / std per channel."""
    # x * (1 / (255 std)) - mean / std, with OpenCV's vectorised per-channel scalar ops: about
    # twice as fast as numpy broadcasting on this hot path.
    scale = tuple(1.0 / (255.0 * s) for s in config.std) + (0.0,)
    offset = tuple(m / s for m, s in zip(config.mean, config.std, strict=True)) + (0.0,)
    return cv2.subtract(cv2.multiply(image.astype(np.float32), scale), offset)
