"""Layer factories and initialisation schemes shared by the backbone, the HR network and the head.

As in the Flax ImageNet example, each top-level module builds its conv and norm factories once
(`functools.partial` of `nn.Conv` / `BatchNorm` with its config's epsilon, momentum, dtype
and kernel initialiser) and hands them to its blocks, which only choose widths, kernels and
names. So the BatchNorm constants and the dtype are set in one place per part.

Initialisation schemes are kernel initialisers chosen by name (`kernel_inits`), passed into the
modules as `kernel_init` fields: `model.init`, `init_with_output`, `lazy_init`, `jax.eval_shape`
and use as a submodule all give the same values, since no `init` method is overridden.

Both kernel initialisers are normals with a per-kernel scale, so inside `pending_kernel_draws()`
they leave a `PendingNormal` (zeros and the scale) instead of drawing, and `draw_pending` then
fills every pending kernel from one normal sample. A network's init then compiles one random
draw instead of one per kernel (161 at phi -3). `training.state.create_train_state` compiles only
the sample and cuts the kernels from it on the host (`pending_slots`, `fill_pending_on_host`).
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import struct

from efficienthrnet.nn.batch_norm import BatchNorm
from efficienthrnet.nn.ops import conv_general, conv_kernel_init

ModuleDef = Any
Initializer = Callable[..., Any]

#: The reference's `init_weights` (run by get_pose_net before training): every conv and
#: transposed-conv kernel ~ N(0, 0.001^2), biases 0, BatchNorm scale 1 and bias 0.
REFERENCE_INIT_STD = 0.001
INIT_SCHEMES = ("reference", "he", "he_small_head")

_PENDING = contextvars.ContextVar("pending_kernel_draws", default=False)


class PendingNormal(struct.PyTreeNode, nn.meta.AxisMetadata):
    """A kernel whose N(0, std^2) draw is pending: zeros stand in until `draw_pending` fills it."""

    value: Any
    std: float = struct.field(pytree_node=False)

    def unbox(self) -> Any:
        return self.value

    def replace_boxed(self, val: Any) -> PendingNormal:
        return self.replace(value=val)

    def add_axis(self, index: int, params: dict[str, Any]) -> PendingNormal:
        return self

    def remove_axis(self, index: int, params: dict[str, Any]) -> PendingNormal:
        return self


@contextlib.contextmanager
def pending_kernel_draws() -> Iterator[None]:
    """While active (when a network is traced), the kernel initialisers defer their draws."""
    token = _PENDING.set(True)
    try:
        yield
    finally:
        _PENDING.reset(token)


def draw_pending(tree: Any, key: jax.Array) -> Any:
    """``tree`` with every `PendingNormal` replaced by its draw, all cut from one normal sample
    (in tree order, so the same key gives the same values)."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: isinstance(x, PendingNormal))
    pending = [i for i, leaf in enumerate(leaves) if isinstance(leaf, PendingNormal)]
    if pending:
        sizes = [leaves[i].value.size for i in pending]
        sample = jax.random.normal(key, (sum(sizes),), jnp.float32)
        starts = np.cumsum([0, *sizes])
        for i, start, end in zip(pending, starts[:-1], starts[1:], strict=True):
            box = leaves[i]
            leaves[i] = (sample[start:end].reshape(box.value.shape) * box.std).astype(box.value.dtype)
    return jax.tree.unflatten(treedef, leaves)


@dataclass(frozen=True)
class PendingSlot:
    """Where one pending kernel sits in a tree's leaves, and its cut of the shared sample."""

    leaf: int  # index among the tree's leaves (a `PendingNormal` counted as one leaf)
    start: int  # offset of its values in the sample
    shape: tuple[int, ...]
    std: float
    dtype: Any


def pending_slots(tree: Any) -> tuple[tuple[PendingSlot, ...], Any]:
    """The pending kernels of ``tree`` in leaf order (the order `draw_pending` cuts them in) and the
    tree with each replaced by its stand-in zeros."""
    leaves, treedef = jax.tree.flatten(tree, is_leaf=lambda x: isinstance(x, PendingNormal))
    slots, start = [], 0
    for i, leaf in enumerate(leaves):
        if isinstance(leaf, PendingNormal):
            slots.append(PendingSlot(i, start, tuple(leaf.value.shape), leaf.std, np.dtype(leaf.value.dtype)))
            start += leaf.value.size
            leaves[i] = leaf.value
    return tuple(slots), jax.tree.unflatten(treedef, leaves)


def fill_pending_on_host(tree: Any, slots: tuple[PendingSlot, ...], sample: Any) -> Any:
    """``tree`` (the zeros of `pending_slots`) with every slot cut from ``sample`` in NumPy.

    The same values as `draw_pending` with that sample (one float32 product each), but no program
    per kernel: compiled, the cutting was one XLA kernel per conv (193 at phi -2.46).
    """
    sample = np.asarray(sample)
    leaves, treedef = jax.tree.flatten(tree)
    for slot in slots:
        size = math.prod(slot.shape)
        if leaves[slot.leaf].shape != slot.shape or slot.start + size > sample.size:
            raise ValueError(f"pending slot {slot} does not fit the tree's leaf {leaves[slot.leaf].shape} "
                             f"or the sample of {sample.size} values; pass the tree `pending_slots` gave")
        cut = sample[slot.start:slot.start + size].reshape(slot.shape) * np.float32(slot.std)
        # The draw's own dtype first, then the leaf's (a float32 master copy of a bf16 init).
        leaves[slot.leaf] = jax.device_put(cut.astype(slot.dtype).astype(leaves[slot.leaf].dtype))
    return jax.tree.unflatten(treedef, leaves)


def _fan_out(shape: tuple[int, ...]) -> int:
    """Flax's fan_out of a conv kernel [*window, in, out]: out x the window size."""
    return shape[-1] * math.prod(shape[:-2])


def _deferrable(draw: Initializer, std_of: Callable[[tuple[int, ...]], float]) -> Initializer:
    """``draw`` itself, or a pending N(0, std_of(shape)^2) inside `pending_kernel_draws`."""

    def init(key, shape, dtype=jnp.float32):
        if _PENDING.get():
            return PendingNormal(jnp.zeros(shape, dtype), std_of(tuple(shape)))
        return draw(key, shape, dtype)

    return init


#: He-normal over fan_out, as EfficientNet/HRNet implementations initialise convolutions.
he_normal = _deferrable(conv_kernel_init, lambda shape: math.sqrt(2.0 / _fan_out(shape)))
reference_normal = _deferrable(nn.initializers.normal(REFERENCE_INIT_STD), lambda shape: REFERENCE_INIT_STD)


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
    """`nn.Conv` without bias (blocks ask for one by keyword) in `dtype`, kernels from `kernel_init`;
    pointwise convs run as matrix products on CPU (`ops.conv_general`)."""
    return functools.partial(
        nn.Conv, use_bias=False, dtype=dtype, kernel_init=kernel_init, conv_general_dilated=conv_general
    )


def norm_factory(eps: float, decay: float, train: bool, dtype: Any = jnp.float32) -> ModuleDef:
    """BatchNorm with a part's epsilon and momentum: batch statistics in training, the running
    averages otherwise. `batch_norm.BatchNorm` is flax's with a hand-written training backward."""
    return functools.partial(
        BatchNorm, use_running_average=not train, momentum=decay, epsilon=eps, dtype=dtype
    )
