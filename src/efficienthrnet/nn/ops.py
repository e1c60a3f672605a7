"""Convolution primitives that are fast on every backend and match PyTorch semantics exactly.

- `depthwise_conv2d`: XLA's CPU backend runs `feature_group_count` convolutions about 30x slower
  than PyTorch on the same cores, while the same operation written as k*k shifted multiply-adds
  is an order of magnitude faster. Its backward is written by hand (`jax.custom_vjp`): autodiff of
  the taps saved k*k products and was up to 3.4x slower than PyTorch's backward (issue 14); the input
  gradient is again shifted taps (flipped kernel, one stride-1 conv per stride phase) and the
  kernel gradient one variadic reduction. On GPU/TPU the native grouped convolution is the fast
  one. The implementation is chosen per backend (``impl="auto"``) or explicitly.
- `conv_general`: `lax.conv_general_dilated`, except that a pointwise (1x1, stride 1, ungrouped,
  unpadded) convolution runs as one 2-D matrix product on CPU. XLA's CPU convolution of a 1x1
  kernel was 1.8-5.9x slower forward+backward than that dot on seven backbone shapes
  (`benchmarks/pointwise.py`), and pointwise convs hold most of an EfficientNet's MACs. On GPU/TPU,
  and inside `native_convolutions()` (export), the native convolution is kept. A conv of an input
  with at most `IM2COL_MAX_IN_CHANNELS` channels (the RGB stem) runs on CPU as one dot of its
  k*k-tap patches: XLA's CPU convolution of the 3-channel 3x3 stride-2 stem at 8x256x256 took
  51 ms forward and 30 ms for the kernel gradient, the patches' dot 14 and 13 ms. Wider 3x3 convs
  stay native: as nine shifted dots or as im2col they were slower (14 channels at 64x64: 13 ms
  against 4.6 ms forward).
- `conv_transpose_torch`: ``torch.nn.ConvTranspose2d`` semantics (padding, output padding and the
  spatial kernel flip), so converted reference weights give the same numbers.
- `tf_same_padding` / `torch_padding`: the two padding conventions the reference mixes.

Kernel layouts (all NHWC activations):
- regular conv: HWIO, as `flax.linen.Conv`;
- depthwise conv: [kh, kw, 1, C] (HWIO with one input channel per group, as flax's grouped Conv);
- transposed conv: [kh, kw, in, out] in PyTorch's orientation (not flipped); the flip happens here.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

DEPTHWISE_IMPLS = ("auto", "native", "shifted")

Padding = tuple[tuple[int, int], tuple[int, int]]

# He-normal over fan_out, as EfficientNet/HRNet implementations initialise convolutions.
conv_kernel_init = nn.initializers.variance_scaling(2.0, "fan_out", "normal")


def tf_same_padding(kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow 'SAME' padding for one axis whose size is divisible by the stride.

    Total pad is max(k - s, 0); the left/top side gets the floor half, the right/bottom the rest
    (so k3 s2 pads (0, 1) and k5 s2 pads (1, 2)), as the reference's explicit zero-pad does.
    """
    total = max(kernel - stride, 0)
    return total // 2, total - total // 2


def torch_padding(kernel: int) -> tuple[int, int]:
    """PyTorch `padding=k // 2`: symmetric on both sides of an axis."""
    return kernel // 2, kernel // 2


_NATIVE = contextvars.ContextVar("native_convolutions", default=False)


@contextlib.contextmanager
def native_convolutions() -> Iterator[None]:
    """While active (when a network is traced), every conv is the native `lax` one on any backend:
    for export, where a pointwise conv must stay one ONNX `Conv` rather than an Einsum with
    transposes around it."""
    token = _NATIVE.set(True)
    try:
        yield
    finally:
        _NATIVE.reset(token)


def resolve_depthwise_impl(impl: str = "auto") -> str:
    """'native' (grouped lax conv) on GPU/TPU and inside `native_convolutions()`, 'shifted'
    (multiply-adds) on CPU, unless forced."""
    if impl not in DEPTHWISE_IMPLS:
        raise ValueError(f"depthwise impl {impl!r} is not one of {DEPTHWISE_IMPLS}")
    if impl != "auto":
        return impl
    return "shifted" if jax.default_backend() == "cpu" and not _NATIVE.get() else "native"


