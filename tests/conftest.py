"""Shared test fixtures."""

from __future__ import annotations

import contextlib

import jax
import pytest


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
