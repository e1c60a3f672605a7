"""Shared test fixtures."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax
import pytest


def _shared_dir() -> Path:
    """The project's shared folder (reference outputs, COCO samples): $EFFICIENTHRNET_SHARED, else
    ../shared beside the checkout, else /work/shared."""
    candidates = [os.environ.get("EFFICIENTHRNET_SHARED"), Path(__file__).resolve().parents[2] / "shared",
                  "/work/shared"]
    for candidate in candidates:
        if candidate and (Path(candidate) / "reference").is_dir():
            return Path(candidate)
    raise FileNotFoundError(
        f"the shared folder (reference/golden, data/coco_sample) was not found in {candidates[1:]}; "
        "set EFFICIENTHRNET_SHARED to its path"
    )


SHARED = _shared_dir()


@contextlib.contextmanager
def xla_optimizations_off():
    """Compile without most XLA optimisations: for tests that count or compare, not time."""
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    try:
        yield
    finally:
        jax.config.update("jax_disable_most_optimizations", previous)


@pytest.fixture
def fast_compile():
    with xla_optimizations_off():
        yield
