"""Image classification data for training the compact EfficientNet backbones alone (paper Table 2).

A *source* is anything with ``len(source)``, ``source[i] -> (uint8 RGB image [H, W, 3], int label)``,
``source.num_classes`` and ``source.name``. Three kinds ship:

- `ArraySource`: images and labels held in numpy arrays (tests, small custom sets).
- `synthetic_shapes`: a generated, learnable set of coloured shapes on noisy backgrounds (one
  colour and one shape per class), for demos and tests without any download.
- `TfdsSource`: a TensorFlow Datasets dataset (``cifar100``, ``imagenet2012``, ...) that the user
  prepared under a data_dir of their choosing, read through ``tfds.data_source`` (random access,
  array_record files, no TensorFlow needed at read time). Nothing is ever downloaded here.

Spec strings (`open_source`): ``"tfds:NAME:DATA_DIR"`` (e.g. ``"tfds:cifar100:~/tfds"``) and
``"shapes"`` / ``"shapes:NUM_CLASSES"``; splits are ``"train"`` and ``"val"`` (``"val"`` maps
to the dataset's held-out split: CIFAR's ``test``, ImageNet's ``validation``), or any TFDS split
string such as ``"train[:90%]"``.

`ClassificationLoader` turns a source into an infinite, shuffled, sharded, resumable stream of
batches ``{"image": float32 [B, R, R, 3] (ImageNet mean/std), "label": int32 [B]}``: position p
of the stream belongs to epoch p // n, each epoch is a fresh permutation drawn from (seed,
epoch), and a sample's augmentation from (seed, epoch, index), so batches depend only on the
seed, the shard and the batch size, and a loader restarts anywhere without replaying data.
`iterate_eval_batches` reads a source once, in order, padding the last batch (with a
``"valid"`` mask) so that every batch has one shape and compiles once.

The sources live in `efficienthrnet.data.classification_sources` (re-exported here); this module
holds the augmentation, the preprocessing and the loaders.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import grain
import numpy as np

from efficienthrnet.data.augment import AugmentConfig, normalize_image
from efficienthrnet.data.classification_sources import (  # noqa: F401  (re-exported for existing callers)
    _COLOURS,
    _SHAPES,
    DEFAULT_PREPARE_HINT,
    PREPARE_HINTS,
    TFDS_VAL_SPLITS,
    ArraySource,
    ClassificationSource,
    TfdsSource,
    as_rgb_uint8,
    describe_source,
    draw_shape_image,
    import_tfds,
    not_prepared_message,
    open_source,
    synthetic_shapes,
    tfds_split,
)
from efficienthrnet.data.pipeline import PositionedLoader

# ----------------------------------------------------------------------------- preprocessing


@dataclass(frozen=True)
class ClassificationAugment:
    """Random-crop-and-flip training augmentation and the evaluation crop.

    Attributes:
      crop_scale: range of the random crop's area as a fraction of the image (Inception-style).
      crop_ratio: range of the random crop's aspect ratio (width / height).
      flip_prob: probability of a horizontal flip.
      eval_crop_fraction: side of the central evaluation crop as a fraction of the shorter side
        (0.875 is the usual ImageNet value; 1.0 keeps the whole square centre, right for CIFAR).
      mean, std: per-channel normalisation of x / 255 (ImageNet statistics by default).
    """

    crop_scale: tuple[float, float] = (0.25, 1.0)
    crop_ratio: tuple[float, float] = (3 / 4, 4 / 3)
    flip_prob: float = 0.5
    eval_crop_fraction: float = 1.0
    mean: tuple[float, float, float] = AugmentConfig.mean
    std: tuple[float, float, float] = AugmentConfig.std

    def __post_init__(self):
        lo, hi = self.crop_scale
        if not 0 < lo <= hi <= 1:
            raise ValueError(f"crop_scale {self.crop_scale} must satisfy 0 < min <= max <= 1")
        lo, hi = self.crop_ratio
        if not 0 < lo <= hi:
            raise ValueError(f"crop_ratio {self.crop_ratio} must satisfy 0 < min <= max")
        if not 0 <= self.flip_prob <= 1:
            raise ValueError(f"flip_prob {self.flip_prob} must lie in [0, 1]")
        if not 0 < self.eval_crop_fraction <= 1:
            raise ValueError(f"eval_crop_fraction {self.eval_crop_fraction} must lie in (0, 1]")

    def to_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassificationAugment:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def random_crop_box(
    rng: np.random.Generator,
    height: int,
    width: int,
    scale: Sequence[float],
    ratio: Sequence[float],
    attempts: int = 10,
) -> tuple[int, int, int, int]:
    """(top, left, crop height, crop width) of a random crop with area and aspect in range.

    Draws up to `attempts` times (log-uniform aspect); if none fits, falls back to the largest
    central crop with the aspect clamped into range, as Inception-style croppers do.
    """
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(attempts):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target * aspect)))
        h = int(round(math.sqrt(target / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w
    aspect = min(max(width / height, ratio[0]), ratio[1])
    w = min(width, int(round(height * aspect)))
    h = min(height, int(round(w / aspect)))
    return (height - h) // 2, (width - w) // 2, h, w


def center_crop_box(height: int, width: int, fraction: float) -> tuple[int, int, int, int]:
    """(top, left, side, side): the central square of `fraction` times the shorter side."""
    side = max(1, int(round(min(height, width) * fraction)))
    return (height - side) // 2, (width - side) // 2, side, side


def crop_resize(image: np.ndarray, box: tuple[int, int, int, int], size: int) -> np.ndarray:
    """Cut `box` out of the image and resize it to size x size (area filter when shrinking)."""
    top, left, h, w = box
    crop = image[top : top + h, left : left + w]
    interpolation = cv2.INTER_AREA if h > size and w > size else cv2.INTER_LINEAR
    return cv2.resize(crop, (size, size), interpolation=interpolation)


def train_example(
    image: np.ndarray, rng: np.random.Generator, size: int, augment: ClassificationAugment
) -> np.ndarray:
    """Random crop, resize to size x size, random flip, normalise: float32 [size, size, 3]."""
    box = random_crop_box(rng, image.shape[0], image.shape[1], augment.crop_scale, augment.crop_ratio)
    out = crop_resize(image, box, size)
    if rng.random() < augment.flip_prob:
        out = out[:, ::-1]
    return normalize_image(out, augment)


def eval_example(image: np.ndarray, size: int, augment: ClassificationAugment) -> np.ndarray:
    """Central crop, resize to size x size, normalise: float32 [size, size, 3]."""
    box = center_crop_box(image.shape[0], image.shape[1], augment.eval_crop_fraction)
    return normalize_image(crop_resize(image, box, size), augment)


# ------------------------------------------------------------------------------------ loaders


@dataclass
class _PositionToExample:
    """Stream position -> one preprocessed example (see the module docstring for determinism)."""

    source: ClassificationSource
    size: int
    seed: int
    shard_index: int
    shard_count: int
    augment: ClassificationAugment
    random_augment: bool

    def __post_init__(self):
        self.per_shard = len(self.source) // self.shard_count
        if self.per_shard < 1:
            raise ValueError(
                f"{self.source.name} has {len(self.source)} examples, fewer than the {self.shard_count} shards"
            )
        self._epoch, self._perm = -1, None

    def dataset_index(self, position: int) -> tuple[int, int]:
        epoch, offset = divmod(position, self.per_shard)
        if epoch != self._epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.source))
            self._epoch = epoch
        return epoch, int(self._perm[offset * self.shard_count + self.shard_index])

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        epoch, index = self.dataset_index(position)
        image, label = self.source[index]
        if self.random_augment:
            pixels = train_example(
                image, np.random.default_rng([self.seed, epoch, index]), self.size, self.augment
            )
        else:
            pixels = eval_example(image, self.size, self.augment)
        return {"image": pixels, "label": np.int32(label)}


class ClassificationLoader(PositionedLoader):
    """Infinite, shuffled, resumable batches ``{"image": float32 [B,R,R,3], "label": int32 [B]}``.

    `random_augment=False` turns the random crop and flip off (central crop only, still shuffled).
    `get_state()` / `set_state()`
    checkpoint the stream position; `close()` stops the prefetch threads.
    """

    def __init__(
        self,
        source: ClassificationSource,
        batch_size: int,
        size: int,
        seed: int = 0,
        augment: ClassificationAugment = ClassificationAugment(),
        random_augment: bool = True,
        shard_index: int = 0,
        shard_count: int = 1,
        num_threads: int = 4,
    ):
        if batch_size < 1 or size < 1:
            raise ValueError(f"batch_size ({batch_size}) and size ({size}) must be >= 1")
        element = _PositionToExample(
            source, size, seed, shard_index, shard_count, augment, random_augment
        )
        super().__init__(element, batch_size, num_threads)

    def _num_samples(self) -> int:
        return len(self._element.source)

    @property
    def steps_per_epoch(self) -> int:
        """Full batches per pass over this shard (at least 1)."""
        return max(1, self._element.per_shard // self.batch_size)


def iterate_eval_batches(
    source: ClassificationSource,
    batch_size: int,
    size: int,
    augment: ClassificationAugment = ClassificationAugment(),
    max_examples: int | None = None,
    num_threads: int = 4,
) -> Iterator[dict[str, np.ndarray]]:
    """The first `max_examples` (default all) examples once, in order, in batches of one shape.

    Each batch is ``{"image", "label", "valid"}``; the last one is padded with copies of its
    first example and ``valid`` = 0 there, so metrics count each real example exactly once.
    """
    count = len(source) if max_examples is None else min(int(max_examples), len(source))
    if count < 1:
        raise ValueError(
            f"nothing to evaluate: {source.name} has {len(source)} examples, max_examples={max_examples}"
        )

    def element(index: int) -> dict[str, np.ndarray]:
        image, label = source[index]
        return {"image": eval_example(image, size, augment), "label": np.int32(label)}

    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2 * num_threads, 1))
    ds = (
        grain.MapDataset.range(count)
        .map(element)
        .to_iter_dataset(read)
        .batch(batch_size, drop_remainder=False)
    )
    for batch in ds:
        n = len(batch["label"])
        valid = np.ones(batch_size, np.float32)
        if n < batch_size:
            pad = batch_size - n
            batch = {k: np.concatenate([v, np.repeat(v[:1], pad, axis=0)]) for k, v in batch.items()}
            valid[n:] = 0.0
        yield {**batch, "valid": valid}
