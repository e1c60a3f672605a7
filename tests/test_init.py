"""Kernel initialisation: all kernels cut from one pending normal sample, each at its own scale."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from flax import traverse_util

from efficienthrnet import train as T
from efficienthrnet.nn.layers import (
    PendingNormal,
    draw_pending,
    fill_pending_on_host,
    he_normal,
    pending_kernel_draws,
    pending_slots,
    reference_normal,
)
from efficienthrnet.scaling import generate_config
from efficienthrnet.training.state import PENDING_DRAW_STREAM, cast_floating

KEY = jax.random.PRNGKey(0)


def test_initialisers_draw_as_flax_outside_and_defer_inside_pending_draws():
    shape = (3, 3, 16, 64)
    flax_he = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
    np.testing.assert_array_equal(he_normal(KEY, shape), flax_he(KEY, shape))
    np.testing.assert_array_equal(reference_normal(KEY, shape), nn.initializers.normal(0.001)(KEY, shape))
    with pending_kernel_draws():
        pending = he_normal(KEY, shape)
    assert isinstance(pending, PendingNormal)
    assert pending.std == pytest.approx(math.sqrt(2.0 / (3 * 3 * 64)))
    assert not np.any(pending.value)
    assert not isinstance(he_normal(KEY, shape), PendingNormal)  # the context is left behind


def test_draw_pending_gives_each_kernel_its_scale_from_one_sample():
    with pending_kernel_draws():
        tree = {"big": he_normal(KEY, (3, 3, 16, 64)), "head": reference_normal(KEY, (1, 1, 64, 34)),
                "bias": jnp.ones(5)}
    drawn = draw_pending(tree, KEY)
    assert np.std(drawn["big"]) == pytest.approx(math.sqrt(2.0 / (3 * 3 * 64)), rel=0.05)
    assert np.std(drawn["head"]) == pytest.approx(0.001, rel=0.1)
    assert abs(float(np.mean(drawn["big"]))) < 0.01
    np.testing.assert_array_equal(drawn["bias"], np.ones(5))
    np.testing.assert_array_equal(draw_pending(tree, KEY)["big"], drawn["big"])  # same key, same values
    assert not np.array_equal(draw_pending(tree, jax.random.PRNGKey(1))["big"], drawn["big"])


def test_kernels_cut_on_the_host_equal_the_compiled_cut_bit_for_bit():
    with pending_kernel_draws():
        tree = {"big": he_normal(KEY, (3, 3, 16, 64)), "bias": jnp.ones(5), "head": reference_normal(KEY, (1, 1, 64, 34))}
    slots, zeros = pending_slots(tree)
    assert [s.shape for s in slots] == [(3, 3, 16, 64), (1, 1, 64, 34)]
    assert [s.start for s in slots] == [0, 3 * 3 * 16 * 64]
    assert not np.any(zeros["big"]) and not isinstance(zeros["big"], PendingNormal)
    sample = jax.random.normal(KEY, (sum(math.prod(s.shape) for s in slots),), jnp.float32)
    host = fill_pending_on_host(zeros, slots, sample)
    compiled = draw_pending(tree, KEY)  # the same sample: draw_pending draws it from KEY
    for name in tree:
        np.testing.assert_array_equal(np.asarray(host[name]), np.asarray(compiled[name]), err_msg=name)
    with pytest.raises(ValueError, match="does not fit"):
        fill_pending_on_host(zeros, slots, sample[:100])


def test_train_state_params_equal_the_in_program_draw_of_every_kernel():
    """create_train_state cuts the kernels on the host; the values are those of drawing them in
    the init program (`draw_pending`) to a few float32 units in the last place: compiled, XLA fuses the
    scale into the sampler's arithmetic, which rounds a few values differently."""
    config = T.TrainConfig(input_size=64, init_scheme="he_small_head", seed=3)
    model_config = T.effective_model_config(generate_config(-5), config)
    model = T.build_model(model_config, config.compute_dtype, config.init_scheme)
    init_key, _ = jax.random.split(jax.random.PRNGKey(config.seed))

    @jax.jit
    def in_program(key):
        with pending_kernel_draws():
            variables = model.init(key, jnp.zeros((1, 64, 64, 3), jnp.float32), train=False)
        drawn = draw_pending(variables, jax.random.fold_in(key, PENDING_DRAW_STREAM))
        return cast_floating(drawn["params"], jnp.float32)

    expected = traverse_util.flatten_dict(jax.device_get(in_program(init_key)), sep="/")
    got = traverse_util.flatten_dict(jax.device_get(T.create_train_state(model, model_config, config).params), sep="/")
    assert got.keys() == expected.keys()
    assert sum(k.endswith("kernel") for k in got) > 50
    for name, value in expected.items():
        assert got[name].dtype == value.dtype, name
        np.testing.assert_allclose(got[name], value, rtol=1e-6, atol=0, err_msg=name)


def test_train_state_kernels_are_drawn_at_their_scheme_scales():
    config = T.TrainConfig(input_size=64, init_scheme="he_small_head", seed=0)
    model_config = T.effective_model_config(generate_config(-4), config)
    model = T.build_model(model_config, config.compute_dtype, config.init_scheme)
    params = traverse_util.flatten_dict(jax.device_get(T.create_train_state(model, model_config, config).params),
                                        sep="/")
    assert not any(isinstance(v, PendingNormal) for v in params.values())
    kernels = {k: v for k, v in params.items() if k.endswith("kernel") and v.size >= 2000}
    assert len(kernels) > 20
    for name, kernel in kernels.items():
        expected = 0.001 if "/final" in name else math.sqrt(2.0 / (kernel.shape[-1] * math.prod(kernel.shape[:-2])))
        assert np.std(kernel) == pytest.approx(expected, rel=0.15), name
    scales = [v for k, v in params.items() if k.endswith("scale")]
    assert scales and all(np.all(s == 1.0) for s in scales)  # BatchNorm starts at 1 / 0 as before
    other = T.create_train_state(model, model_config, T.TrainConfig(input_size=64, init_scheme="he_small_head", seed=1))
    first = next(iter(kernels))
    assert not np.array_equal(traverse_util.flatten_dict(jax.device_get(other.params), sep="/")[first], kernels[first])
