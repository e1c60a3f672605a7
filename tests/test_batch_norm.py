"""The hand-written BatchNorm backward (`nn.batch_norm`) against flax's BatchNorm under autodiff."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

from efficienthrnet.nn import layers
from efficienthrnet.nn.batch_norm import BatchNorm, batch_norm_train

pytestmark = pytest.mark.usefixtures("fast_compile")


def _data(shape=(4, 6, 5, 7), seed=0):
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.normal(size=shape) * 3 + 1, jnp.float32)
    g = jnp.asarray(rng.normal(size=shape), jnp.float32)
    return x, g


def _train_apply(cls, x, g, dtype, **kwargs):
    """Loss <BN(x), g>, its gradients in params and x, and the updated batch statistics."""
    module = cls(use_running_average=False, momentum=0.9, epsilon=1e-3, dtype=dtype)
    stats = module.init(jax.random.key(0), x)["batch_stats"]
    channels = x.shape[-1]
    params = {"scale": jnp.linspace(0.5, 2.0, channels), "bias": jnp.linspace(-1.0, 1.0, channels)}

    def loss(params, x):
        y, updates = module.apply({"params": params, "batch_stats": stats}, x.astype(dtype),
                                  mutable=["batch_stats"], **kwargs)
        return (y.astype(jnp.float32) * g).sum(), (y, updates["batch_stats"])

    (value, (y, new_stats)), grads = jax.jit(jax.value_and_grad(loss, (0, 1), has_aux=True))(params, x)
    return value, y, new_stats, grads


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_training_outputs_statistics_and_gradients_match_flax(dtype):
    x, g = _data()
    ours = _train_apply(BatchNorm, x, g, dtype)
    flax_ = _train_apply(nn.BatchNorm, x, g, dtype)
    value, y, stats, (g_params, g_x) = ours
    f_value, f_y, f_stats, (f_params, f_x) = flax_
    assert y.dtype == f_y.dtype == dtype
    # Same forward expression: the same numbers.
    np.testing.assert_array_equal(np.asarray(y, np.float32), np.asarray(f_y, np.float32))
    for name in ("mean", "var"):
        np.testing.assert_array_equal(stats[name], f_stats[name])
    assert float(value) == float(f_value)
    tol = 1e-5 if dtype == jnp.float32 else 2e-2
    for name in ("scale", "bias"):
        np.testing.assert_allclose(g_params[name], f_params[name], rtol=tol, atol=tol * 10)
    scale = float(jnp.abs(f_x).max())
    np.testing.assert_allclose(np.asarray(g_x), np.asarray(f_x), rtol=0, atol=tol * scale)


def test_statistics_outputs_have_their_own_gradients():
    """A loss that also reads the batch mean and variance differentiates through them exactly."""
    x, g = _data((3, 4, 4, 5), seed=1)
    scale, bias = jnp.linspace(0.5, 1.5, 5), jnp.linspace(-0.2, 0.2, 5)

    def reference(x, scale, bias):
        mean = x.mean((0, 1, 2))
        var = jnp.maximum(0.0, (x * x).mean((0, 1, 2)) - mean * mean)
        return (x - mean) * (jax.lax.rsqrt(var + 1e-3) * scale) + bias, mean, var

    def loss(fn, x, scale, bias):
        y, mean, var = fn(x, scale, bias)
        return (y * g).sum() + (mean * jnp.arange(5.0)).sum() + (var * jnp.arange(5.0, 0, -1)).sum()

    ours = jax.grad(lambda *a: loss(lambda x, s, b: batch_norm_train(x, s, b, 1e-3), *a), (0, 1, 2))(x, scale, bias)
    theirs = jax.grad(lambda *a: loss(reference, *a), (0, 1, 2))(x, scale, bias)
    for a, b in zip(ours, theirs, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_inference_and_masked_batches_use_flax_code():
    x, g = _data()
    module = BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-3)
    variables = nn.BatchNorm(use_running_average=True, epsilon=1e-3).init(jax.random.key(0), x)
    variables = jax.tree.map(lambda v: v + 0.25, variables)
    np.testing.assert_array_equal(module.apply(variables, x),
                                  nn.BatchNorm(use_running_average=True, epsilon=1e-3).apply(variables, x))
    mask = jnp.arange(x.shape[0])[:, None, None, None] < 3
    ours = _train_apply(BatchNorm, x, g, jnp.float32, mask=mask)
    flax_ = _train_apply(nn.BatchNorm, x, g, jnp.float32, mask=mask)
    np.testing.assert_array_equal(ours[1], flax_[1])
    np.testing.assert_array_equal(ours[3][1], flax_[3][1])


def test_is_a_flax_batch_norm_with_the_same_variables():
    x, _ = _data()
    ours = BatchNorm(use_running_average=False).init(jax.random.key(0), x)
    theirs = nn.BatchNorm(use_running_average=False).init(jax.random.key(0), x)
    assert isinstance(BatchNorm(), nn.BatchNorm)
    assert jax.tree.structure(ours) == jax.tree.structure(theirs)
    for a, b in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs), strict=True):
        np.testing.assert_array_equal(a, b)


def test_backbone_loss_and_gradients_match_flax_batch_norm(monkeypatch):
    """The φ -4 backbone (its 30 BatchNorms, stem to last block): each BatchNorm swapped for flax's gives
    the same loss and gradients. (The HR network and head build their norms from the same factory.)"""
    from efficienthrnet.nn.efficientnet import EfficientNet
    from efficienthrnet.nn.layers import he_normal
    from efficienthrnet.scaling import generate_config

    model = EfficientNet(generate_config(-4).backbone, kernel_init=he_normal)  # He scale: outputs ~1
    x = jax.random.normal(jax.random.key(1), (2, 64, 64, 3))
    variables = jax.jit(lambda k: model.init(k, x, train=False))(jax.random.key(0))

    def loss_and_grads():
        def loss(params):
            outputs, _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                      rngs={"dropout": jax.random.key(2)})
            return sum(jnp.mean(jnp.square(o)) for o in jax.tree.leaves(outputs))
        return jax.jit(jax.value_and_grad(loss))(variables["params"])

    value, grads = loss_and_grads()
    monkeypatch.setattr(layers, "BatchNorm", nn.BatchNorm)
    f_value, f_grads = loss_and_grads()
    assert float(value) == pytest.approx(float(f_value), rel=1e-6)
    flat, f_flat = jax.tree.leaves(grads), jax.tree.leaves(f_grads)
    assert len(flat) == len(f_flat) > 50
    # Leaves whose true gradient is ~0 (e.g. a bias under a later BatchNorm) hold only float32
    # noise in both, so the bound is relative to the whole gradient, leaf by leaf and overall.
    scale = max(float(jnp.abs(b).max()) for b in f_flat)
    for a, b in zip(flat, f_flat, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-4 * scale)
    diff = np.sqrt(sum(float(jnp.sum(jnp.square(a - b))) for a, b in zip(flat, f_flat, strict=True)))
    norm = np.sqrt(sum(float(jnp.sum(jnp.square(b))) for b in f_flat))
    assert diff / norm < 1e-5


@pytest.mark.parametrize("train", [True, False])
def test_one_module_call_per_use(train):
    """Interceptors (export's BatchNorm folding) and `capture_intermediates` see each use once."""
    x, _ = _data()
    module = BatchNorm(use_running_average=not train)
    variables = module.init(jax.random.key(0), x)
    _, state = module.apply(variables, x, capture_intermediates=True, mutable=["intermediates", "batch_stats"])
    assert len(jax.tree.leaves(state["intermediates"])) == 1
    calls = []

    def count(next_fun, args, kwargs, context):
        calls.append(context.method_name)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(count):
        module.apply(variables, x, mutable=["batch_stats"])
    assert calls == ["__call__"]
