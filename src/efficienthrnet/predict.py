"""Image -> people: resize into a few shape buckets, forward pass, flip / multi-scale test, decode.

Steps (the reference's test pipeline, with shape buckets added):

1. Resize (uniform factor) so the short side is the scale's input size (`ceil32(input_size *
   scale)`), then pad (black) the long side on the right/bottom up to the next allowed bucket
   (`long_side_ratios` x short side, rounded up to 32). Images longer than the largest bucket
   are shrunk to fit it. So jit compiles once per (scale, orientation, bucket), not per image.
2. One jitted function per bucket runs the network (on the image and, with flip test, its
   mirror as a batch of 2), upsamples the 1/4 output to 1/2 (bilinear, half-pixel centres, as
   torch's align_corners=False), averages its heatmaps with the 1/2 heatmaps, takes the tags
   from the 1/4 output, flips the mirrored pass back and permutes its heatmap AND tag
   channels by the schema's flip permutation, and (with `decode_at="input"`) upsamples again
   to the input resolution.
3. Multi-scale: heatmaps of every scale are resized to the scale-1 map and averaged; tags
   come from scale 1 only (as the reference).
4. The maps are cropped to the image's content (the padding is never decoded), decoded, and
   the keypoints mapped back to the original image by the inverse of the resize.

Decode resolution: `decode_at="input"` (default) decodes at the scale-1 input resolution like
the reference's PROJECT2IMAGE, whose quarter-pixel steps are then 0.25 input pixels;
`"half"` decodes the 1/2-resolution maps directly (4x fewer pixels, steps of 0.5 input
pixels). With the vectorised decoder the input resolution costs a few tens of ms on a CPU,
so the reference's choice is kept as the default.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import cv2
import jax
import jax.numpy as jnp
import numpy as np

from efficienthrnet.config import NETWORK_STRIDE
from efficienthrnet.data.augment import normalize_image
from efficienthrnet.decode import DecodeConfig, DecodeResult, decode
from efficienthrnet.keypoints import KeypointSchema, get_schema

# Network input sides must be multiples of this (the deepest backbone stride).
SIZE_STEP = NETWORK_STRIDE


def ceil_to(value: float, step: int = SIZE_STEP) -> int:
    return int(-(-round(value, 6) // step) * step)


@dataclass(frozen=True)
class PredictConfig:
    """Test-time settings.

    Attributes:
      input_size: short side of the network input at scale 1 (the model's input size).
      scales: test scales (1.0 must be among them: its tags are the ones decoded).
      flip: flip test (average with the mirrored pass; tags of both are kept).
      long_side_ratios: allowed long/short ratios of the padded input (the shape buckets).
      decode_at: "input" (the reference's resolution) or "half" (the 1/2 output).
      decode: decoder settings.
    """

    input_size: int = 512
    scales: tuple[float, ...] = (1.0,)
    flip: bool = True
    long_side_ratios: tuple[float, ...] = (1.0, 1.25, 1.5, 1.75, 2.0)
    decode_at: str = "input"
    decode: DecodeConfig = field(default_factory=DecodeConfig)

    def __post_init__(self):
        if self.input_size < SIZE_STEP or self.input_size % SIZE_STEP:
            raise ValueError(f"input_size={self.input_size} must be a positive multiple of {SIZE_STEP}")
        if 1.0 not in self.scales or any(s <= 0 for s in self.scales):
            raise ValueError(f"scales={self.scales} must be positive and include 1.0 (its tags are decoded)")
        if not self.long_side_ratios or min(self.long_side_ratios) < 1.0:
            raise ValueError(f"long_side_ratios={self.long_side_ratios} must be non-empty and >= 1.0")
        if self.decode_at not in ("input", "half"):
            raise ValueError(f"decode_at={self.decode_at!r}; use 'input' or 'half'")


@dataclass(frozen=True)
class ResizePlan:
    """Where an image goes in the network input: resized to `resized_hw` at the top-left of `canvas_hw`."""

    image_hw: tuple[int, int]
    resized_hw: tuple[int, int]
    canvas_hw: tuple[int, int]

    @property
    def factors(self) -> tuple[float, float]:
        """(x, y) factors from original image pixels to canvas pixels."""
        return self.resized_hw[1] / self.image_hw[1], self.resized_hw[0] / self.image_hw[0]


def long_side_buckets(short_side: int, ratios: tuple[float, ...]) -> list[int]:
    """Allowed padded long sides for a given short side (multiples of 32, ascending)."""
    return sorted({max(short_side, ceil_to(r * short_side)) for r in ratios})


def plan_resize(image_hw: tuple[int, int], short_side: int, ratios: tuple[float, ...]) -> ResizePlan:
    """Resize so the short side is `short_side` and pad the long side up to the next bucket.

    An image longer than the largest bucket is shrunk so its long side fits it (the short
    side is then padded instead).
    """
    h, w = image_hw
    if h < 1 or w < 1:
        raise ValueError(f"image size {w}x{h} is empty")
    landscape = w >= h
    short, long = (h, w) if landscape else (w, h)
    buckets = long_side_buckets(short_side, ratios)
    resized_long = max(1, round(long * short_side / short))
    fitting = [b for b in buckets if b >= resized_long]
    if fitting:
        canvas_long, resized_short = fitting[0], short_side
    else:
        canvas_long = buckets[-1]
        resized_long = canvas_long
        resized_short = max(1, round(short * canvas_long / long))
    if landscape:
        return ResizePlan((h, w), (resized_short, resized_long), (short_side, canvas_long))
    return ResizePlan((h, w), (resized_long, resized_short), (canvas_long, short_side))


def all_canvas_shapes(config: PredictConfig) -> set[tuple[int, int]]:
    """Every network input shape the predictor can compile for (the bound on compilations)."""
    shapes = set()
    for scale in config.scales:
        short = ceil_to(config.input_size * scale)
        for long in long_side_buckets(short, config.long_side_ratios):
            shapes |= {(short, long), (long, short)}
    return shapes


def prepare_image(image: np.ndarray, plan: ResizePlan) -> np.ndarray:
    """uint8 RGB image -> normalised float32 [canvas_h, canvas_w, 3].

    The padding is black before normalisation, like the border of the reference's affine warp.
    """
    rh, rw = plan.resized_hw
    shrink = rh < image.shape[0]
    canvas = np.zeros((*plan.canvas_hw, 3), np.uint8)
    canvas[:rh, :rw] = cv2.resize(image, (rw, rh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return normalize_image(canvas)


def upsample2x(x: jax.Array, axes: tuple[int, int] = (-3, -2)) -> jax.Array:
    """Exact 2x bilinear upsampling with half-pixel centres and edge clamping (torch align_corners=False).

    Output pixel 2i reads 0.75 x[i] + 0.25 x[i-1], pixel 2i+1 reads 0.75 x[i] + 0.25 x[i+1]: the
    same numbers as a general bilinear resize, in O(N) instead of a dense resampling matrix.
    """
    for axis in axes:
        axis = axis % x.ndim
        n = x.shape[axis]
        prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis), jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)
        nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)
        even, odd = 0.75 * x + 0.25 * prev, 0.75 * x + 0.25 * nxt
        x = jnp.stack([even, odd], axis=axis + 1).reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1 :])
    return x


def merge_flip(heat, tags, heat_flipped, tags_flipped, flip_perm):
    """Combine a pass on the image with a pass on its mirror ([..., H, W, J] maps, numpy or jax).

    The mirrored maps are flipped back along W and their joint channels permuted (left <->
    right); heatmaps are averaged and the two tag maps stacked: returns ([..., H, W, J],
    [..., H, W, J, 2]).
    """
    xp = jnp if isinstance(heat, jax.Array) else np
    flip_perm = np.asarray(flip_perm)
    heat_back = heat_flipped[..., ::-1, :][..., flip_perm]
    tags_back = tags_flipped[..., ::-1, :][..., flip_perm]
    return (heat + heat_back) / 2, xp.stack([tags, tags_back], axis=-1)


class Predictor:
    """Callable image -> `DecodeResult` with keypoints in original image pixels.

    Build it from a flax model and its variables (`Predictor(model, variables, schema,
    config)`), or from any `apply_fn(variables, images_nhwc) -> (out4, out2)` with
    `Predictor.from_apply_fn`, or from a training run folder with `Predictor.from_run` (which
    restores the run's keypoint schema). `num_compilations` counts how often the network function was
    traced (once per input shape); `all_canvas_shapes(config)` bounds it. `with_variables` gives a
    predictor of other weights of the same network that shares the compiled function (and that count).
    """

    def __init__(self, model, variables, schema: KeypointSchema | str, config: PredictConfig = PredictConfig()):
        def apply_fn(v, x):
            return model.apply(v, x, train=False)

        self._init(apply_fn, variables, schema, config)

    @classmethod
    def from_apply_fn(
        cls, apply_fn: Callable[[Any, jax.Array], tuple[jax.Array, jax.Array]], variables, schema, config=PredictConfig()
    ) -> Predictor:
        self = cls.__new__(cls)
        self._init(apply_fn, variables, schema, config)
        return self

    @classmethod
    def from_run(
        cls, run_dir, step: int | None = None, config: PredictConfig | None = None, keypoints: str | None = None
    ) -> Predictor:
        """A training run's checkpoint (latest by default) with the keypoint schema the run stored.

        ``config`` defaults to the training input size; ``keypoints``, when given, must name the
        run's schema (see `efficienthrnet.train.load_for_inference`).
        """
        from efficienthrnet.train import load_for_inference

        model_config, model, variables = load_for_inference(run_dir, step, keypoints=keypoints)
        config = PredictConfig(input_size=model_config.input_size) if config is None else config
        return cls(model, variables, model_config.keypoints, config)

    def _init(self, apply_fn, variables, schema, config: PredictConfig) -> None:
        self.schema = get_schema(schema)
        self.config = config
        self.variables = variables
        self._apply_fn = apply_fn
        self._traces = [0]  # a list: shared with the predictors of `with_variables`
        self.last_timings_ms: dict[str, float] = {}
        self._maps_fn = jax.jit(self._network_maps)

    @property
    def num_compilations(self) -> int:
        return self._traces[0]

    def with_variables(self, variables) -> Predictor:
        """This predictor with other weights of the same shapes (e.g. another seed of one design),
        running the same compiled function: no new trace or compile."""
        other = copy.copy(self)
        other.variables = variables
        other.last_timings_ms = {}
        return other

    def _network_maps(self, variables, images):
        """[1, Hc, Wc, 3] -> heatmaps [H, W, J], tags [H, W, J, T] at the decode resolution."""
        self._traces[0] += 1  # runs only while tracing
        num_j = self.schema.num_keypoints
        batch = jnp.concatenate([images, images[:, :, ::-1]]) if self.config.flip else images
        out4, out2 = self._apply_fn(variables, batch)
        if out4.shape[-1] != 2 * num_j or out2.shape[-1] < num_j:
            raise ValueError(
                f"network outputs {out4.shape} / {out2.shape} do not fit schema {self.schema.name!r}: "
                f"expected [B, H/4, W/4, {2 * num_j}] and [B, H/2, W/2, {num_j}]"
            )
        up4 = upsample2x(out4)
        heat = (up4[..., :num_j] + out2[..., :num_j]) / 2
        tags = up4[..., num_j : 2 * num_j]
        if self.config.flip:
            heat, tags = merge_flip(heat[0], tags[0], heat[1], tags[1], self.schema.flip_permutation)
        else:
            heat, tags = heat[0], tags[0][..., None]
        if self.config.decode_at == "input":
            heat, tags = upsample2x(heat), upsample2x(tags, axes=(-4, -3))
        return heat, tags

    def _maps_at_scale(self, image: np.ndarray, scale: float):
        """(heatmaps, tags, plan, valid_hw) of one scale, cropped to the image content."""
        short = ceil_to(self.config.input_size * scale)
        plan = plan_resize(image.shape[:2], short, self.config.long_side_ratios)
        canvas = prepare_image(image, plan)
        heat, tags = self._maps_fn(self.variables, canvas[None])
        heat, tags = np.asarray(heat), np.asarray(tags)
        ratio = heat.shape[0] / plan.canvas_hw[0]
        valid_h, valid_w = (int(np.ceil(n * ratio)) for n in plan.resized_hw)
        return heat[:valid_h, :valid_w], tags[:valid_h, :valid_w], plan, ratio

    def maps(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[float, float]]:
        """Aggregated heatmaps [h, w, J] and tags [h, w, J, T] of an image, and the (x, y)
        factors from map pixels to original image pixels."""
        check_image(image)
        heat, tags, plan, ratio = self._maps_at_scale(image, 1.0)
        heat = heat.astype(np.float32, copy=True)
        for scale in self.config.scales:
            if scale == 1.0:
                continue
            other, _, _, _ = self._maps_at_scale(image, scale)
            heat += cv2.resize(other, (heat.shape[1], heat.shape[0]), interpolation=cv2.INTER_LINEAR).reshape(heat.shape)
        heat /= len(self.config.scales)
        fx, fy = plan.factors
        return np.ascontiguousarray(heat), np.ascontiguousarray(tags), (1.0 / (ratio * fx), 1.0 / (ratio * fy))

    def __call__(self, image: np.ndarray) -> DecodeResult:
        start = time.perf_counter()
        heat, tags, (sx, sy) = self.maps(image)
        mid = time.perf_counter()
        found = decode(heat, tags, self.schema, self.config.decode)
        keypoints = found.keypoints.copy()
        keypoints[:, :, 0] *= sx
        keypoints[:, :, 1] *= sy
        end = time.perf_counter()
        self.last_timings_ms = {"network_ms": (mid - start) * 1e3, "decode_ms": (end - mid) * 1e3}
        return replace(found, keypoints=keypoints)


def check_image(image: np.ndarray) -> None:
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        shape = getattr(image, "shape", None)
        dtype = getattr(image, "dtype", type(image).__name__)
        raise ValueError(f"expected a uint8 RGB image [H, W, 3]; got {dtype} with shape {shape}")


def read_image(path, max_pixels: int | None = None) -> np.ndarray:
    """Read a JPEG or PNG file as the uint8 RGB [H, W, 3] image a `Predictor` takes.

    A missing, unreadable, non-JPEG/PNG, truncated or oversized file (over `max_pixels`, default
    `efficienthrnet.data.coco.DEFAULT_MAX_PIXELS`) raises an error naming the path; see
    `efficienthrnet.data.coco.decode_image_file`.
    """
    from efficienthrnet.data.coco import DEFAULT_MAX_PIXELS, decode_image_file

    return decode_image_file(path, max_pixels=DEFAULT_MAX_PIXELS if max_pixels is None else max_pixels)
