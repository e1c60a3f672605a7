"""Classification sources: `ArraySource`, the generated `synthetic_shapes` set and `TfdsSource` (a
prepared TensorFlow Datasets dataset, never downloaded here), opened from spec strings by
`open_source`."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np

#: How the generic split "val" is spelled by known TFDS datasets.
TFDS_VAL_SPLITS = {
    "cifar100": "test",
    "cifar10": "test",
    "imagenet2012": "validation",
    "imagenette": "validation",
}

#: How to prepare a TFDS dataset once (network and TensorFlow are needed only for this step).
PREPARE_HINTS = {
    "imagenet2012": (
        "download ILSVRC2012_img_train.tar and ILSVRC2012_img_val.tar from image-net.org into "
        "{data_dir}/downloads/manual, then run `pip install tensorflow-cpu tensorflow-datasets && "
        "tfds build imagenet2012 --data_dir={data_dir} --file_format=array_record`"
    ),
}
DEFAULT_PREPARE_HINT = (
    "prepare it once on a machine with network access: `pip install tensorflow-cpu tensorflow-datasets && "
    "tfds build {name} --data_dir={data_dir} --file_format=array_record`"
)


# ------------------------------------------------------------------------------------ sources


@runtime_checkable
class ClassificationSource(Protocol):
    """Random-access labelled images: ``source[i] -> (uint8 [H, W, 3] RGB, label in [0, num_classes))``."""

    name: str
    num_classes: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]: ...


def as_rgb_uint8(image: Any, where: str) -> np.ndarray:
    """An RGB uint8 [H, W, 3] view of an image; grey images get three equal channels."""
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(
            f"{where}: image dtype is {image.dtype}, expected uint8 RGB (0..255); convert with "
            f"np.clip(x * 255, 0, 255).astype(np.uint8) if it holds floats in [0, 1]"
        )
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] not in (1, 3) or image.shape[0] < 1 or image.shape[1] < 1:
        raise ValueError(f"{where}: image shape {image.shape} is not [H, W, 3] (or [H, W] / [H, W, 1] grey)")
    if image.shape[2] == 1:
        image = np.repeat(image, 3, axis=2)
    return image


@dataclass(frozen=True, eq=False)
class ArraySource:
    """Images and integer labels held in memory.

    Attributes:
      images: uint8 [N, H, W, 3] (or a list of uint8 [H_i, W_i, 3] images of varying sizes).
      labels: integers [N] in [0, num_classes).
      num_classes: number of classes; by default max(label) + 1.
      name: shown in run records and errors.
    """

    images: Any
    labels: Any
    num_classes: int | None = None
    name: str = "arrays"

    def __post_init__(self):
        labels = np.asarray(self.labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(
                f"{self.name}: labels must be a 1-D integer array, got dtype {labels.dtype} shape {labels.shape}"
            )
        if len(self.images) != len(labels):
            raise ValueError(
                f"{self.name}: {len(self.images)} images but {len(labels)} labels; give one label per image"
            )
        if len(labels) == 0:
            raise ValueError(f"{self.name}: no examples; give at least one image and label")
        num_classes = int(labels.max()) + 1 if self.num_classes is None else int(self.num_classes)
        if labels.min() < 0 or labels.max() >= num_classes:
            raise ValueError(
                f"{self.name}: labels span [{labels.min()}, {labels.max()}] but num_classes={num_classes}; "
                f"labels must lie in [0, num_classes)"
            )
        object.__setattr__(self, "labels", labels.astype(np.int64))
        object.__setattr__(self, "num_classes", num_classes)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        return as_rgb_uint8(self.images[index], f"{self.name}[{index}]"), int(self.labels[index])


# Class k has colour k % 8 and shape (k % 8 + k // 8) % 3: colour alone separates the first eight
# classes, and classes sharing a colour differ in shape (up to 24 classes), so the set is learnable
# in a few dozen steps.
_SHAPES = ("square", "disc", "triangle")
_COLOURS = (
    (230, 40, 40),
    (40, 200, 40),
    (50, 80, 240),
    (240, 220, 30),
    (220, 60, 220),
    (40, 220, 220),
    (250, 140, 20),
    (245, 245, 245),
)


def draw_shape_image(label: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """One synthetic image of class `label`: its shape in its colour, random place and size, noisy grey background."""
    image = rng.integers(40, 110, size=(size, size, 3)).astype(np.uint8)
    colour = tuple(int(c) for c in _COLOURS[label % len(_COLOURS)])
    shape = _SHAPES[(label % len(_COLOURS) + label // len(_COLOURS)) % len(_SHAPES)]
    radius = int(rng.uniform(0.2, 0.35) * size)
    cx, cy = (int(v) for v in rng.integers(radius, size - radius, size=2))
    if shape == "square":
        cv2.rectangle(image, (cx - radius, cy - radius), (cx + radius, cy + radius), colour, thickness=-1)
    elif shape == "disc":
        cv2.circle(image, (cx, cy), radius, colour, thickness=-1)
    else:
        points = np.array(
            [[cx, cy - radius], [cx - radius, cy + radius], [cx + radius, cy + radius]], np.int32
        )
        cv2.fillPoly(image, [points], colour)
    return image


def synthetic_shapes(num_examples: int, num_classes: int = 6, size: int = 64, seed: int = 0) -> ArraySource:
    """A learnable in-memory set: balanced classes, one colour (and shape) per class.

    Different seeds give disjoint draws of the same classes (use one seed for training and
    another for evaluation).
    """
    if not 2 <= num_classes <= len(_COLOURS) * len(_SHAPES):
        raise ValueError(
            f"synthetic_shapes: num_classes={num_classes} must lie in [2, {len(_COLOURS) * len(_SHAPES)}]"
        )
    if num_examples < 1 or size < 16:
        raise ValueError(
            f"synthetic_shapes: need num_examples >= 1 and size >= 16, got {num_examples} and {size}"
        )
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(num_examples) % num_classes)
    images = np.stack([draw_shape_image(int(k), size, rng) for k in labels])
    return ArraySource(images, labels, num_classes, name=f"shapes{num_classes}(seed={seed})")


class TfdsSource:
    """A prepared TensorFlow Datasets split, read with ``tfds.data_source`` (never downloads).

    Needs the optional extra (``pip install efficienthrnet[tfds]``, i.e. tensorflow-datasets);
    tensorflow itself is not needed to read, only to prepare the dataset once.
    """

    def __init__(
        self,
        name: str,
        split: str,
        data_dir: str | os.PathLike,
        image_key: str = "image",
        label_key: str = "label",
    ):
        tfds = import_tfds()
        self.data_dir = str(Path(data_dir).expanduser())
        self.split = tfds_split(name, split)
        self.image_key, self.label_key = image_key, label_key
        try:
            builder = tfds.builder(name, data_dir=self.data_dir)
        except Exception as err:  # unknown names raise DatasetNotFoundError with TFDS's own hints
            raise ValueError(
                f"TFDS has no dataset {name!r} ({err}); check the name, e.g. 'cifar100' or 'imagenet2012'"
            ) from err
        features = builder.info.features
        for key in (image_key, label_key):
            if key not in features:
                raise ValueError(
                    f"TFDS dataset {name!r} has no feature {key!r}; its features are {sorted(features)}"
                )
        self.num_classes = int(features[label_key].num_classes)
        self.name = f"tfds:{name}:{self.split}"
        try:
            self._source = tfds.data_source(name, split=self.split, data_dir=self.data_dir, download=False)
        except NotImplementedError as err:  # TFRecord files (or none at all): no random access
            if not builder.is_prepared():
                raise FileNotFoundError(
                    not_prepared_message(name, self.data_dir, "no prepared files found")
                ) from err
            hint = DEFAULT_PREPARE_HINT.format(name=name, data_dir=self.data_dir)
            raise ValueError(
                f"TFDS dataset {name!r} under {self.data_dir} is not prepared in a random-access format "
                f"(array_record): {err}\nRe-prepare it: {hint}"
            ) from err
        except (FileNotFoundError, AssertionError, ValueError) as err:
            raise FileNotFoundError(not_prepared_message(name, self.data_dir, err)) from err
        if len(self._source) == 0:
            raise FileNotFoundError(
                not_prepared_message(name, self.data_dir, f"split {self.split!r} is empty")
            )

    def __len__(self) -> int:
        return len(self._source)

    def __getitem__(self, index: int) -> tuple[np.ndarray, int]:
        example = self._source[index]
        return as_rgb_uint8(example[self.image_key], f"{self.name}[{index}]"), int(example[self.label_key])


def import_tfds():
    """tensorflow_datasets, imported lazily so that the core package never needs it."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise ImportError(
            "TFDS classification data needs tensorflow-datasets: `pip install efficienthrnet[tfds]` "
            "(or `pip install tensorflow-datasets`)"
        ) from err
    return tfds


