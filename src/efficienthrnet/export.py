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
  Pointwise convs likewise stay `lax` convs (`nn.ops.native_convolutions`), one ONNX `Conv` each,
  not the matrix products the CPU training path runs (an Einsum with transposes around it).
- The transposed conv of the head becomes one ONNX `ConvTranspose` (``deconv="convtranspose"``,
  the lhs-dilated conv jax2onnx maps to it) or the exact sub-pixel form of `nn.ops`
  (``deconv="phases"``: s*s small `Conv` nodes, a Concat and a Reshape).
- Shapes are static by default; ``batch="dynamic"`` leaves the batch axis symbolic.

The graph itself (shape, BN folding, the forward pass) is `efficienthrnet.export_graph`, re-exported
here; this module writes and reads the artefacts, times them and runs the export command.
"""

from __future__ import annotations

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

from efficienthrnet.config import NETWORK_STRIDE, ModelConfig
from efficienthrnet.export_graph import (  # noqa: F401  (re-exported for existing callers)
    _CONV_TYPES,
    DECONV_FORMS,
    DYNAMIC,
    FoldedNetwork,
    _apply,
    _bn_affine,
    _input_spec,
    _interceptor,
    _path,
    conv_bn_pairs,
    export_shape,
    fold_batch_norm,
    inference_function,
)
from efficienthrnet.nn.model import EfficientHRNet
from efficienthrnet.nn.ops import DepthwiseConv, TorchConvTranspose, _conv_transpose_dilated  # noqa: F401

FORMATS = ("stablehlo", "onnx")
#: ONNX opset of the exported models: 17 is what onnxruntime >= 1.11 and TensorRT 8.6+ read, and
#: holds every operator the network needs (Conv with group, ConvTranspose, Sigmoid, ReduceMean).
ONNX_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("out4", "out2")
#: What a sweep's `[latency] backend` may name: the JAX forward alone, or onnxruntime beside it.
LATENCY_BACKENDS = ("jax", "onnxruntime")


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
