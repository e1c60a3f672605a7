"""Data parallelism through ``jax.jit`` on sharded arrays: the mesh, batch sharding, replication.

A one-axis `Mesh` ("data") over every device of every host; the batch is split along it and the
train state replicated. BatchNorm then reduces over the global batch with no extra code, and one
device is the same code path with a mesh of one.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

#: Environment variable that asks for ``jax.distributed.initialize()`` (multi-host runs).
DISTRIBUTED_ENV = "EFFICIENTHRNET_DISTRIBUTED"


def maybe_initialize_distributed(requested: bool = False) -> bool:
    """Start multi-host JAX when asked (or EFFICIENTHRNET_DISTRIBUTED=1 is set); True if started."""
    wanted = requested or os.environ.get(DISTRIBUTED_ENV, "") not in ("", "0")
    if not wanted:
        return False
    if not jax.distributed.is_initialized():
        # Coordinator address, process count and id come from the cluster environment (SLURM,
        # TPU pods, or JAX_COORDINATOR_ADDRESS / JAX_NUM_PROCESSES / JAX_PROCESS_ID).
        jax.distributed.initialize()
    return True


def make_mesh(devices: list | None = None) -> Mesh:
    """A one-axis ("data") mesh over the given devices, by default every device of every host.

    The same devices give the same Mesh object (equal meshes do not hash equal), so that the
    cached jitted step is found again.
    """
    return _mesh_of(tuple(jax.devices() if devices is None else devices))


@functools.lru_cache(maxsize=8)
def _mesh_of(devices: tuple) -> Mesh:
    return Mesh(np.asarray(devices), ("data",))


def check_batch_divisible(batch_size: int, mesh: Mesh) -> None:
    """Refuse a global batch that does not split evenly over the devices and hosts."""
    n = mesh.size
    if batch_size % n:
        lower, upper = (batch_size // n) * n, (batch_size // n + 1) * n
        hint = f"{lower} or {upper}" if lower else f"{upper}"
        raise ValueError(f"batch_size {batch_size} does not divide evenly over {n} devices; use {hint}")
    if batch_size % jax.process_count():
        raise ValueError(f"batch_size {batch_size} does not divide over {jax.process_count()} hosts")


def shard_batch(batch: Mapping[str, np.ndarray], mesh: Mesh, keys: Sequence[str]) -> dict[str, jax.Array]:
    """Host batch (this process's share) -> global arrays split along "data", for the given keys only
    (the rest, e.g. "image_id", stay on the host)."""
    sharding = NamedSharding(mesh, P("data"))
    missing = [k for k in keys if k not in batch]
    if missing:
        raise KeyError(
            f"training batch lacks {missing}; it has {sorted(batch)} (see the data pipeline contract)"
        )
    return {k: jax.make_array_from_process_local_data(sharding, np.asarray(batch[k])) for k in keys}


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Place every leaf of a pytree on all devices of the mesh (params, optimizer state, ...)."""
    return jax.device_put(tree, NamedSharding(mesh, P()))
