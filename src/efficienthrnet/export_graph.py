"""The portable inference graph that every export format traces: the input shape (`export_shape`),
BatchNorm folded into the convolution before it (`fold_batch_norm`), and the forward pass with the
head's transposed conv in the chosen form (`inference_function`)."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from efficienthrnet.config import NETWORK_STRIDE, ModelConfig
from efficienthrnet.nn.model import EfficientHRNet
from efficienthrnet.nn.ops import (
    DepthwiseConv,
    TorchConvTranspose,
    _conv_transpose_dilated,
    native_convolutions,
)

DECONV_FORMS = ("convtranspose", "phases")
DYNAMIC = "dynamic"
_CONV_TYPES = (nn.Conv, DepthwiseConv, TorchConvTranspose)


def export_shape(config: ModelConfig, input_size: int | Sequence[int] | None, batch: int | str) -> tuple:
    """(batch, H, W, 3) of an export; batch is an int or the string "dynamic".

    Raises a ValueError naming the value unless H and W are positive multiples of the network
    stride and batch is a positive int or "dynamic".
    """
    if input_size is None:
        input_size = config.input_size
    hw = (input_size, input_size) if isinstance(input_size, (int, np.integer)) else tuple(input_size)
    if len(hw) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) for v in hw):
        raise ValueError(f"input size {input_size!r} must be one int or (height, width) ints")
    h, w = (int(v) for v in hw)
    if h <= 0 or w <= 0 or h % NETWORK_STRIDE or w % NETWORK_STRIDE:
        up = [max(1, math.ceil(v / NETWORK_STRIDE)) * NETWORK_STRIDE for v in (h, w)]
        raise ValueError(f"input size {h}x{w} is not a multiple of the network stride {NETWORK_STRIDE}; "
                         f"use e.g. --input-size {up[0]} {up[1]}")
    if batch != DYNAMIC and (isinstance(batch, bool) or not isinstance(batch, (int, np.integer)) or batch < 1):
        raise ValueError(f"batch {batch!r} must be a positive int or {DYNAMIC!r}")
    return (batch if batch == DYNAMIC else int(batch), h, w, 3)


def _input_spec(shape: tuple) -> jax.ShapeDtypeStruct:
    """A ShapeDtypeStruct of an export shape, with a symbolic batch axis for "dynamic"."""
    if shape[0] == DYNAMIC:
        (b,) = jax.export.symbolic_shape("batch")
        return jax.ShapeDtypeStruct((b, *shape[1:]), jnp.float32)
    return jax.ShapeDtypeStruct(shape, jnp.float32)


# ----------------------------------------------------------------------------- BN folding


def _path(module: nn.Module) -> tuple[str, ...]:
    return tuple(module.path)


def conv_bn_pairs(config: ModelConfig, variables: Mapping) -> tuple[dict[tuple, tuple], dict[tuple, float]]:
    """Which BatchNorm reads the output of which convolution, found by tracing the network once.

    Returns ({bn path: conv path}, {bn path: epsilon} of every BN); a BN missing from the first
    reads something other than a conv output. Tracing (not naming conventions) decides, so a
    module renamed or added later is still folded right.
    """
    model = EfficientHRNet(config, depthwise_impl="native")
    conv_outputs: dict[int, tuple] = {}
    pairs: dict[tuple, tuple] = {}
    eps: dict[tuple, float] = {}

    def record(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        if context.method_name != "__call__":
            return out
        if isinstance(context.module, _CONV_TYPES):
            conv_outputs[id(out)] = (_path(context.module), out)  # keep `out` alive: ids stay unique
        elif isinstance(context.module, nn.BatchNorm):
            path = _path(context.module)
            eps[path] = float(context.module.epsilon)
            source = conv_outputs.get(id(args[0]))
            if source is not None and source[1] is args[0]:
                pairs[path] = source[0]
        return out

    x = jax.ShapeDtypeStruct((1, NETWORK_STRIDE, NETWORK_STRIDE, 3), jnp.float32)
    with nn.intercept_methods(record):
        jax.eval_shape(lambda v, x: model.apply(v, x, train=False), variables, x)
    return pairs, eps


@dataclasses.dataclass(frozen=True)
class FoldedNetwork:
    """Inference weights with every BatchNorm folded away.

    Attributes:
      params: the model's params with folded conv kernels (and biases, for convs that had one).
      shifts: {BN path: per-channel shift added in place of the BN} (convs without a bias).
      affine: {BN path: (scale, shift)} for BNs with no conv before them (kept as Mul + Add).
      identity: BN paths whose shift went into the conv's own bias (the BN vanishes).
    """

    params: dict
    shifts: dict
    affine: dict
    identity: frozenset

    @property
    def folded(self) -> int:
        return len(self.shifts) + len(self.identity)

    @property
    def unfolded(self) -> list[tuple]:
        return sorted(self.affine)


def _bn_affine(bn_params: Mapping, bn_stats: Mapping, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) with BN(x) = x * s + t in inference mode (flax: (x - mean) / sqrt(var + eps) * g + b)."""
    mean, var = np.asarray(bn_stats["mean"], np.float64), np.asarray(bn_stats["var"], np.float64)
    gamma = np.asarray(bn_params["scale"], np.float64) if "scale" in bn_params else 1.0
    beta = np.asarray(bn_params["bias"], np.float64) if "bias" in bn_params else 0.0
    s = gamma / np.sqrt(var + eps)
    return s, beta - mean * s


