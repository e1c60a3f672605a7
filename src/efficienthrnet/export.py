"""Deployment export of the inference network: StableHLO (`jax.export`) and ONNX (`jax2onnx`).

    from efficienthrnet.export import to_onnx, to_stablehlo, load_stablehlo, onnx_session
    to_onnx(cfg, variables, "h-4.onnx", input_size=(384, 384))           # needs the `export` extra
    to_stablehlo(cfg, variables, "h-4.stablehlo", batch="dynamic")       # + h-4.stablehlo.json
    forward, meta = load_stablehlo("h-4.stablehlo")                      # forward(x) -> (out4, out2)

What the exported graph holds: image [B, H, W, 3] (normalised float32, NHWC) -> (out4 [B, H/4,
W/4, 2J], out2 [B, H/2, W/2, J]), the network only, as `EfficientHRNet.apply(..., train=False)`.
Flip test, upsampling and the associative-embedding decoding stay on the host (`predict.py`,
`decode.py`); `onnx_apply_fn` / `stablehlo_apply_fn` plug an artefact into a `Predictor`.

How the graph is made portable:
- BatchNorm is folded into the weights of the convolution before it (kernel x gamma/sigma per
  output channel; the shift becomes the conv's bias, or one Add): no BatchNormalization node and no
  running statistics remain. A BN without a conv before it would become one Mul and one Add (the
  network has none; `FoldedNetwork.unfolded` lists any).
- Depthwise convolutions run the native grouped `lax.conv` (`depthwise_impl="native"`), which
  converts to ONNX `Conv` with ``group = C``; the CPU-fast "shifted" form would be k*k Mul/Add.
- The transposed conv of the head becomes one ONNX `ConvTranspose` (``deconv="convtranspose"``,
  the lhs-dilated conv jax2onnx maps to it) or the exact sub-pixel form of `nn.ops`
  (``deconv="phases"``: s*s small `Conv` nodes, a Concat and a Reshape).
- Shapes are static by default; ``batch="dynamic"`` leaves the batch axis symbolic.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from flax import traverse_util

from efficienthrnet.config import NETWORK_STRIDE, ModelConfig
from efficienthrnet.nn.model import EfficientHRNet
from efficienthrnet.nn.ops import DepthwiseConv, TorchConvTranspose, _conv_transpose_dilated

FORMATS = ("stablehlo", "onnx")
DECONV_FORMS = ("convtranspose", "phases")
#: ONNX opset of the exported models: 17 is what onnxruntime >= 1.11 and TensorRT 8.6+ read, and
#: holds every operator the network needs (Conv with group, ConvTranspose, Sigmoid, ReduceMean).
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("out4", "out2")
DYNAMIC = "dynamic"
#: What a sweep's `[latency] backend` may name: the JAX forward alone, or onnxruntime beside it.
LATENCY_BACKENDS = ("jax", "onnxruntime")
_CONV_TYPES = (nn.Conv, DepthwiseConv, TorchConvTranspose)


# ----------------------------------------------------------------------------- shapes


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

    Depthwise convs use the native grouped conv; `fold_bn` folds BatchNorm (see `fold_batch_norm`);
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
    with nn.intercept_methods(interceptor):
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


# ----------------------------------------------------------------------------- StableHLO


def _metadata(config: ModelConfig, shape: tuple, fmt: str, **extra) -> dict[str, Any]:
    b, h, w, c = shape
    outputs = {name: [b, h // s, w // s, ch] for name, s, ch in zip(
        OUTPUT_NAMES, (4, 2), (config.head.quarter_channels, config.head.half_channels))}
    return {
        "format": fmt,
        "model_config": config.to_dict(),
        "input": {"name": INPUT_NAME, "shape": [b, h, w, c], "dtype": "float32", "layout": "NHWC",
                  "normalisation": "efficienthrnet.data.augment.normalize_image (RGB, ImageNet mean/std)"},
        "outputs": outputs,
        "jax_version": jax.__version__,
        **extra,
    }


def sidecar_path(path: str | Path) -> Path:
    """Where the JSON description of an artefact lives: FILE -> FILE.json."""
    path = Path(path)
    return path.with_name(path.name + ".json")


def _write(path: Path, data: bytes, meta: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    sidecar_path(path).write_text(json.dumps(meta, indent=2))
    return path


def to_stablehlo(config: ModelConfig, variables: Mapping, out: str | Path,
                 input_size: int | Sequence[int] | None = None, batch: int | str = 1,
                 fold_bn: bool = True, deconv: str = "convtranspose") -> Path:
    """Serialise the inference network with `jax.export` to `out`, and its description to `out`.json.

    The artefact holds the weights as constants and runs on any platform `jax.export` lowers for
    (this process's default). Reload it with `load_stablehlo` (or `jax.export.deserialize`).
    """
    shape = export_shape(config, input_size, batch)
    fn = inference_function(config, variables, fold_bn, deconv)
    exported = jax.export.export(jax.jit(fn))(_input_spec(shape))
    meta = _metadata(config, shape, "stablehlo", platforms=list(exported.platforms), fold_bn=fold_bn,
                     deconv=deconv, calling_convention_version=exported.calling_convention_version)
    return _write(Path(out), bytes(exported.serialize()), meta)


def read_sidecar(path: str | Path) -> dict[str, Any]:
    side = sidecar_path(path)
    if not side.is_file():
        raise FileNotFoundError(f"{side} is missing: an exported artefact's description (input shape, "
                                "config) lives beside it; re-export with `efficienthrnet export`")
    return json.loads(side.read_text())


def load_stablehlo(path: str | Path) -> tuple[Callable, dict[str, Any]]:
    """(forward, metadata) of a StableHLO artefact; forward(x) -> (out4, out2) and works under jit."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"StableHLO artefact {path} does not exist")
    exported = jax.export.deserialize(bytearray(path.read_bytes()))
    return exported.call, read_sidecar(path)


def stablehlo_apply_fn(path: str | Path) -> Callable:
    """`apply_fn(variables, x)` of a StableHLO artefact for `Predictor.from_apply_fn` (variables unused)."""
    forward, _ = load_stablehlo(path)
    return lambda variables, x: forward(x)


# ----------------------------------------------------------------------------- ONNX


def _require_jax2onnx():
    try:
        import jax2onnx
    except ImportError as err:
        raise ImportError("ONNX export needs the 'export' extra: pip install 'efficienthrnet[export]' "
                          "(jax2onnx, onnx, onnxruntime)") from err
    return jax2onnx


def to_onnx(config: ModelConfig, variables: Mapping, out: str | Path,
            input_size: int | Sequence[int] | None = None, batch: int | str = 1,
            opset: int = ONNX_OPSET, fold_bn: bool = True, deconv: str = "convtranspose") -> Path:
    """Convert the inference network with jax2onnx and write it to `out` (+ `out`.json).

    The network is first traced to a jaxpr (weights as constants), so jax2onnx sees only lax
    primitives: its Flax-module plugins would otherwise re-insert BatchNormalization nodes.
    """
    jax2onnx = _require_jax2onnx()
    shape = export_shape(config, input_size, batch)
    fn = inference_function(config, variables, fold_bn, deconv)
    spec = _input_spec(shape)
    closed = jax.make_jaxpr(fn)(spec)

    def graph(x):
        return tuple(jax.core.eval_jaxpr(closed.jaxpr, closed.consts, x))

    onnx_shape = ("B", *shape[1:]) if shape[0] == DYNAMIC else shape
    model = jax2onnx.to_onnx(graph, [onnx_shape], model_name=config.name.replace("@", "_"), opset=opset,
                             input_names=[INPUT_NAME], output_names=list(OUTPUT_NAMES))
    meta = _metadata(config, shape, "onnx", opset=opset, fold_bn=fold_bn, deconv=deconv,
                     ops=onnx_op_counts(model))
    return _write(Path(out), model.SerializeToString(), meta)


def onnx_op_counts(model) -> dict[str, int]:
    """{op type: count} of an ONNX model's graph (a loaded ModelProto or a path)."""
    if isinstance(model, (str, Path)):
        import onnx

        model = onnx.load(str(model))
    counts: dict[str, int] = {}
    for node in model.graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return dict(sorted(counts.items()))


def onnx_session(path: str | Path, threads: int | None = None):
    """An onnxruntime CPU InferenceSession of an exported model (all graph optimisations on)."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("running ONNX needs onnxruntime: pip install 'efficienthrnet[export]'") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model {path} does not exist")
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = int(threads)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(out4, out2) of an onnxruntime session; a static-batch model runs a larger batch in pieces."""
    x = np.ascontiguousarray(x, np.float32)
    batch = session.get_inputs()[0].shape[0]
    if isinstance(batch, int) and batch != x.shape[0]:
        if x.shape[0] % batch:
            raise ValueError(f"batch {x.shape[0]} is not a multiple of the ONNX model's static batch {batch}")
        parts = [run_onnx(session, x[i:i + batch]) for i in range(0, x.shape[0], batch)]
        return tuple(np.concatenate(p) for p in zip(*parts))
    return tuple(session.run(list(OUTPUT_NAMES), {INPUT_NAME: x}))


def onnx_apply_fn(session) -> Callable:
    """`apply_fn(variables, x)` that runs an onnxruntime session (via a host callback, so it works
    inside `Predictor`'s jit); for `Predictor.from_apply_fn` (variables unused)."""

    def apply_fn(variables, x):
        b, h, w = x.shape[:3]
        shapes = tuple(jax.ShapeDtypeStruct((b, h // s, w // s, o.shape[-1]), jnp.float32)
                       for s, o in zip((4, 2), session.get_outputs()))
        return jax.pure_callback(lambda a: run_onnx(session, np.asarray(a)), shapes, x)

    return apply_fn


# ----------------------------------------------------------------------------- latency


def _timing_stats(times_ms: list[float]) -> dict[str, Any]:
    quartiles = statistics.quantiles(times_ms, n=4) if len(times_ms) > 1 else [times_ms[0]] * 3
    return {"median_ms": statistics.median(times_ms), "min_ms": min(times_ms), "max_ms": max(times_ms),
            "iqr_ms": quartiles[2] - quartiles[0], "times_ms": times_ms}


def _check_counts(warmup: int, repeats: int) -> None:
    for label, value, least in (("warmup", warmup, 0), ("repeats", repeats, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ValueError(f"{label} must be an int >= {least}, got {value!r}")


def _timed(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def compare_latency(config: ModelConfig, input_size: int | Sequence[int] | None = None, batch: int = 1,
                    warmup: int = 3, repeats: int = 10, seed: int = 0, variables: Mapping | None = None,
                    backends: Sequence[str] = ("jax", "onnxruntime"), threads: int | None = None) -> dict[str, Any]:
    """Median latency of the jitted JAX forward (the CPU-fast model as trained and evaluated) and of
    the ONNX export in onnxruntime (CPU), timed alternately in one loop so that both see the same
    machine load. Returns {backend: timing stats} plus ``onnxruntime_over_jax`` (ratio of medians)
    when both run. `threads`: onnxruntime's intra-op threads (default: its own choice).
    """
    import tempfile

    _check_counts(warmup, repeats)
    unknown = set(backends) - set(LATENCY_BACKENDS)
    if unknown or not backends:
        raise ValueError(f"latency backends {list(backends)} must be a non-empty subset of {LATENCY_BACKENDS}")
    shape = export_shape(config, input_size, batch)
    variables = random_variables(config, seed) if variables is None else variables
    x = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    runs: dict[str, Callable[[], Any]] = {}
    setup_s: dict[str, float] = {}
    if "jax" in backends:
        model = EfficientHRNet(config)
        forward = jax.jit(lambda v, x: model.apply(v, x, train=False))
        xj, vj = jax.device_put(x), jax.device_put(variables)
        runs["jax"] = lambda: jax.block_until_ready(forward(vj, xj))
    if "onnxruntime" in backends:
        start = time.perf_counter()
        with tempfile.TemporaryDirectory() as tmp:
            session = onnx_session(to_onnx(config, variables, Path(tmp) / "model.onnx", shape[1:3], batch),
                                   threads=threads)
        setup_s["onnxruntime_export_s"] = time.perf_counter() - start
        runs["onnxruntime"] = lambda: session.run(None, {INPUT_NAME: x})
    for name, run in runs.items():
        setup_s[f"{name}_first_call_s"] = _timed(run) / 1e3  # JAX: the compile
        for _ in range(warmup):
            run()
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            times[name].append(_timed(run))
    out: dict[str, Any] = {"config": config.name, "input_size": list(shape[1:3]), "batch": batch,
                           "warmup": warmup, "repeats": repeats, "onnxruntime_threads": threads, **setup_s}
    out.update({name: _timing_stats(t) for name, t in times.items()})
    if len(runs) == 2:
        out["onnxruntime_over_jax"] = out["onnxruntime"]["median_ms"] / out["jax"]["median_ms"]
    return out


# ----------------------------------------------------------------------------- command


def random_variables(config: ModelConfig, seed: int = 0) -> dict:
    """Random variables of `EfficientHRNet(config)` for exporting and parity tests.

    Drawn with numpy from the variables' shapes (no `model.init`, whose compile costs minutes on a
    loaded CPU): kernels He-normal over fan-in (so maps stay O(1) and decoding finds peaks), and BN
    scales, shifts and running statistics away from (1, 0, 0, 1), so the BN folding is exercised.
    """
    from efficienthrnet.nn.model import init_shapes

    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer (numpy's generator needs one), got {seed!r}")
    rng = np.random.default_rng(seed)
    shapes = init_shapes(config, NETWORK_STRIDE, depthwise_impl="native")

    def draw(path, leaf):
        name = str(getattr(path[-1], "key", path[-1]))
        shape = tuple(leaf.shape)
        if len(shape) == 4:
            fan_in = int(np.prod(shape[:-1]))
            return rng.normal(0.0, math.sqrt(2.0 / fan_in), shape).astype(np.float32)
        if name == "scale":
            return rng.uniform(0.5, 1.0, shape).astype(np.float32)
        if name == "var":
            return rng.uniform(1.0, 2.0, shape).astype(np.float32)
        return rng.normal(0.0, 0.1, shape).astype(np.float32)  # biases, BN shifts and means

    return jax.tree_util.tree_map_with_path(draw, dict(shapes))


def export_model(fmt: str, out: str | Path, *, checkpoint: str | None = None, step: int | None = None,
                 phi: float | None = None, rule: str = "efficienthrnet", seed: int = 0,
                 input_size: int | Sequence[int] | None = None, batch: int | str = 1,
                 opset: int = ONNX_OPSET, deconv: str = "convtranspose") -> dict[str, Any]:
    """Export a training run's checkpoint (or random weights of phi/rule) and return the sidecar."""
    if fmt not in FORMATS:
        raise ValueError(f"format {fmt!r} is not one of {FORMATS}")
    if (checkpoint is None) == (phi is None):
        raise ValueError("give exactly one of a checkpoint (a training run folder) or a phi (random weights)")
    if checkpoint is not None:
        from efficienthrnet.train import load_for_inference

        config, _, variables = load_for_inference(checkpoint, step)
    else:
        from efficienthrnet.scaling import generate_config

        config = generate_config(phi, rule)
        variables = random_variables(config, seed)
    export_shape(config, input_size, batch)  # fail on a bad size before any tracing
    if fmt == "onnx":
        path = to_onnx(config, variables, out, input_size, batch, opset=opset, deconv=deconv)
    else:
        path = to_stablehlo(config, variables, out, input_size, batch, deconv=deconv)
    return {"out": str(path), "sidecar": str(sidecar_path(path)), **read_sidecar(path)}
