"""Golden parity: the reference H-4 PyTorch model's weights, converted, reproduce its outputs and
backbone taps in float32 (square 384 and non-square 256x320 inputs)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_file
from efficienthrnet.convert import variables_from_torch
from efficienthrnet.nn import EfficientHRNet
from efficienthrnet.scaling import generate_config

GOLDEN = "reference/golden/h-4_reference_outputs.npz"  # in the shared folder; skipped without it
TOLERANCE = 1e-4  # of the reference tensor's max magnitude


@pytest.fixture(scope="module")
def golden():
    with np.load(shared_file(GOLDEN)) as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def model_and_variables(golden):
    cfg = generate_config(-4, rule="reference")
    state = {k.removeprefix("param/"): v for k, v in golden.items() if k.startswith("param/")}
    return EfficientHRNet(cfg), variables_from_torch(state, cfg)


def _nhwc(a: np.ndarray) -> np.ndarray:
    return a.transpose(0, 2, 3, 1)


def _relative_error(got, want) -> float:
    return float(np.max(np.abs(np.asarray(got) - want)) / np.max(np.abs(want)))


@pytest.mark.parametrize("name", ["x1", "x2"])
def test_outputs_match_reference(golden, model_and_variables, name):
    model, variables = model_and_variables
    x = jnp.asarray(_nhwc(golden[f"input/{name}"]))
    out4, out2 = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    want4, want2 = _nhwc(golden[f"output/{name}/0"]), _nhwc(golden[f"output/{name}/1"])
    assert out4.shape == want4.shape and out2.shape == want2.shape
    assert _relative_error(out4, want4) < TOLERANCE
    assert _relative_error(out2, want2) < TOLERANCE


def test_backbone_taps_match_reference(golden, model_and_variables):
    model, variables = model_and_variables
    x = jnp.asarray(_nhwc(golden["input/x1"]))
    taps = jax.jit(lambda v, x: model.apply(v, x, method=EfficientHRNet.backbone_taps))(variables, x)
    for i, tap in enumerate(taps):
        want = _nhwc(golden[f"tap/x1/{i}"])
        assert tap.shape == want.shape
        assert _relative_error(tap, want) < TOLERANCE
