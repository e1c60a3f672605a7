"""The layer walk against the Flax model itself: parameter leaves and XLA's cost analysis.

- Params: every parameter and BatchNorm-statistic leaf of `jax.eval_shape(model.init, ...)`,
  grouped by layer path, equals the walk's layer of the same name (several phis and rules).
- MACs: XLA's compiled cost analysis of each of the model's convolutions (taken from its jaxpr,
  native depthwise so that depthwise convs stay convolutions) equals 2 x the walk's
  `unpadded_macs` of that layer: XLA counts a multiply-add as 2 FLOPs and leaves out the taps on
  padding. The whole-model figure also counts elementwise work, so it is only bounded here.
"""

from __future__ import annotations

from collections import Counter

import jax
import jax.numpy as jnp
import pytest
from flax import traverse_util

from efficienthrnet.complexity import DECONV_STRIDE, measure_latency, profile, profile_classifier
from efficienthrnet.nn.efficientnet import EfficientNetClassifier
from efficienthrnet.nn.model import EfficientHRNet
from efficienthrnet.nn.ops import native_convolutions
from efficienthrnet.scaling import generate_config

CONV_PRIMITIVES = ("conv_general_dilated", "dot_general")
FLOAT32_EXACT = 2**24  # XLA accumulates costs in float32: sums stay exact below this


def _leaf_counts(tree) -> dict[str, int]:
    """Scalars per layer path ("backbone/block_0/dw_conv"), summed over its leaves (kernel, bias ...)."""
    counts: Counter = Counter()
    for path, leaf in traverse_util.flatten_dict(tree, sep="/").items():
        counts[path.rsplit("/", 1)[0]] += leaf.size
    return dict(counts)


def _variable_shapes(module, hw):
    x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    return jax.eval_shape(lambda k, x: module.init(k, x, train=False), jax.random.key(0), x)


@pytest.mark.parametrize(
    "phi, rule, size",
    [(0, "reference", (64, 64)), (-2.5, "efficienthrnet", (64, 96)), (1, "depth_only", (64, 64))],
)
def test_params_equal_model_leaf_by_leaf(phi, rule, size):
    cfg = generate_config(phi, rule=rule)
    variables = _variable_shapes(EfficientHRNet(cfg), size)
    p = profile(cfg, size)
    assert _leaf_counts(variables["params"]) == {l.name: l.params for l in p.layers if l.params}
    assert _leaf_counts(variables["batch_stats"]) == {l.name: l.bn_stats for l in p.layers if l.bn_stats}
    for part in ("backbone", "head"):
        assert sum(_leaf_counts(variables["params"][part]).values()) == p.parts[part][0]
    hrnet = variables["params"]["hrnet"]
    for k in (2, 3, 4):
        assert sum(_leaf_counts(hrnet[f"stage{k}"]).values()) == p.parts[f"stage{k}"][0]
    transitions = sum(sum(_leaf_counts(hrnet[f"transition{k}"]).values()) for k in (1, 2, 3))
    assert transitions == p.parts["transitions"][0]


def test_classifier_params_equal_model_leaf_by_leaf():
    cfg = generate_config(-1, rule="reference")
    variables = _variable_shapes(EfficientNetClassifier(cfg, 100), (96, 96))
    p = profile_classifier(cfg, 100, 96)
    assert _leaf_counts(variables["params"]) == {l.name: l.params for l in p.layers if l.params}
    assert _leaf_counts(variables["batch_stats"]) == {l.name: l.bn_stats for l in p.layers if l.bn_stats}


# ----------------------------------------------------------------------------- XLA


def _sub_jaxprs(eqn):
    for value in eqn.params.values():
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if hasattr(item, "eqns"):
                yield item
            elif hasattr(getattr(item, "jaxpr", None), "eqns"):
                yield item.jaxpr


def _conv_equations(jaxpr):
    """Every convolution / matmul of a jaxpr, nested calls included, in program order."""
    for eqn in jaxpr.eqns:
        if eqn.primitive.name in CONV_PRIMITIVES:
            yield eqn
        for sub in _sub_jaxprs(eqn):
            yield from _conv_equations(sub)


def _xla_flops_of(eqns) -> int:
    """XLA's compiled CPU cost analysis of these equations alone, run side by side.

    Lowered for the CPU whatever the default backend: on GPU the convs become cuDNN calls that
    the cost analysis does not count.
    """
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    shapes = [[jax.ShapeDtypeStruct(v.aval.shape, v.aval.dtype, sharding=cpu) for v in e.invars] for e in eqns]
    cost = jax.jit(lambda ops: [e.primitive.bind(*o, **e.params) for e, o in zip(eqns, ops)]).lower(shapes)
    cost = cost.compile().cost_analysis()
    flops = (cost[0] if isinstance(cost, list) else cost)["flops"]
    assert flops < FLOAT32_EXACT, "group too large for an exact float32 count"
    return int(flops)


def _per_conv_xla_flops(fn, *args) -> list[int]:
    """XLA's FLOPs for each conv of `fn`, one compile per distinct conv signature."""
    cache: dict = {}
    flops = []
    for eqn in _conv_equations(jax.make_jaxpr(fn)(*args).jaxpr):
        key = (eqn.primitive.name, tuple(v.aval.shape for v in eqn.invars), repr(sorted(eqn.params.items())))
        if key not in cache:
            cache[key] = _xla_flops_of([eqn])
        flops.append(cache[key])
    return flops


