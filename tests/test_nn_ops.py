"""The convolution primitives: both depthwise implementations agree (outputs and gradients),
pointwise convs as matmuls on CPU, TF-SAME padding, PyTorch ConvTranspose2d semantics against a direct scatter oracle, drop-connect,
nearest upsampling."""

from __future__ import annotations

import itertools
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficienthrnet.nn.ops import (
    IM2COL_MAX_IN_CHANNELS,
    conv_general,
    conv_transpose_torch,
    depthwise_conv2d,
    drop_connect,
    native_convolutions,
    resolve_depthwise_impl,
    tf_same_padding,
    torch_padding,
    upsample_nearest,
)

pytestmark = pytest.mark.usefixtures("fast_compile")


def test_tf_same_padding_matches_reference_values():
    assert tf_same_padding(3, 2) == (0, 1)
    assert tf_same_padding(5, 2) == (1, 2)
    assert tf_same_padding(3, 1) == (1, 1)
    assert tf_same_padding(5, 1) == (2, 2)
    assert tf_same_padding(1, 2) == (0, 0)


def test_auto_impl_is_shifted_on_cpu_native_elsewhere_and_bad_name_raises():
    expected = "shifted" if jax.default_backend() == "cpu" else "native"
    assert resolve_depthwise_impl("auto") == expected
    assert resolve_depthwise_impl("native") == "native"
    with native_convolutions():
        assert resolve_depthwise_impl("auto") == "native"
        assert resolve_depthwise_impl("shifted") == "shifted"
    with pytest.raises(ValueError, match="fancy"):
        resolve_depthwise_impl("fancy")


