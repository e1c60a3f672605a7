"""The paper's classification recipe as data: `ClassifyConfig`, its learning-rate schedule and its SGD.

SGD with momentum 0.9 and weight decay 1e-4 (added to the gradients, as PyTorch's SGD does), five
warm-up epochs rising linearly from 1e-4 to 0.05, then the rate times 0.1 every 30 epochs counted
from the end of the warm-up (paper section 4.1.2). Used by `efficienthrnet.classify`.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax.numpy as jnp
import optax

from efficienthrnet.config import ModelConfig
from efficienthrnet.data.classification import ClassificationAugment
from efficienthrnet.training.state import COMPUTE_DTYPES as _DTYPES

# --------------------------------------------------------------------------------------- config


@dataclass(frozen=True)
class ClassifyConfig:
    """Everything about a classification run that is not the architecture.

    Attributes:
      epochs: length of the run in passes over the training data (paper: 5 warm-up + 195).
      steps_per_epoch: optimizer steps per epoch; None takes len(train data) // batch_size.
      batch_size: global batch over all devices.
      learning_rate: peak rate, reached at the end of the warm-up (paper 0.05).
      warmup_epochs: linear warm-up length (paper 5); 0 starts at the peak.
      warmup_start_lr: rate at step 0 of the warm-up (paper 1e-4).
      decay_every_epochs: the rate is multiplied by `decay_factor` every this many epochs after
        the warm-up (paper 30, factor 0.1).
      momentum, nesterov: SGD momentum (paper 0.9, classical momentum).
      weight_decay: L2 penalty added to the gradients, as PyTorch's SGD does (paper 1e-4).
      decay_norm_and_bias: apply the weight decay to BatchNorm scales/biases and biases too (as
        PyTorch's SGD does by default); False decays only conv and dense kernels.
      label_smoothing: 0 = plain cross-entropy.
      resolution: square input side; None takes the config's `classifier_resolution` (224 x 1.15^phi).
      augment: random crop + flip ranges and the evaluation crop.
      random_augment: draw random crops and flips in training (False: central crops only).
      eval_every_epochs: evaluate on the held-out data this often; None only at the end.
      precise_bn_batches: before each evaluation and at the end of the run, replace the BatchNorm
        running averages by the mean batch statistics of this many training batches under the
        current weights (pycls's "precise BN"; the stored checkpoint keeps them). Short runs need
        it: running averages lag behind fast-moving weights. 0 keeps the running averages.
      eval_batch_size: batch of the evaluation (the last batch is padded, never dropped).
      eval_max_examples: evaluate on the first N held-out examples (the paper used 10,000 of
        ImageNet's); None uses all.
      checkpoint_every: save every this many steps (and always at the end).
      keep_checkpoints: how many recent checkpoints to keep.
      log_every: write a metrics line every this many steps (and at the end).
      seed: parameter init, dropout and data order.
      compute_dtype: "float32" or "bfloat16" activations (params and loss stay float32).
      depthwise_impl: the backbone's depthwise convolution ("auto" picks the fastest per backend).
      num_threads: input-pipeline threads.
      progress: show a tqdm progress bar.
    """

    epochs: float = 200.0
    steps_per_epoch: int | None = None
    batch_size: int = 128
    learning_rate: float = 0.05
    warmup_epochs: float = 5.0
    warmup_start_lr: float = 1e-4
    decay_every_epochs: float = 30.0
    decay_factor: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 1e-4
    decay_norm_and_bias: bool = True
    label_smoothing: float = 0.0
    resolution: int | None = None
    augment: ClassificationAugment = field(default_factory=ClassificationAugment)
    random_augment: bool = True
    eval_every_epochs: float | None = None
    precise_bn_batches: int = 0
    eval_batch_size: int = 100
    eval_max_examples: int | None = None
    checkpoint_every: int = 1000
    keep_checkpoints: int = 3
    log_every: int = 50
    seed: int = 0
    compute_dtype: str = "float32"
    depthwise_impl: str = "auto"
    num_threads: int = 4
    progress: bool = True

    def __post_init__(self):
        from efficienthrnet.config import check_finite

        check_finite(self, "ClassifyConfig")  # first: NaN passes every range comparison below
        for name in ("batch_size", "eval_batch_size", "checkpoint_every", "keep_checkpoints", "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"ClassifyConfig.{name}={value!r} must be an integer >= 1")
        for name in ("steps_per_epoch", "resolution", "eval_max_examples"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ValueError(f"ClassifyConfig.{name}={value!r} must be an integer >= 1 or None")
        if not isinstance(self.precise_bn_batches, int) or self.precise_bn_batches < 0:
            raise ValueError(
                f"ClassifyConfig.precise_bn_batches={self.precise_bn_batches!r} must be an integer >= 0"
            )
        if not self.epochs > 0:
            raise ValueError(f"ClassifyConfig.epochs={self.epochs!r} must be > 0")
        if not self.learning_rate > 0 or not 0 < self.warmup_start_lr <= self.learning_rate:
            raise ValueError(
                f"ClassifyConfig learning rates must satisfy 0 < warmup_start_lr "
                f"({self.warmup_start_lr}) <= learning_rate ({self.learning_rate})"
            )
        if self.warmup_epochs < 0 or not self.decay_every_epochs > 0 or not 0 < self.decay_factor <= 1:
            raise ValueError(
                f"ClassifyConfig: need warmup_epochs >= 0 ({self.warmup_epochs}), decay_every_epochs > 0 "
                f"({self.decay_every_epochs}) and decay_factor in (0, 1] ({self.decay_factor})"
            )
        if not 0 <= self.momentum < 1 or self.weight_decay < 0:
            raise ValueError(
                f"ClassifyConfig: momentum {self.momentum} must lie in [0, 1) and weight_decay "
                f"{self.weight_decay} must be >= 0"
            )
        if not 0 <= self.label_smoothing < 1:
            raise ValueError(f"ClassifyConfig.label_smoothing={self.label_smoothing} must lie in [0, 1)")
        if self.eval_every_epochs is not None and not self.eval_every_epochs > 0:
            raise ValueError(f"ClassifyConfig.eval_every_epochs={self.eval_every_epochs} must be > 0 or None")
        if self.compute_dtype not in _DTYPES:
            raise ValueError(
                f"ClassifyConfig.compute_dtype={self.compute_dtype!r}; choose one of {list(_DTYPES)}"
            )

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["augment"] = self.augment.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ClassifyConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"ClassifyConfig: unknown field(s) {sorted(unknown)}; known: {sorted(known)}")
        kwargs = dict(d)
        if isinstance(kwargs.get("augment"), Mapping):
            kwargs["augment"] = ClassificationAugment.from_dict(dict(kwargs["augment"]))
        return cls(**kwargs)


def input_resolution(model_config: ModelConfig, config: ClassifyConfig) -> int:
    """The square input side trained and evaluated at: the override or the config's classifier resolution."""
    return config.resolution or model_config.backbone.classifier_resolution


# ------------------------------------------------------------------------------- optimisation


def learning_rate_schedule(config: ClassifyConfig, steps_per_epoch: int) -> optax.Schedule:
    """Linear warm-up from `warmup_start_lr` to `learning_rate`, then step decay, in steps."""
    warmup = int(round(config.warmup_epochs * steps_per_epoch))
    decay_every = max(1, int(round(config.decay_every_epochs * steps_per_epoch)))
    start, peak = config.warmup_start_lr, config.learning_rate

    def schedule(step):
        step = jnp.asarray(step, jnp.float32)
        warm = start + (peak - start) * step / max(warmup, 1)
        decayed = peak * config.decay_factor ** jnp.floor(jnp.maximum(step - warmup, 0.0) / decay_every)
        return jnp.where(step < warmup, warm, decayed)

    return schedule


def _decay_mask(params: Any) -> Any:
    """True for conv and dense kernels (the leaves named "kernel")."""
    from flax import traverse_util

    return traverse_util.path_aware_map(lambda path, _: path[-1] == "kernel", params)


def make_optimizer(config: ClassifyConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum on the schedule; L2 weight decay added to the gradients first (PyTorch style)."""
    return _optimizer(_optimizer_key(config), steps_per_epoch)


def _optimizer_key(config: ClassifyConfig) -> ClassifyConfig:
    """The config with only the optimizer's fields kept, so runs that share them share compiled steps."""
    names = (
        "learning_rate",
        "warmup_epochs",
        "warmup_start_lr",
        "decay_every_epochs",
        "decay_factor",
        "momentum",
        "nesterov",
        "weight_decay",
        "decay_norm_and_bias",
        "label_smoothing",
    )
    return ClassifyConfig(**{name: getattr(config, name) for name in names})


# Cached so that equal settings give the *same* optimizer object: the train state's tree structure
# (which holds it) then matches and jax reuses the compiled step across runs in one process.
@functools.lru_cache(maxsize=16)
def _optimizer(config: ClassifyConfig, steps_per_epoch: int) -> optax.GradientTransformation:
    sgd = optax.sgd(
        learning_rate_schedule(config, steps_per_epoch),
        momentum=config.momentum or None,
        nesterov=config.nesterov,
    )
    if config.weight_decay == 0:
        return sgd
    mask = None if config.decay_norm_and_bias else _decay_mask
    return optax.chain(optax.add_decayed_weights(config.weight_decay, mask), sgd)