def not_prepared_message(name: str, data_dir: str, cause: Any) -> str:
    hint = PREPARE_HINTS.get(name, DEFAULT_PREPARE_HINT).format(name=name, data_dir=data_dir)
    return (
        f"TFDS dataset {name!r} is not prepared under data_dir {data_dir} ({cause}). Nothing is downloaded at "
        f"run time; {hint}"
    )


def tfds_split(name: str, split: str) -> str:
    """The TFDS split name for "train" / "val" (or any TFDS split string, passed through)."""
    if split == "val":
        return TFDS_VAL_SPLITS.get(name, "validation")
    return split


def open_source(spec: str | ClassificationSource, split: str) -> ClassificationSource:
    """A source from a spec string ("tfds:NAME:DATA_DIR", "shapes", "shapes:K"), or the source itself."""
    if not isinstance(spec, str):
        if not isinstance(spec, ClassificationSource):
            raise TypeError(
                f"classification data must be a spec string or a source (len, [i], num_classes, name), "
                f"got {type(spec).__name__}"
            )
        return spec
    kind, _, rest = spec.partition(":")
    if kind == "tfds":
        name, _, data_dir = rest.partition(":")
        if not name or not data_dir:
            raise ValueError(
                f"classification data spec {spec!r} must read 'tfds:NAME:DATA_DIR', e.g. 'tfds:cifar100:~/tfds'"
            )
        return TfdsSource(name, split, data_dir)
    if kind == "shapes":
        try:
            num_classes = int(rest) if rest else 6
        except ValueError:
            raise ValueError(
                f"classification data spec {spec!r}: the class count after 'shapes:' must be an integer"
            ) from None
        # Fixed sizes and seeds: a train set and a disjoint held-out set of the same classes.
        count, seed = (64 * num_classes, 0) if split == "train" else (16 * num_classes, 1)
        return synthetic_shapes(count, num_classes, size=64, seed=seed)
    raise ValueError(f"unknown classification data spec {spec!r}; use 'tfds:NAME:DATA_DIR' or 'shapes[:K]'")


def describe_source(source: ClassificationSource) -> dict[str, Any]:
    """JSON-able record of a source for run folders."""
    return {"name": source.name, "num_classes": int(source.num_classes), "num_examples": len(source)}
