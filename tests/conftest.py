"""Shared test fixtures."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import jax
import pytest

TEST_DATA = Path(__file__).resolve().parent / "data"
COCO_SAMPLE = TEST_DATA / "coco_sample"  # 4 real COCO images + annotations, kept in the repository


def _shared_dir() -> Path | None:
    """The project's shared folder of large reference artefacts (golden parity vectors), or None.

    $EFFICIENTHRNET_SHARED when set (a folder without reference/ then means "absent", so the
    skips can be tested), else ../shared beside the checkout. Tests that need it skip without it.
    """
    env = os.environ.get("EFFICIENTHRNET_SHARED")
    candidate = Path(env) if env else Path(__file__).resolve().parents[2] / "shared"
    return candidate if (candidate / "reference").is_dir() else None


SHARED = _shared_dir()


def shared_file(relative: str) -> Path:
    """A file of the shared folder; skips the calling test (reason shown by -ra) when the folder is absent.

    With the folder present a missing file is an error, so CI, which has the folder, cannot skip silently.
    """
    if SHARED is None:
        pytest.skip(f"needs {relative} from the shared reference folder: set EFFICIENTHRNET_SHARED "
                    "or put it at ../shared beside the checkout")
    path = SHARED / relative
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing from the shared folder {SHARED}")
    return path


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