def fold_batch_norm(config: ModelConfig, variables: Mapping) -> FoldedNetwork:
    """Fold each inference-mode BatchNorm into the convolution that feeds it (in float64, stored float32).

    conv(x, W) [+ b] -> BN  becomes  conv(x, W * s) + (b * s + t), s and t per output channel
    (the last kernel axis for every conv kind here: HWIO, [k, k, 1, C] depthwise, [k, k, in, out]
    transposed).
    """
    if "batch_stats" not in variables:
        raise ValueError("variables hold no 'batch_stats' collection; export needs a model's full "
                         "{'params', 'batch_stats'} (e.g. from train.load_for_inference)")
    pairs, eps = conv_bn_pairs(config, variables)
    params = traverse_util.flatten_dict(jax.device_get(dict(variables["params"])))
    stats = traverse_util.flatten_dict(jax.device_get(dict(variables["batch_stats"])))
    params = {k: np.asarray(v) for k, v in params.items()}

    def sub(tree, prefix):
        return {k[-1]: v for k, v in tree.items() if k[:-1] == prefix}

    shifts, identity, affine = {}, set(), {}
    for bn, conv in pairs.items():
        s, t = _bn_affine(sub(params, bn), sub(stats, bn), eps[bn])
        kernel = params[(*conv, "kernel")]
        params[(*conv, "kernel")] = (kernel.astype(np.float64) * s).astype(np.float32)
        if (*conv, "bias") in params:
            params[(*conv, "bias")] = (params[(*conv, "bias")].astype(np.float64) * s + t).astype(np.float32)
            identity.add(bn)
        else:
            shifts[bn] = t.astype(np.float32)
    for bn in sorted(set(eps) - set(pairs)):
        s, t = _bn_affine(sub(params, bn), sub(stats, bn), eps[bn])
        affine[bn] = (s.astype(np.float32), t.astype(np.float32))
    return FoldedNetwork(traverse_util.unflatten_dict(params), shifts, affine, frozenset(identity))


def inference_function(config: ModelConfig, variables: Mapping, fold_bn: bool = True,
                       deconv: str = "convtranspose") -> Callable[[jax.Array], tuple[jax.Array, jax.Array]]:
    """x [B, H, W, 3] -> (out4, out2): the network in inference mode with the weights baked in.

    Depthwise and pointwise convs are the native `lax` convs (`nn.ops.native_convolutions`);
    `fold_bn` folds BatchNorm (see `fold_batch_norm`);
    `deconv` picks the transposed conv's form ("convtranspose": one lhs-dilated conv, which
    jax2onnx writes as ConvTranspose; "phases": the sub-pixel form the model uses on CPU).
    """
    if deconv not in DECONV_FORMS:
        raise ValueError(f"deconv={deconv!r} is not one of {DECONV_FORMS}")
    model = EfficientHRNet(config, depthwise_impl="native")
    if not fold_bn:
        consts = jax.device_get(dict(variables))
        interceptor = _interceptor(None, deconv)
        return lambda x: _apply(model, consts, x, interceptor)
    folded = fold_batch_norm(config, variables)
    consts = {"params": folded.params, "batch_stats": jax.device_get(dict(variables["batch_stats"]))}
    interceptor = _interceptor(folded, deconv)
    return lambda x: _apply(model, consts, x, interceptor)


def _apply(model, consts, x, interceptor):
    with nn.intercept_methods(interceptor), native_convolutions():
        return model.apply(consts, x, train=False)


def _interceptor(folded: FoldedNetwork | None, deconv: str):
    """Replace folded BNs by their shift (or nothing), and pick the transposed conv's form."""

    def intercept(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name != "__call__":
            return next_fun(*args, **kwargs)
        if folded is not None and isinstance(module, nn.BatchNorm):
            path = _path(module)
            x = args[0]
            if path in folded.identity:
                return x
            if path in folded.shifts:
                return x + folded.shifts[path]
            scale, shift = folded.affine[path]
            return x * scale + shift
        if deconv == "convtranspose" and isinstance(module, TorchConvTranspose):
            kernel = module.get_variable("params", "kernel")
            return _conv_transpose_dilated(args[0], kernel, module.stride, module.padding, module.output_padding)
        return next_fun(*args, **kwargs)

    return intercept
