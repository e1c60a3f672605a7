"""One optimizer update, whatever the task: the task gives the loss on the model's outputs."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from efficienthrnet.training.state import COMPUTE_DTYPES, TrainState, cast_floating

#: XLA options of the train step on CPU. LLVM level 1 instead of the default 3: measured with
#: benchmarks/startup.py (--opt-level, φ -4 @256 batch 8, four alternating pairs on the 2-core VM)
#: the step compiles in 28.8 s instead of 33.2 s on average, and steps were no slower (1.46-1.65 s
#: against 1.63-1.68 s). Level 0 compiles faster still but makes steps 1.6x slower.
STEP_COMPILER_OPTIONS = {"xla_backend_optimization_level": 1}

#: loss_fn(model outputs, batch) -> (scalar loss, {name: scalar}) of one task.
LossFn = Callable[[object, Mapping[str, jax.Array]], tuple[jax.Array, dict[str, jax.Array]]]


def train_step(
    state: TrainState,
    batch: Mapping[str, jax.Array],
    *,
    loss_fn: LossFn,
    compute_dtype: str = "float32",
    schedule: optax.Schedule | None = None,
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Forward in train mode on ``batch["image"]``, loss, gradients, update, new BN statistics.

    Not jitted itself (`jit_step` does it with the shardings). Returns the new state and scalar
    metrics: the loss, the task's parts and, given the schedule, the learning rate used.
    """
    dtype = COMPUTE_DTYPES[compute_dtype]
    dropout_key = jax.random.fold_in(state.rng, state.step)

    def objective(params):
        variables = {"params": cast_floating(params, dtype), "batch_stats": state.batch_stats}
        outputs, updates = state.apply_fn(
            variables,
            batch["image"].astype(dtype),
            train=True,
            mutable=["batch_stats"],
            rngs={"dropout": dropout_key},
        )
        loss, parts = loss_fn(outputs, batch)
        return loss, (parts, updates["batch_stats"])

    (loss, (parts, new_stats)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
    # BN statistics come back in the compute dtype when the model keeps it; store them as before.
    new_stats = jax.tree.map(lambda new, old: new.astype(old.dtype), new_stats, state.batch_stats)
    new_state = state.apply_gradients(grads=grads, batch_stats=new_stats)
    metrics = {"loss": loss, **parts}
    if schedule is not None:
        metrics["learning_rate"] = schedule(state.step)
    return new_state, metrics


def jit_step(step: Callable, mesh: Mesh) -> Callable:
    """``step(state, batch)`` jitted for the mesh: state replicated and donated, batch split on "data".

    Callers cache the result per the settings the step reads, so that runs in one process
    (resume, a sweep's seeds, tests) reuse the compiled step.
    """
    replicated = NamedSharding(mesh, P())
    return jax.jit(
        step,
        in_shardings=(replicated, NamedSharding(mesh, P("data"))),
        out_shardings=(replicated, replicated),
        donate_argnums=0,
        compiler_options=STEP_COMPILER_OPTIONS if mesh.devices.flat[0].platform == "cpu" else None,
    )