def _apply(model):
    """The forward pass with every conv a lax conv (`native_convolutions`), as the profile counts
    them: on CPU the stem would otherwise be a dot of its patches, padded taps included."""

    def forward(v, x):
        with native_convolutions():
            return model.apply(v, x, train=False)

    return forward


def _merge_deconv_phases(xla: list[int], p) -> list[int]:
    """The model runs a stride-s transposed conv as s*s phase convs (nn.ops): sum them back."""
    merged, i = [], 0
    for layer in (layer for layer in p.layers if layer.macs):
        parts = DECONV_STRIDE**2 if layer.kind == "deconv" else 1
        merged.append(sum(xla[i : i + parts]))
        i += parts
    assert i == len(xla), "the model ran convolutions the profile does not know"
    return merged


def test_every_conv_of_the_model_matches_xla(fast_compile):
    """Layer by layer (H-4's structure at 64x64): XLA FLOPs == 2 x unpadded MACs, in model order."""
    cfg = generate_config(-4, rule="reference")
    model = EfficientHRNet(cfg, depthwise_impl="native")
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    xla = _per_conv_xla_flops(_apply(model), _variable_shapes(model, (64, 64)), x)
    p = profile(cfg, 64)
    assert _merge_deconv_phases(xla, p) == [2 * layer.unpadded_macs for layer in p.layers if layer.macs]
    assert sum(xla) == p.xla_conv_flops
    # the correction is real: the full-kernel count is larger by the padded taps
    assert p.flops - p.xla_conv_flops == 2 * sum(l.macs - l.unpadded_macs for l in p.layers) > 0


def test_all_convs_together_match_xla_non_square(fast_compile):
    """A small non-square config: all its convs in one compiled module count 2 x unpadded MACs."""
    cfg = generate_config(-6, rule="efficienthrnet")
    model = EfficientHRNet(cfg, depthwise_impl="native")
    hw = (32, 64)
    x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    eqns = list(_conv_equations(jax.make_jaxpr(_apply(model))(_variable_shapes(model, hw), x).jaxpr))
    half = len(eqns) // 2  # two modules keep each float32 sum below 2**24
    p = profile(cfg, hw)
    assert _xla_flops_of(eqns[:half]) + _xla_flops_of(eqns[half:]) == p.xla_conv_flops
    assert len(eqns) == sum(DECONV_STRIDE**2 if layer.kind == "deconv" else 1 for layer in p.layers if layer.macs)


def test_classifier_dense_and_convs_match_xla(fast_compile):
    cfg = generate_config(-3, rule="reference")
    model = EfficientNetClassifier(cfg, 10, depthwise_impl="native")
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    xla = _per_conv_xla_flops(_apply(model), _variable_shapes(model, (64, 64)), x)
    p = profile_classifier(cfg, 10, 64)
    assert xla == [2 * layer.unpadded_macs for layer in p.layers if layer.macs]


# ----------------------------------------------------------------------------- latency


def test_measure_latency_reports_a_consistent_summary(fast_compile):
    cfg = generate_config(-6, rule="efficienthrnet")
    # native depthwise: fewer ops to compile than the CPU's shifted form; the timing logic is the same
    result = measure_latency(cfg, input_size=64, batch=1, warmup=1, repeats=3, depthwise_impl="native")
    assert result["depthwise_impl"] == "native"
    assert result["input_size"] == [64, 64] and result["batch"] == 1
    assert result["backend"] == jax.default_backend()
    assert len(result["times_ms"]) == 3
    assert 0 < result["min_ms"] <= result["median_ms"] <= result["max_ms"]
    assert result["compile_s"] > 0
    # A second timing of the same network (a sweep's next seed: other weights) reuses the compiled
    # forward: still one executable in the jitted function's cache.
    from efficienthrnet.complexity import _jitted_forward

    _, forward = _jitted_forward(cfg, jnp.dtype("float32"), "native")
    assert forward._cache_size() == 1
    again = measure_latency(cfg, input_size=64, batch=1, warmup=0, repeats=1, depthwise_impl="native", seed=1)
    assert forward._cache_size() == 1 and len(again["times_ms"]) == 1


def test_measure_latency_rejects_bad_counts():
    with pytest.raises(ValueError, match="repeats"):
        measure_latency(generate_config(-6), input_size=64, repeats=0)


def test_activations_count_every_batchnorm_output_of_the_model():
    """`Profile.activations` (the sweep's cost estimate) against the model's own BatchNorm outputs."""
    import flax.linen as nn

    cfg = generate_config(-3.5, rule="efficienthrnet")
    model, hw = EfficientHRNet(cfg), (64, 96)
    variables = _variable_shapes(model, hw)
    x = jax.ShapeDtypeStruct((1, *hw, 3), jnp.float32)
    _, state = jax.eval_shape(
        lambda v, x: model.apply(v, x, train=False, capture_intermediates=lambda m, _: isinstance(m, nn.BatchNorm)),
        variables, x)
    outputs = jax.tree_util.tree_leaves(state["intermediates"])
    assert len(outputs) == sum(layer.kind == "batchnorm" for layer in profile(cfg, hw).layers)
    assert profile(cfg, hw).activations == sum(leaf.size for leaf in outputs)
    assert profile(cfg, (128, 192)).activations > 3.9 * profile(cfg, hw).activations  # SE maps stay 1x1