def _check_depthwise_args(x: jax.Array, kernel: jax.Array) -> None:
    if x.ndim != 4:
        raise ValueError(f"depthwise_conv2d expects NHWC input, got shape {x.shape}")
    if kernel.ndim != 4 or kernel.shape[2] != 1 or kernel.shape[3] != x.shape[3]:
        raise ValueError(
            f"depthwise kernel must be [kh, kw, 1, C] with C = {x.shape[3]} input channels, "
            f"got shape {kernel.shape}"
        )


def _depthwise_native(x, kernel, strides, padding):
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        window_strides=strides,
        padding=padding,
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=x.shape[3],
    )


def _shifted_taps(xp, kernel, strides, out_hw):
    """Sum over the kh*kw taps of a strided window of the (already padded) `xp` times the tap's weights."""
    kh, kw = kernel.shape[:2]
    acc = None
    for dy in range(kh):
        for dx in range(kw):
            term = _window(xp, dy, dx, strides, out_hw) * kernel[dy, dx, 0]
            acc = term if acc is None else acc + term
    return acc


def _window(xp, dy, dx, strides, out_hw):
    """The [B, out_h, out_w, C] strided view of `xp` that tap (dy, dx) multiplies."""
    sy, sx = strides
    out_h, out_w = out_hw
    return jax.lax.slice(
        xp,
        (0, dy, dx, 0),
        (xp.shape[0], dy + sy * (out_h - 1) + 1, dx + sx * (out_w - 1) + 1, xp.shape[3]),
        (1, sy, sx, 1),
    )


def _pad(x, padding):
    """Zero-pad (or, for negative amounts, crop) the two spatial axes of NHWC `x`."""
    zero = jnp.zeros((), x.dtype)
    return jax.lax.pad(x, zero, ((0, 0, 0), (*padding[0], 0), (*padding[1], 0), (0, 0, 0)))


def _out_hw(x_shape, kernel_shape, strides, padding):
    return tuple(
        (n + lo + hi - k) // s + 1
        for n, k, s, (lo, hi) in zip(x_shape[1:3], kernel_shape[:2], strides, padding, strict=True)
    )


@partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _depthwise_shifted(x, kernel, strides, padding):
    """Depthwise conv as k*k shifted multiply-adds, with a hand-written backward (see `_shifted_bwd`)."""
    return _shifted_taps(_pad(x, padding), kernel, strides, _out_hw(x.shape, kernel.shape, strides, padding))


def _shifted_fwd(x, kernel, strides, padding):
    # Only the inputs are saved: autodiff of the taps would keep k*k products alive instead.
    return _depthwise_shifted(x, kernel, strides, padding), (x, kernel)


def _shifted_bwd(strides, padding, residuals, g):
    x, kernel = residuals
    return _input_grad(g, kernel, x.shape, strides, padding), _kernel_grad(g, x, kernel.shape, strides, padding)


