"""Input pipelines: an infinite, shuffled, sharded, resumable training loader and an eval iterator.

Built on grain's dataset API (grain 0.2.18): a `MapDataset` over stream positions, mapped to
training examples, read with prefetch threads, optionally spread over worker processes
(`mp_prefetch`, which keeps element order), then batched in the consuming process.

Determinism: position p of the stream belongs to epoch p // n (n = samples per shard per
epoch); each epoch shuffles the whole dataset with rng (seed, epoch) and deals it out to the
shards by position; a sample's augmentation uses rng (seed, epoch, dataset index). So batches
depend only on (seed, shard, batch size), never on worker or thread counts, and a loader can
restart from any position without replaying data.

Loader state (`TrainLoader.get_state()`) is a small JSON-able dict of ints, e.g.
``{"version": 1, "position": 4096, "seed": 0, "batch_size": 8, "shard_index": 0,
"shard_count": 1, "num_samples": 118287}``. Store it as JSON (e.g. an orbax
`JsonSave`/`JsonRestore` item) and hand it back to `set_state` to resume.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import grain
import numpy as np

from efficienthrnet.config import NETWORK_STRIDE
from efficienthrnet.data.augment import (
    AffineParams,
    AugmentConfig,
    apply_affine,
    centered_params,
    draw_affine,
    normalize_image,
)
from efficienthrnet.data.coco import CocoKeypoints, PoseSample
from efficienthrnet.data.targets import DEFAULT_MAX_PEOPLE, DEFAULT_SIGMA, joint_indices, render_heatmaps
from efficienthrnet.keypoints import COCO17, KeypointSchema, get_schema

_STATE_VERSION = 1
# Far beyond any training run; grain's MapDataset needs a finite length.
_STREAM_LENGTH = 2**62


def output_sizes(input_size: int) -> tuple[int, int]:
    """The two target resolutions (1/4 and 1/2 of the square input)."""
    if input_size % NETWORK_STRIDE:
        raise ValueError(f"input_size {input_size} must be divisible by {NETWORK_STRIDE} "
                         f"(e.g. {input_size // NETWORK_STRIDE * NETWORK_STRIDE or NETWORK_STRIDE})")
    return input_size // 4, input_size // 2


def make_training_example(
    sample: PoseSample,
    params: AffineParams,
    input_size: int,
    schema: KeypointSchema = COCO17,
    augment: AugmentConfig = AugmentConfig(),
    max_people: int = DEFAULT_MAX_PEOPLE,
    sigma: float = DEFAULT_SIGMA,
) -> dict[str, np.ndarray]:
    """One training example (the contract's batch keys, without the batch axis)."""
    size4, size2 = output_sizes(input_size)
    warped = apply_affine(sample.image, sample.mask, sample.keypoints, params, input_size, (size4, size2), schema)
    kps4, kps2 = warped.keypoints
    return {
        "image": normalize_image(warped.image, augment),
        "heatmaps_4": render_heatmaps(kps4, size4, sigma),
        "heatmaps_2": render_heatmaps(kps2, size2, sigma),
        "mask_4": warped.masks[0],
        "mask_2": warped.masks[1],
        "joints_4": joint_indices(kps4, size4, max_people),
        "image_id": np.int64(sample.image_id),
    }


def _ensure_absl_flags_parsed() -> None:
    """grain's worker processes read absl flags; outside an absl app they were never parsed."""
    from absl import flags

    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _default_shard(shard_index: int | None, shard_count: int | None) -> tuple[int, int]:
    if shard_index is None or shard_count is None:
        import jax  # only when the caller leaves sharding to the JAX process layout

        shard_index = jax.process_index() if shard_index is None else shard_index
        shard_count = jax.process_count() if shard_count is None else shard_count
    if shard_count < 1 or not 0 <= shard_index < shard_count:
        raise ValueError(f"shard_index {shard_index} must lie in [0, shard_count={shard_count})")
    return shard_index, shard_count


@dataclass
class _PositionToExample:
    """Maps a stream position to its training example (picklable for worker processes)."""

    dataset: CocoKeypoints
    seed: int
    shard_index: int
    shard_count: int
    per_shard: int
    input_size: int
    schema: KeypointSchema
    augment: AugmentConfig
    max_people: int
    sigma: float

    def __post_init__(self):
        self._perm_epoch, self._perm = -1, None

    def dataset_index(self, position: int) -> tuple[int, int]:
        """(epoch, dataset index) of a stream position."""
        epoch, offset = divmod(position, self.per_shard)
        if epoch != self._perm_epoch:
            self._perm = np.random.default_rng([self.seed, epoch]).permutation(len(self.dataset))
            self._perm_epoch = epoch
        return epoch, int(self._perm[offset * self.shard_count + self.shard_index])

    def __call__(self, position: int) -> dict[str, np.ndarray]:
        epoch, index = self.dataset_index(position)
        sample = self.dataset[index]
        rng = np.random.default_rng([self.seed, epoch, index])
        height, width = sample.image.shape[:2]
        params = draw_affine(rng, height, width, self.augment)
        return make_training_example(
            sample, params, self.input_size, self.schema, self.augment, self.max_people, self.sigma
        )


def _open_dataset(spec_or_dataset: str | CocoKeypoints, split: str, schema: KeypointSchema, train: bool):
    if isinstance(spec_or_dataset, CocoKeypoints):
        return spec_or_dataset
    return CocoKeypoints.from_spec(spec_or_dataset, split, schema=schema, skip_images_without_people=train)


class PositionedLoader:
    """An infinite batch stream whose whole state is one position (plus the settings it checks).

    Element k of the stream is a pure function of (seed, k) (`element(k)`), so the position alone
    resumes it exactly, whatever the thread or worker count. Subclasses say how many samples the
    element reads from (`_num_samples`). `get_state()` / `set_state()` checkpoint the position;
    `close()` stops prefetch threads and worker processes.
    """

    def __init__(self, element, batch_size: int, num_threads: int, num_workers: int = 0):
        self._element = element
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.num_threads = num_threads
        self._position = 0
        self._iterator = None

    def _num_samples(self) -> int:
        raise NotImplementedError

    def _start(self) -> None:
        ds = grain.MapDataset.range(self._position, _STREAM_LENGTH).map(self._element)
        read = grain.ReadOptions(num_threads=self.num_threads, prefetch_buffer_size=max(2 * self.num_threads, 1))
        it_ds = ds.to_iter_dataset(read)
        if self.num_workers > 0:
            _ensure_absl_flags_parsed()
            it_ds = it_ds.mp_prefetch(
                grain.MultiprocessingOptions(num_workers=self.num_workers, per_worker_buffer_size=2)
            )
        self._iterator = iter(it_ds.batch(self.batch_size, drop_remainder=True))

    def __iter__(self):
        return self

    def __next__(self) -> dict[str, np.ndarray]:
        if self._iterator is None:
            self._start()
        batch = next(self._iterator)
        self._position += self.batch_size
        return batch

    def get_state(self) -> dict[str, int]:
        """JSON-able position of the stream (see the module docstring)."""
        e = self._element
        return {
            "version": _STATE_VERSION,
            "position": self._position,
            "seed": e.seed,
            "batch_size": self.batch_size,
            "shard_index": e.shard_index,
            "shard_count": e.shard_count,
            "num_samples": self._num_samples(),
        }

    def set_state(self, state: dict[str, int]) -> None:
        """Resume from a `get_state()` dict; the loader's settings must match the saved ones."""
        current = self.get_state()
        for key in ("version", "seed", "batch_size", "shard_index", "shard_count", "num_samples"):
            if state.get(key) != current[key]:
                raise ValueError(
                    f"loader state has {key}={state.get(key)!r} but this loader has {current[key]!r}; "
                    f"build the loader with the same settings (and dataset) as the saved run"
                )
        self.close()
        self._position = int(state["position"])

    def close(self) -> None:
        """Stop prefetching (and worker processes); the next batch restarts at the saved position."""
        if self._iterator is not None and hasattr(self._iterator, "close"):
            self._iterator.close()
        self._iterator = None


class TrainLoader(PositionedLoader):
    """Infinite iterator of training batches (dicts of numpy arrays, see the batch contract)."""

    def __init__(self, element: _PositionToExample, batch_size: int, num_workers: int, num_threads: int):
        super().__init__(element, batch_size, num_threads, num_workers)

    def _num_samples(self) -> int:
        return len(self._element.dataset)

    @property
    def steps_per_epoch(self) -> int:
        """Batches per pass over this shard (batches run on across epoch boundaries)."""
        return self._element.per_shard // self.batch_size


def build_train_loader(
    spec_or_dataset: str | CocoKeypoints,
    input_size: int,
    batch_size: int,
    seed: int,
    schema: KeypointSchema | str = COCO17,
    augment: AugmentConfig = AugmentConfig(),
    num_workers: int = 0,
    num_threads: int = 2,
    shard_index: int | None = None,
    shard_count: int | None = None,
    max_people: int = DEFAULT_MAX_PEOPLE,
    sigma: float = DEFAULT_SIGMA,
) -> TrainLoader:
    """Infinite training loader over a dataset spec ("coco:DIR" / "synthetic:DIR", split "train").

    Args:
      spec_or_dataset: dataset spec, or an opened `CocoKeypoints` (used as given).
      input_size: square crop side S (divisible by 32); targets are at S/4 and S/2.
      batch_size: per-process batch size.
      seed: shuffling and augmentation seed.
      num_workers: worker processes (0 = in this process); does not change the batches.
      num_threads: prefetch threads per process; does not change the batches.
      shard_index, shard_count: this process's shard; default jax.process_index()/process_count().
        Each epoch every shard gets len(dataset) // shard_count distinct samples.
    """
    schema = get_schema(schema)
    output_sizes(input_size)  # validates input_size
    if batch_size < 1:
        raise ValueError(f"batch_size {batch_size} must be >= 1")
    if num_workers < 0 or num_threads < 0:
        raise ValueError(f"num_workers {num_workers} and num_threads {num_threads} must be >= 0")
    if not 0 <= seed < 2**32:
        raise ValueError(f"seed {seed} must lie in [0, 2**32)")
    shard_index, shard_count = _default_shard(shard_index, shard_count)
    dataset = _open_dataset(spec_or_dataset, "train", schema, train=True)
    per_shard = len(dataset) // shard_count
    if per_shard == 0:
        raise ValueError(
            f"dataset {spec_or_dataset} has {len(dataset)} training images, fewer than shard_count {shard_count}"
        )
    element = _PositionToExample(
        dataset, seed, shard_index, shard_count, per_shard, input_size, schema, augment, max_people, sigma
    )
    return TrainLoader(element, batch_size, num_workers, num_threads)


def iterate_eval(
    spec_or_dataset: str | CocoKeypoints,
    split: str = "val",
    schema: KeypointSchema | str = COCO17,
    shard_index: int | None = None,
    shard_count: int | None = None,
    num_threads: int = 2,
) -> Iterator[PoseSample]:
    """Every image of a split (people or not), unaugmented, in image-id order, one `PoseSample` each.

    With sharding, shard i gets images i, i + shard_count, ... (together they cover the split).
    """
    schema = get_schema(schema)
    shard_index, shard_count = _default_shard(shard_index, shard_count)
    dataset = _open_dataset(spec_or_dataset, split, schema, train=False)
    ds = grain.MapDataset.source(dataset)[shard_index::shard_count]
    read = grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=max(2 * num_threads, 1))
    return iter(ds.to_iter_dataset(read))


def make_eval_example(
    sample: PoseSample,
    input_size: int,
    schema: KeypointSchema | str = COCO17,
    augment: AugmentConfig = AugmentConfig(),
    max_people: int = DEFAULT_MAX_PEOPLE,
) -> dict[str, np.ndarray]:
    """The deterministic no-augmentation example (centre crop, short side fits) of one sample."""
    height, width = sample.image.shape[:2]
    return make_training_example(
        sample, centered_params(height, width), input_size, get_schema(schema), augment, max_people
    )


def default_num_workers() -> int:
    """A worker count for this machine: one per spare CPU core, at most 8."""
    return max(0, min(8, (os.cpu_count() or 1) - 1))
