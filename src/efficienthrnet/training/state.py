"""The train state (params, BatchNorm statistics, optimizer state, step, dropout key) and how it starts."""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import optax
from flax.training import train_state

from efficienthrnet.nn.layers import PendingSlot, fill_pending_on_host, pending_kernel_draws, pending_slots

COMPUTE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
# XLA options of the one-off state initialisation on CPU (see compiled_state_builder).
INIT_COMPILER_OPTIONS = {"xla_backend_optimization_level": 0}
# fold_in of the init key that seeds the one sample all kernels are cut from.
PENDING_DRAW_STREAM = 1


class TrainState(train_state.TrainState):
    """flax's TrainState plus BatchNorm statistics and the base PRNG key of dropout.

    The key never changes: step k uses ``fold_in(rng, k)``, so a resumed run draws the same
    dropout masks as an uninterrupted one.
    """

    batch_stats: Any = None
    rng: jax.Array = None


def cast_floating(tree: Any, dtype) -> Any:
    """Cast the floating leaves of a pytree (the compute-dtype copy of float32 params)."""
    return jax.tree.map(lambda a: a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a, tree)


def create_train_state(model: nn.Module, input_size: int, tx: optax.GradientTransformation, seed: int) -> TrainState:
    """Params and batch statistics initialised from ``seed`` at a square input, plus the optimizer state.

    ``tx`` should be one cached object per optimizer setting: it is a static part of the state,
    so equal objects let the seeds of a sweep share the compiled init and step.
    """
    init_key, dropout_key = jax.random.split(jax.random.PRNGKey(seed))
    build, slots = compiled_state_builder(model, input_size, tx)
    state, sample = build(init_key, dropout_key)
    return state.replace(params=fill_pending_on_host(state.params, slots, sample))


@functools.lru_cache(maxsize=8)
def compiled_state_builder(model: nn.Module, size: int, tx: optax.GradientTransformation
                           ) -> tuple[Callable, tuple[PendingSlot, ...]]:
    """(init_key, dropout_key) -> (TrainState with zero kernels, their normal sample), compiled once
    per model, input size and optimizer, and the slots that say where each kernel is cut from.

    One jitted function does it all but the kernels: run eagerly, the optimizer's init compiles
    one tiny program per parameter leaf. The kernels come from one normal sample
    (`nn.layers.draw_pending`): one inlined random-number program per kernel made most of the
    compile (README "Benchmarks", startup.py), and cutting the sample inside the program still
    compiled one kernel per conv, so the cutting runs in NumPy (`fill_pending_on_host`), with the
    same values. It runs once per run, so on CPU it is compiled without LLVM optimisation.
    """
    found: list[tuple[PendingSlot, ...]] = []

    def build(init_key, dropout_key):
        with pending_kernel_draws():  # one random draw for all kernels, not one per kernel
            variables = model.init(init_key, jnp.zeros((1, size, size, 3), jnp.float32), train=False)
        slots, params = pending_slots(variables["params"])
        if len(pending_slots(variables)[0]) != len(slots):
            raise ValueError("a kernel initialiser deferred a draw outside the 'params' collection; only "
                             "parameters may use the pending initialisers of nn.layers")
        found.append(slots)
        total = sum(math.prod(slot.shape) for slot in slots)
        sample = jax.random.normal(jax.random.fold_in(init_key, PENDING_DRAW_STREAM), (total,), jnp.float32)
        state = TrainState.create(
            apply_fn=model.apply,
            # Params stay float32 whatever the compute dtype: the step casts its own copy.
            params=cast_floating(params, jnp.float32),
            batch_stats=variables.get("batch_stats", {}),
            tx=tx,
            rng=dropout_key,
        )
        # A strongly typed step, as a restored checkpoint has: otherwise the first step after a
        # resume sees another input type and compiles again.
        return state.replace(step=jnp.asarray(state.step, jnp.int32)), sample

    key = jax.random.PRNGKey(0)
    options = INIT_COMPILER_OPTIONS if jax.default_backend() == "cpu" else None
    compiled = jax.jit(build).lower(key, key).compile(compiler_options=options)
    return compiled, found[0]
