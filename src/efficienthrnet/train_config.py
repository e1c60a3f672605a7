"""`TrainConfig`: everything about a pose training run that is not the architecture, checked when
made; and `effective_model_config`, the architecture at the run's (proxy) input size."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from efficienthrnet.config import NETWORK_STRIDE, ModelConfig, check_finite
from efficienthrnet.data.augment import AugmentConfig
from efficienthrnet.data.targets import DEFAULT_SIGMA
from efficienthrnet.losses import PUSH_LOSSES, LossWeights
from efficienthrnet.training.state import COMPUTE_DTYPES


@dataclass(frozen=True)
class TrainConfig:
    """Everything about a training run that is not the architecture.

    Attributes:
      steps: optimizer updates in the whole run (the schedule is laid out over these).
      batch_size: global batch (all devices, all hosts); must divide by the device count.
      learning_rate: peak Adam learning rate (reference 1e-3).
      decay_fractions: fractions of ``steps`` at which the rate is multiplied by ``decay_factor``
        (reference: epochs 200 and 260 of 300).
      decay_factor: multiplier at each decay boundary (reference 0.1).
      warmup_steps: linear warm-up from 0 over this many steps (reference: none).
      weight_decay: 0 builds Adam as the reference does (it ignores its configured 1e-4);
        > 0 builds AdamW with this decoupled decay.
      freeze_backbone: give the backbone parameters zero updates (the reference always does).
      compute_dtype: "float32" or "bfloat16" for activations; params, optimizer and loss stay float32.
      loss_weights: multipliers of the loss terms.
      push_loss: associative-embedding push form, "exp" (the reference's default) or "max"
        (the reference's other form; see `efficienthrnet.losses`).
      init_scheme: how the pose model's kernels start: "reference" (N(0, 0.001^2), as the
        authors train), "he", or "he_small_head" (see `efficienthrnet.nn.model.EfficientHRNet`).
      checkpoint_every: save every this many steps (and always at the end).
      keep_checkpoints: how many of the most recent checkpoints to keep.
      log_every: write a metrics line every this many steps (and at the end).
      seed: seeds parameter init, dropout and the input pipeline.
      input_size: square training input size replacing the model config's (multiple of NETWORK_STRIDE),
        for cheap proxy runs of the fully convolutional network; None keeps the config's.
      data: default dataset spec ("synthetic:DIR" or "coco:DIR") when `train` gets none.
      num_workers: input pipeline worker processes (0 = in the main process).
      max_people: people slots per image in the tag targets (reference 30).
      distributed: call ``jax.distributed.initialize()`` first (multi-host); the environment
        variable EFFICIENTHRNET_DISTRIBUTED=1 does the same.
      progress: show a tqdm progress bar.
      augment: the random affine of the input pipeline (reference ranges by default; narrower
        ranges make short proxy runs learn faster).
      heatmap_sigma: standard deviation, in map pixels, of the Gaussian target of each joint on
        both heatmap resolutions (reference 2).
    """

    steps: int = 1000
    batch_size: int = 8
    learning_rate: float = 1e-3
    decay_fractions: tuple[float, ...] = (2 / 3, 13 / 15)
    decay_factor: float = 0.1
    warmup_steps: int = 0
    weight_decay: float = 0.0
    freeze_backbone: bool = False
    compute_dtype: str = "float32"
    loss_weights: LossWeights = field(default_factory=LossWeights)
    push_loss: str = "exp"
    init_scheme: str = "reference"
    checkpoint_every: int = 500
    keep_checkpoints: int = 3
    log_every: int = 10
    seed: int = 0
    input_size: int | None = None
    data: str | None = None
    num_workers: int = 0
    max_people: int = 30
    distributed: bool = False
    progress: bool = True
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    heatmap_sigma: float = DEFAULT_SIGMA

    def __post_init__(self):
        check_finite(self, "TrainConfig")  # first: NaN passes every range comparison below
        positive = ("steps", "batch_size", "checkpoint_every", "keep_checkpoints", "log_every", "max_people")
        for name in positive:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= 1")
        for name in ("warmup_steps", "num_workers"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 0:
                raise ValueError(f"TrainConfig.{name}={value!r} must be an integer >= 0")
        if not self.heatmap_sigma > 0:
            raise ValueError(f"TrainConfig.heatmap_sigma={self.heatmap_sigma!r} must be > 0 (map pixels; reference 2)")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate={self.learning_rate!r} must be > 0")
        if self.weight_decay < 0:
            raise ValueError(
                f"TrainConfig.weight_decay={self.weight_decay!r} must be >= 0 (0 = Adam as the reference)"
            )
        if any(not 0 < f < 1 for f in self.decay_fractions) or list(self.decay_fractions) != sorted(
            self.decay_fractions
        ):
            raise ValueError(
                f"TrainConfig.decay_fractions={self.decay_fractions!r} must be increasing fractions in (0, 1)"
            )
        from efficienthrnet.nn.model import INIT_SCHEMES  # imported on use, as in build_model

        if self.init_scheme not in INIT_SCHEMES:
            raise ValueError(f"TrainConfig.init_scheme={self.init_scheme!r}; choose one of {list(INIT_SCHEMES)}")
        if self.push_loss not in PUSH_LOSSES:
            raise ValueError(f"TrainConfig.push_loss={self.push_loss!r}; choose one of {list(PUSH_LOSSES)}")
        if self.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(
                f"TrainConfig.compute_dtype={self.compute_dtype!r}; choose one of {list(COMPUTE_DTYPES)}"
            )
        if self.input_size is not None and (self.input_size < NETWORK_STRIDE or self.input_size % NETWORK_STRIDE):
            raise ValueError(f"TrainConfig.input_size={self.input_size!r} must be a multiple of {NETWORK_STRIDE} "
                             "(the network stride), or None")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["decay_fractions"] = list(self.decay_fractions)
        d["loss_weights"] = self.loss_weights.to_dict()
        d["augment"] = {k: list(v) if isinstance(v, tuple) else v for k, v in d["augment"].items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"TrainConfig: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        kwargs = dict(d)
        if "decay_fractions" in kwargs:
            kwargs["decay_fractions"] = tuple(kwargs["decay_fractions"])
        if isinstance(kwargs.get("loss_weights"), Mapping):
            kwargs["loss_weights"] = LossWeights.from_dict(kwargs["loss_weights"])
        if isinstance(kwargs.get("augment"), Mapping):
            kwargs["augment"] = AugmentConfig(**{k: tuple(v) if isinstance(v, list) else v
                                                 for k, v in kwargs["augment"].items()})
        return cls(**kwargs)


def effective_model_config(model_config: ModelConfig, train_config: TrainConfig) -> ModelConfig:
    """The model config trained on: the given one, at ``train_config.input_size`` if set."""
    if train_config.input_size is None:
        return model_config
    return model_config.with_input_size(train_config.input_size)