@pytest.mark.parametrize("kernel, stride, size", list(itertools.product((3, 5), (1, 2), ((8, 8), (9, 7)))))
def test_depthwise_impls_agree_in_outputs_and_gradients(kernel, stride, size):
    kx, kw, kg = jax.random.split(jax.random.key(kernel * 10 + stride), 3)
    x = jax.random.normal(kx, (2, *size, 5))
    w = jax.random.normal(kw, (kernel, kernel, 1, 5))
    pad = tf_same_padding(kernel, stride)
    padding = (pad, pad)

    @jax.jit
    def run_native(x, w):
        return run("native", x, w)

    @jax.jit
    def run_shifted(x, w):
        return run("shifted", x, w)

    def run(impl, x, w):
        out, vjp = jax.vjp(lambda x, w: depthwise_conv2d(x, w, (stride, stride), padding, impl), x, w)
        cotangent = jax.random.normal(kg, out.shape)
        return out, vjp(cotangent)

    (out_n, (gx_n, gw_n)), (out_s, (gx_s, gw_s)) = run_native(x, w), run_shifted(x, w)
    expected_hw = tuple((n + sum(pad) - kernel) // stride + 1 for n in size)
    assert out_n.shape == out_s.shape == (2, *expected_hw, 5)
    np.testing.assert_allclose(out_s, out_n, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gx_s, gx_n, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gw_s, gw_n, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "kernel, stride, size, convention",
    [
        (3, 1, (7, 5), "torch"),
        (5, 1, (9, 6), "torch"),
        (3, 2, (9, 11), "torch"),
        (5, 2, (7, 8), "torch"),
        (3, 1, (6, 19), "tf"),  # output rows >= k*k: the kernel grad reduces along rows first
        (5, 2, (11, 57), "tf"),
        (1, 2, (5, 6), "tf"),  # a 1x1 stride-2 kernel: three input-grad phases receive nothing
    ],
)
def test_shifted_depthwise_gradient_under_jit_matches_native(kernel, stride, size, convention):
    """The hand-written backward of the CPU form against XLA's grouped conv, through jit(grad)."""
    kx, kw, kt = jax.random.split(jax.random.key(kernel + 7 * stride + size[1]), 3)
    x = jax.random.normal(kx, (2, *size, 3))
    w = jax.random.normal(kw, (kernel, kernel, 1, 3))
    pad = tf_same_padding(kernel, stride) if convention == "tf" else torch_padding(kernel)
    out_hw = tuple((n + sum(pad) - kernel) // stride + 1 for n in size)
    target = jax.random.normal(kt, (2, *out_hw, 3))

    def loss(impl, x, w):
        out = depthwise_conv2d(x, w, (stride, stride), (pad, pad), impl)
        return jnp.sum(jnp.tanh(out) * target)

    grad = {impl: jax.jit(jax.grad(partial(loss, impl), argnums=(0, 1)))(x, w) for impl in ("native", "shifted")}
    np.testing.assert_allclose(grad["shifted"][0], grad["native"][0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grad["shifted"][1], grad["native"][1], rtol=1e-5, atol=1e-4)


def test_shifted_depthwise_backward_saves_only_its_inputs():
    """Autodiff of the k*k taps kept each tap's product for the backward; the custom VJP keeps x and w."""
    x, w = jnp.ones((1, 8, 8, 4)), jnp.ones((3, 3, 1, 4))
    _, vjp = jax.vjp(lambda x, w: depthwise_conv2d(x, w, (1, 1), ((1, 1), (1, 1)), "shifted"), x, w)
    saved = [leaf for leaf in jax.tree_util.tree_leaves(vjp) if hasattr(leaf, "shape")]
    assert sorted(leaf.size for leaf in saved) == [w.size, x.size]


def test_depthwise_matches_direct_loop_with_asymmetric_padding():
    x = np.random.default_rng(0).normal(size=(1, 6, 6, 2)).astype(np.float32)
    w = np.random.default_rng(1).normal(size=(3, 3, 1, 2)).astype(np.float32)
    out = np.asarray(depthwise_conv2d(x, w, (2, 2), ((0, 1), (0, 1)), "shifted"))
    xp = np.pad(x, ((0, 0), (0, 1), (0, 1), (0, 0)))
    expected = np.zeros((1, 3, 3, 2), np.float32)
    for i, j, c in itertools.product(range(3), range(3), range(2)):
        expected[0, i, j, c] = np.sum(xp[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3, c] * w[:, :, 0, c])
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)


def test_depthwise_rejects_wrong_kernel_layout():
    with pytest.raises(ValueError, match=r"\[kh, kw, 1, C\]"):
        depthwise_conv2d(jnp.zeros((1, 4, 4, 3)), jnp.zeros((3, 3, 3, 1)))


def _torch_conv_transpose_oracle(x, w_iohw, stride, padding, output_padding):
    """ConvTranspose2d by definition: every input pixel scatters weight * value into the output."""
    b, h, wd, _cin = x.shape
    _, cout, k, _ = w_iohw.shape
    full_h, full_w = (h - 1) * stride + k, (wd - 1) * stride + k
    full = np.zeros((b, full_h + output_padding, full_w + output_padding, cout))
    for i, j in itertools.product(range(h), range(wd)):
        full[:, i * stride : i * stride + k, j * stride : j * stride + k] += np.einsum(
            "bc,cohw->bhwo", x[:, i, j], w_iohw
        )
    out_h = (h - 1) * stride - 2 * padding + k + output_padding
    out_w = (wd - 1) * stride - 2 * padding + k + output_padding
    return full[:, padding : padding + out_h, padding : padding + out_w]


@pytest.mark.parametrize("k, p, op, size", [(4, 1, 0, (5, 6)), (3, 1, 1, (4, 4)), (2, 0, 0, (3, 5))])
def test_conv_transpose_matches_pytorch_definition(k, p, op, size):
    rng = np.random.default_rng(k)
    x = rng.normal(size=(2, *size, 3)).astype(np.float32)
    w_iohw = rng.normal(size=(3, 4, k, k)).astype(np.float32)  # an asymmetric kernel catches a missing flip
    out = conv_transpose_torch(jnp.asarray(x), jnp.asarray(w_iohw.transpose(2, 3, 0, 1)), 2, p, op)
    expected = _torch_conv_transpose_oracle(x, w_iohw, 2, p, op)
    assert out.shape == (2, 2 * size[0], 2 * size[1], 4) == expected.shape
    np.testing.assert_allclose(out, expected, rtol=1e-4, atol=1e-4)


NHWC = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(
    "kernel,strides,padding,groups,channels",
    [(1, (1, 1), "SAME", 1, 8), (1, (1, 1), ((0, 0), (0, 0)), 1, 8), (1, (2, 2), "SAME", 1, 8),
     (3, (1, 1), ((1, 1), (1, 1)), 1, 8), (1, (1, 1), ((1, 0), (0, 1)), 1, 8), (1, (1, 1), "SAME", 2, 8),
     # few input channels: the patches' dot on CPU (the stem's TF-same and torch paddings, odd sizes)
     (3, (2, 2), ((0, 1), (0, 1)), 1, 3), (3, (2, 2), ((1, 1), (1, 1)), 1, 3), (5, (1, 2), ((2, 1), (0, 2)), 1, 2)],
)
def test_conv_general_matches_lax_conv_in_values_and_gradients(kernel, strides, padding, groups, channels):
    rng = np.random.default_rng(kernel + strides[0] + groups)
    x = jnp.asarray(rng.normal(size=(2, 7, 5, channels)), jnp.float32)
    k = jnp.asarray(rng.normal(size=(kernel, kernel, channels // groups, 6)), jnp.float32)
    out = jnp.asarray(rng.normal(size=jax.eval_shape(
        lambda: jax.lax.conv_general_dilated(x, k, strides, padding, dimension_numbers=NHWC,
                                             feature_group_count=groups)).shape), jnp.float32)

    def loss(conv, x, k):
        y = conv(x, k, strides, padding, dimension_numbers=NHWC, feature_group_count=groups)
        return jnp.sum(y * out), y

    (_, ours), ours_grads = jax.value_and_grad(partial(loss, conv_general), (0, 1), has_aux=True)(x, k)
    (_, lax_y), lax_grads = jax.value_and_grad(partial(loss, jax.lax.conv_general_dilated), (0, 1),
                                               has_aux=True)(x, k)
    np.testing.assert_allclose(ours, lax_y, rtol=1e-5, atol=1e-5)
    for g, h in zip(ours_grads, lax_grads, strict=True):
        np.testing.assert_allclose(g, h, rtol=1e-5, atol=1e-5)


def test_conv_general_is_a_dot_only_for_pointwise_and_narrow_input_convs_on_cpu():
    primitives = lambda k, padding="SAME", channels=3, **kw: {e.primitive.name for e in jax.make_jaxpr(
        lambda x, k: conv_general(x, k, (1, 1), padding, dimension_numbers=NHWC, **kw))(
        jnp.ones((1, 4, 4, channels)), k).eqns}
    pointwise = primitives(jnp.ones((1, 1, 3, 2)))
    on_cpu = jax.default_backend() == "cpu"
    assert ("dot_general" in pointwise) == on_cpu and ("conv_general_dilated" in pointwise) != on_cpu
    narrow = primitives(jnp.ones((3, 3, 3, 2)), ((1, 1), (1, 1)))
    assert ("dot_general" in narrow) == on_cpu and ("conv_general_dilated" in narrow) != on_cpu
    wide = 2 * IM2COL_MAX_IN_CHANNELS
    assert "conv_general_dilated" in primitives(jnp.ones((3, 3, wide, 2)), ((1, 1), (1, 1)), channels=wide)
    assert "conv_general_dilated" in primitives(jnp.ones((3, 3, 3, 2)))  # "SAME": left to lax
    with native_convolutions():  # export: every conv stays one lax conv
        assert primitives(jnp.ones((1, 1, 3, 2))) == {"conv_general_dilated"}
    assert "conv_general_dilated" in primitives(jnp.ones((1, 1, 3, 2)), rhs_dilation=(2, 2))
    nchw = {e.primitive.name for e in jax.make_jaxpr(lambda x, k: conv_general(
        x, k, (1, 1), "SAME", dimension_numbers=("NCHW", "OIHW", "NCHW")))(jnp.ones((1, 3, 4, 4)),
                                                                            jnp.ones((2, 3, 1, 1))).eqns}
    assert nchw == {"conv_general_dilated"}


def test_drop_connect_drops_whole_samples_and_rescales():
    x = jnp.ones((64, 2, 2, 3))
    out = np.asarray(drop_connect(x, 0.25, jax.random.key(0)))
    per_sample = out.reshape(64, -1)
    # each sample is either all zero or all 1 / keep_prob
    kept = per_sample[per_sample[:, 0] != 0]
    np.testing.assert_allclose(kept, 1 / 0.75, rtol=1e-6)
    assert np.all(per_sample.min(axis=1) == per_sample.max(axis=1))
    dropped = int(np.sum(per_sample[:, 0] == 0))
    assert 4 <= dropped <= 30  # Binomial(64, 0.25): mean 16


def test_upsample_nearest_repeats_pixels():
    x = jnp.arange(6.0).reshape(1, 2, 3, 1)
    out = np.asarray(upsample_nearest(x, 2))[0, :, :, 0]
    np.testing.assert_array_equal(out, np.repeat(np.repeat(np.arange(6.0).reshape(2, 3), 2, 0), 2, 1))
