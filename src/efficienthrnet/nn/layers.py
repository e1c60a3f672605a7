"""Layer factories and initialisation schemes shared by the backbone, the HR network and the head.

As in the Flax ImageNet example, each top-level module builds its conv and norm factories once
(`functools.partial` of `nn.Conv` / `nn.BatchNorm` with its config's epsilon, momentum, dtype
and kernel initialiser) and hands them to its blocks, which only choose widths, kernels and
names. So the BatchNorm constants and the dtype are set in one place per part.

Initialisation schemes are kernel initialisers chosen by name (`kernel_inits`), passed into the
modules as `kernel_init` fields: `model.init`, `init_with_output`, `lazy_init`, `jax.eval_shape`
and use as a submodule all give the same values, since no `init` method is overridden.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from efficienthrnet.nn.ops import conv_kernel_init

ModuleDef = Any
Initializer = Callable[..., Any]

#: The reference's `init_weights` (run by get_pose_net before training): every conv and
#: transposed-conv kernel ~ N(0, 0.001^2), biases 0, BatchNorm scale 1 and bias 0.
REFERENCE_INIT_STD = 0.001
INIT_SCHEMES = ("reference", "he", "he_small_head")

#: He-normal over fan_out, as EfficientNet/HRNet implementations initialise convolutions.
he_normal = conv_kernel_init
reference_normal = nn.initializers.normal(REFERENCE_INIT_STD)


@dataclass(frozen=True)
class KernelInits:
    """Kernel initialisers of one scheme: `body` for every conv and transposed conv except the
    head's output convs (`final_*`), which get `output`. Biases start at 0, BatchNorm at scale 1
    / bias 0 in every scheme (Flax's defaults, as the reference)."""

    body: Initializer
    output: Initializer


def kernel_inits(scheme: str) -> KernelInits:
    """The initialisers of an init scheme name (one of `INIT_SCHEMES`).

    "reference": every kernel N(0, 0.001^2), as the authors' training; "he": He-normal (fan-out)
    everywhere; "he_small_head": He-normal except the output convs, N(0, 0.001^2), so that the
    untrained network predicts near-zero heatmaps with He-scaled features.
    """
    if scheme == "reference":
        return KernelInits(reference_normal, reference_normal)
    if scheme == "he":
        return KernelInits(he_normal, he_normal)
    if scheme == "he_small_head":
        return KernelInits(he_normal, reference_normal)
    raise ValueError(f"init_scheme={scheme!r} is not a known scheme; use one of {INIT_SCHEMES}")


def conv_factory(dtype: Any = jnp.float32, kernel_init: Initializer = he_normal) -> ModuleDef:
    """`nn.Conv` without bias (blocks ask for one by keyword) in `dtype`, kernels from `kernel_init`."""
    return functools.partial(nn.Conv, use_bias=False, dtype=dtype, kernel_init=kernel_init)


def norm_factory(eps: float, decay: float, train: bool, dtype: Any = jnp.float32) -> ModuleDef:
    """`nn.BatchNorm` with a part's epsilon and momentum: batch statistics in training, the running
    averages otherwise."""
    return functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=decay, epsilon=eps, dtype=dtype
    )