def _input_grad(g, kernel, x_shape, strides, padding):
    """d(out)/d(x) applied to `g`: the transposed depthwise conv, itself written as shifted taps.

    Padded-input row p = s*i + dy receives g[i] * w[dy]. Rows of one phase r = p mod s only see
    the taps dy = r, r + s, ..., so each of the s*s phases is a stride-1 shifted conv of `g` with
    the flipped sub-kernel w[ry::s, rx::s]; the phases interleave back into the padded input's
    grid, which is then cropped to x. No multiply touches the zeros a dilated `g` would carry.
    """
    sy, sx = strides
    kh, kw = kernel.shape[:2]
    (pt, _), (pl, _) = padding
    h, w = x_shape[1:3]
    if (sy, sx) == (1, 1):
        # One phase; the crop to x folds into g's padding (negative amounts crop).
        pad = ((kh - 1 - pt, h - g.shape[1] + pt), (kw - 1 - pl, w - g.shape[2] + pl))
        return _shifted_taps(_pad(g, pad), kernel[::-1, ::-1], (1, 1), (h, w))
    rows = -(-(h + sum(padding[0])) // sy)  # phase grid covers the padded input
    cols = -(-(w + sum(padding[1])) // sx)
    phases = []
    for ry in range(sy):
        row = []
        for rx in range(sx):
            sub = kernel[ry::sy, rx::sx][::-1, ::-1]
            if sub.shape[0] == 0 or sub.shape[1] == 0:
                row.append(jnp.zeros((g.shape[0], rows, cols, g.shape[3]), g.dtype))
                continue
            pad = ((sub.shape[0] - 1, rows - g.shape[1]), (sub.shape[1] - 1, cols - g.shape[2]))
            row.append(_shifted_taps(_pad(g, pad), sub, (1, 1), (rows, cols)))
        phases.append(jnp.stack(row, axis=3))  # [B, rows, cols, sx, C]
    grid = jnp.stack(phases, axis=2)  # [B, rows, sy, cols, sx, C]
    grid = grid.reshape(g.shape[0], rows * sy, cols * sx, g.shape[3])
    return grid[:, pt : pt + h, pl : pl + w]


def _kernel_grad(g, x, kernel_shape, strides, padding):
    """d(out)/d(kernel) applied to `g`: per tap, the sum over batch and space of window * g.

    All taps are summed in one variadic reduction, so `g` and the input are read once rather
    than once per tap. When output rows are at least as long as the tap count it first reduces
    along rows only and then over batch and height: each row stays in cache while every channel
    accumulates (a whole-map reduction per channel streams the map from memory again for each
    group of channels, 2-4x slower measured on CPU); on short rows the row partials would
    outweigh the input, so it reduces the whole map at once.
    """
    kh, kw = kernel_shape[:2]
    xp = _pad(x, padding)
    out_hw = g.shape[1:3]
    products = tuple(_window(xp, dy, dx, strides, out_hw) * g for dy in range(kh) for dx in range(kw))
    rows_first = out_hw[1] >= kh * kw
    partials = _sum_all(products, (2,) if rows_first else (0, 1, 2))
    taps = jnp.stack(partials)  # [k*k, B, H, C] or [k*k, C]
    if rows_first:
        taps = taps.sum(axis=(1, 2))
    return taps.reshape(kernel_shape)


def _sum_all(operands, axes):
    """Sum each operand over `axes` in a single (variadic) reduction."""
    zero = jnp.zeros((), operands[0].dtype)
    add = lambda a, b: tuple(u + v for u, v in zip(a, b, strict=True))
    return jax.lax.reduce(operands, (zero,) * len(operands), add, axes)


_depthwise_shifted.defvjp(_shifted_fwd, _shifted_bwd)


def depthwise_conv2d(
    x: jax.Array,
    kernel: jax.Array,
    strides: Sequence[int] = (1, 1),
    padding: Padding = ((0, 0), (0, 0)),
    impl: str = "auto",
) -> jax.Array:
    """Depthwise 2-D convolution (channel multiplier 1) of NHWC `x` with a [kh, kw, 1, C] kernel.

    `padding` is explicit ((top, bottom), (left, right)) zero padding; `impl` is 'auto', 'native'
    or 'shifted' (see module docstring). Both implementations give the same outputs and gradients.
    """
    _check_depthwise_args(x, kernel)
    strides = tuple(int(s) for s in strides)
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    if resolve_depthwise_impl(impl) == "native":
        return _depthwise_native(x, kernel, strides, padding)
    return _depthwise_shifted(x, kernel, strides, padding)


def _is_pointwise(rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                  feature_group_count) -> bool:
    """A 1x1, stride-1, undilated, ungrouped, unpadded NHWC/HWIO conv: one [C, O] contraction."""
    unpadded = padding in ("SAME", "VALID") or all(tuple(p) == (0, 0) for p in padding)
    return (rhs.ndim == 4 and rhs.shape[:2] == (1, 1) and _all_ones(window_strides) and _all_ones(lhs_dilation)
            and _all_ones(rhs_dilation) and feature_group_count == 1 and unpadded
            and _channels_last(rhs, dimension_numbers))


#: Input channels up to which an ungrouped conv runs as one dot of its patches on CPU (module
#: docstring): 3 (RGB) measured faster that way, 14 slower.
IM2COL_MAX_IN_CHANNELS = 4


def _is_narrow_input(rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count) -> bool:
    """An undilated, ungrouped NHWC/HWIO conv with explicit padding of a few-channel input."""
    return (rhs.ndim == 4 and rhs.shape[2] <= IM2COL_MAX_IN_CHANNELS and not isinstance(padding, str)
            and _all_ones(lhs_dilation) and _all_ones(rhs_dilation) and feature_group_count == 1
            and _channels_last(rhs, dimension_numbers))


def _all_ones(seq) -> bool:
    return seq is None or all(int(v) == 1 for v in seq)


def _channels_last(rhs, dimension_numbers) -> bool:
    spec = lambda numbers: jax.lax.conv_dimension_numbers((1,) * rhs.ndim, rhs.shape, numbers)
    return spec(dimension_numbers) == spec(("NHWC", "HWIO", "NHWC"))


def _conv_patches(lhs, rhs, strides, padding, precision):
    """The conv as [pixels, kh*kw*C] patches (tap-major, as HWIO flattens) times [kh*kw*C, O]."""
    padding = tuple((int(lo), int(hi)) for lo, hi in padding)
    strides = tuple(int(s) for s in strides)
    out_hw = _out_hw(lhs.shape, rhs.shape, strides, padding)
    xp = _pad(lhs, padding)
    kh, kw = rhs.shape[:2]
    patches = jnp.concatenate([_window(xp, dy, dx, strides, out_hw) for dy in range(kh) for dx in range(kw)], -1)
    out = jax.lax.dot_general(patches.reshape(-1, patches.shape[-1]), rhs.reshape(-1, rhs.shape[-1]),
                              (((1,), (0,)), ((), ())), precision=precision)
    return out.reshape(lhs.shape[0], *out_hw, rhs.shape[-1])


def conv_general(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                 dimension_numbers=None, feature_group_count=1, precision=None, **kwargs) -> jax.Array:
    """`lax.conv_general_dilated` with the same arguments; on CPU a pointwise conv is a dot and a
    conv of a few-channel input a dot of its patches (see module docstring). Same values and
    gradients (tested); `flax.linen.Conv` takes it as its ``conv_general_dilated``."""
    on_cpu = jax.default_backend() == "cpu" and not _NATIVE.get() and not kwargs
    if on_cpu and _is_pointwise(
        rhs, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count
    ):
        # As a 2-D [pixels, C] x [C, O] product: autodiff then gives the kernel gradient as one
        # [C, pixels] x [pixels, O] dot, where the 4-D form made XLA transpose the whole output
        # gradient first (4x slower forward+backward for a 16 -> 96 expand conv at 128x128).
        pixels = lhs.reshape(-1, lhs.shape[-1])
        out = jax.lax.dot_general(pixels, rhs[0, 0], (((1,), (0,)), ((), ())), precision=precision)
        return out.reshape(*lhs.shape[:-1], rhs.shape[-1])
    if on_cpu and _is_narrow_input(rhs, padding, lhs_dilation, rhs_dilation, dimension_numbers, feature_group_count):
        return _conv_patches(lhs, rhs, window_strides, padding, precision)
    return jax.lax.conv_general_dilated(
        lhs, rhs, window_strides, padding, lhs_dilation=lhs_dilation, rhs_dilation=rhs_dilation,
        dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
        precision=precision, **kwargs,
    )


def conv_transpose_torch(
    x: jax.Array, kernel: jax.Array, stride: int, padding: int, output_padding: int = 0
) -> jax.Array:
    """`torch.nn.ConvTranspose2d` (no bias, groups 1, dilation 1) on NHWC input.

    `kernel` is [kh, kw, in, out], i.e. PyTorch's IOHW weight with its axes moved, not flipped.
    Output size per axis: (n - 1) * stride - 2 * padding + k + output_padding. When that is
    exactly stride * n (HigherHRNet's k4 p1, k3 p1 op1, k2 p0) it runs as stride * stride small
    convs, one per output phase; otherwise as a stride-1 conv of the stride-dilated input with
    the spatially flipped kernel. Both are exactly the PyTorch operation.
    """
    kh, kw = kernel.shape[:2]
    if kernel.shape[2] != x.shape[3]:
        raise ValueError(f"transposed-conv kernel expects {kernel.shape[2]} input channels, got {x.shape[3]}")
    if kh == kw and stride > 1 and kh - 2 * padding + output_padding == stride and kh >= stride:
        return _conv_transpose_phases(x, kernel, stride, padding)
    return _conv_transpose_dilated(x, kernel, stride, padding, output_padding)


def _phase_taps(kernel: int, stride: int, padding: int, phase: int) -> tuple[int, list[int]]:
    """Input offsets d (from m) and kernel taps k that reach output s*m + phase: k = phase + p - s*d."""
    offsets = [d for d in range(-kernel, kernel + 1) if 0 <= phase + padding - stride * d < kernel]
    return offsets[0], [phase + padding - stride * d for d in offsets]


def _conv_transpose_phases(x, kernel, stride, padding):
    """Sub-pixel form: each of the s*s output phases is a small stride-1 conv of the undilated
    input, so no multiply touches the zeros a dilated input would carry (4x fewer for k4 s2)."""
    k = kernel.shape[0]
    phases = []
    for ry in range(stride):
        dy0, ky = _phase_taps(k, stride, padding, ry)
        row = []
        for rx in range(stride):
            dx0, kx = _phase_taps(k, stride, padding, rx)
            sub = kernel[np.array(ky)][:, np.array(kx)]
            pad_y = (-dy0, dy0 + len(ky) - 1)
            pad_x = (-dx0, dx0 + len(kx) - 1)
            row.append(
                jax.lax.conv_general_dilated(
                    x, sub, (1, 1), (pad_y, pad_x), dimension_numbers=("NHWC", "HWIO", "NHWC")
                )
            )
        phases.append(jnp.stack(row, axis=3))  # [B, H, W, s(x), C]
    out = jnp.stack(phases, axis=2)  # [B, H, s(y), W, s(x), C]
    b, h, _, w, _, c = out.shape
    return out.reshape(b, h * stride, w * stride, c)


def _conv_transpose_dilated(x, kernel, stride, padding, output_padding):
    """General form: stride-1 conv of the stride-dilated input with the flipped kernel."""
    kh, kw = kernel.shape[:2]
    pads = []
    for k in (kh, kw):
        lo = k - 1 - padding
        if lo < 0:
            raise ValueError(f"transposed-conv padding {padding} must be at most kernel - 1 = {k - 1}")
        pads.append((lo, lo + output_padding))
    return jax.lax.conv_general_dilated(
        x,
        kernel[::-1, ::-1],
        window_strides=(1, 1),
        padding=pads,
        lhs_dilation=(stride, stride),
        dimension_numbers=("NHWC", "HWIO", "NHWC"),
    )


def drop_connect(x: jax.Array, rate: float, rng: jax.Array) -> jax.Array:
    """Per-sample stochastic depth: zero whole samples with probability `rate`, rescale the rest."""
    keep = 1.0 - rate
    mask = jax.random.bernoulli(rng, keep, (x.shape[0],) + (1,) * (x.ndim - 1))
    return jnp.where(mask, x / keep, jnp.zeros_like(x)).astype(x.dtype)


def upsample_nearest(x: jax.Array, factor: int) -> jax.Array:
    """Nearest-neighbour upsampling of NHWC `x` by an integer factor (PyTorch mode='nearest')."""
    if factor == 1:
        return x
    b, h, w, c = x.shape
    x = jnp.broadcast_to(x[:, :, None, :, None, :], (b, h, factor, w, factor, c))
    return x.reshape(b, h * factor, w * factor, c)


class DepthwiseConv(nn.Module):
    """Bias-free depthwise convolution with explicit padding; param `kernel` is [kh, kw, 1, C]."""

    kernel_size: int
    strides: int = 1
    padding: Padding = ((0, 0), (0, 0))
    impl: str = "auto"
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable = conv_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        channels = x.shape[-1]
        kernel = self.param(
            "kernel", self.kernel_init, (self.kernel_size, self.kernel_size, 1, channels), self.param_dtype
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        return depthwise_conv2d(x, kernel, (self.strides, self.strides), self.padding, self.impl)


class TorchConvTranspose(nn.Module):
    """Bias-free transposed convolution with PyTorch ConvTranspose2d semantics.

    Param `kernel` is [k, k, in, out] in PyTorch orientation (IOHW moved to HW-first).
    """

    features: int
    kernel_size: int
    stride: int
    padding: int
    output_padding: int = 0
    dtype: Any = jnp.float32
    param_dtype: Any = jnp.float32
    kernel_init: Callable = conv_kernel_init

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        kernel = self.param(
            "kernel",
            self.kernel_init,
            (self.kernel_size, self.kernel_size, x.shape[-1], self.features),
            self.param_dtype,
        )
        x, kernel = x.astype(self.dtype), kernel.astype(self.dtype)
        return conv_transpose_torch(x, kernel, self.stride, self.padding, self.output_padding)
