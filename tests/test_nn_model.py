"""EfficientHRNet and the classifier built from configs: exact parameter counts of the reference
models (counted with jax.eval_shape, nothing computed), shapes at any phi, train mode, dtype."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficienthrnet.nn import EfficientHRNet, EfficientNetClassifier, count_params, init_shapes
from efficienthrnet.scaling import generate_config


@pytest.fixture
def fast_compile():
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", previous)


def _filled_variables(cfg):
    """Deterministic, non-trivial variables of the model's shapes without compiling `init`."""
    shapes = init_shapes(cfg, 64)
    leaves, treedef = jax.tree_util.tree_flatten(shapes)
    rng = np.random.default_rng(0)
    filled = [jnp.asarray(0.1 * rng.standard_normal(leaf.shape), jnp.float32) for leaf in leaves]
    variables = jax.tree_util.tree_unflatten(treedef, filled)
    variables["batch_stats"] = jax.tree_util.tree_map(
        lambda v: jnp.abs(v) + 0.5, variables["batch_stats"]
    )  # positive variances (and means, harmlessly)
    return variables


# Trainable params of the reference H0..H-4 per part (reference page, section 8.1).
REFERENCE_PARAMS = {
    0: (19_725_359, 3_595_388, 16_057_312, 72_659),
    -1: (13_004_446, 3_050_752, 9_902_761, 50_933),
    -2: (8_263_495, 2_125_854, 6_101_953, 35_688),
    -3: (5_360_390, 1_602_678, 3_732_348, 25_364),
    -4: (2_764_706, 993_186, 1_752_807, 18_713),
}


@pytest.mark.parametrize("phi", sorted(REFERENCE_PARAMS))
def test_reference_param_counts_are_exact(phi):
    cfg = generate_config(phi, rule="reference")
    shapes = init_shapes(cfg, 64)
    params = shapes["params"]
    total, backbone, hrnet, head = REFERENCE_PARAMS[phi]
    assert set(params) == {"backbone", "hrnet", "head"}
    assert count_params(params) == total
    parts = (count_params(params["backbone"]), count_params(params["hrnet"]), count_params(params["head"]))
    assert parts == (backbone, hrnet, head)
    assert set(params["hrnet"]) == {"transition1", "transition2", "transition3", "stage2", "stage3", "stage4"}


def test_h0_batchnorm_statistics_count():
    # H0 has 71,456 BN running-statistic scalars (mean + var), reported apart from params.
    assert count_params(init_shapes(generate_config(0, rule="reference"), 64)["batch_stats"]) == 71_456


@pytest.mark.parametrize("phi, millions", [(0, 5.289), (-1, 4.548), (-2, 3.464), (-3, 2.796), (-4, 2.056)])
def test_classifier_param_counts_match_backbone_table(phi, millions):
    cfg = generate_config(phi, rule="reference")
    model = EfficientNetClassifier(cfg, num_classes=1000)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    assert round(count_params(shapes["params"]) / 1e6, 3) == millions


def test_b0_classifier_exact():
    # features 3,595,388 + head conv 320x1280 + BN 2x1280 + dense 1280x1000 + 1000
    model = EfficientNetClassifier(generate_config(0, rule="reference"), num_classes=1000)
    x = jax.ShapeDtypeStruct((1, 32, 32, 3), jnp.float32)
    shapes = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    assert count_params(shapes["params"]) == 5_288_548


def test_taps_have_config_strides_and_channels():
    cfg = generate_config(-2.5, rule="efficienthrnet")
    model = EfficientHRNet(cfg)
    x = jax.ShapeDtypeStruct((1, 64, 96, 3), jnp.float32)
    variables = init_shapes(cfg, 64)
    taps = jax.eval_shape(lambda v, x: model.apply(v, x, method=EfficientHRNet.backbone_taps), variables, x)
    assert [t.shape for t in taps] == [
        (1, 64 // s, 96 // s, c) for s, c in zip(cfg.backbone.tap_strides, cfg.backbone.tap_channels)
    ]


@pytest.mark.parametrize("size", [(100, 96), (64, 48)])
def test_input_not_divisible_by_32_raises(size):
    cfg = generate_config(-4, rule="reference")
    model = EfficientHRNet(cfg)
    x = jax.ShapeDtypeStruct((1, *size, 3), jnp.float32)
    with pytest.raises(ValueError, match="multiples of 32"):
        jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)


def test_fractional_phi_runs_at_non_square_size(fast_compile):
    cfg = generate_config(-2.5)  # the default (paper) rule
    model = EfficientHRNet(cfg)
    x = jax.random.normal(jax.random.key(0), (2, 64, 96, 3))
    variables = _filled_variables(cfg)
    out4, out2 = jax.jit(lambda v, x: model.apply(v, x))(variables, x)
    assert out4.shape == (2, 16, 24, cfg.head.quarter_channels) == (2, 16, 24, 34)
    assert out2.shape == (2, 32, 48, cfg.head.half_channels) == (2, 32, 48, 17)
    assert out4.dtype == out2.dtype == jnp.float32
    assert np.all(np.isfinite(out4)) and np.all(np.isfinite(out2))
    assert float(jnp.std(out4)) > 0


def test_positive_phi_train_mode_updates_stats_and_drops_connections(fast_compile):
    cfg = generate_config(1, rule="reference")
    model = EfficientHRNet(cfg)
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))
    variables = _filled_variables(cfg)

    @jax.jit
    def train_forward(v, x, key):
        return model.apply(v, x, train=True, mutable=["batch_stats"], rngs={"dropout": key})

    (out4, out2), updates = train_forward(variables, x, jax.random.key(1))
    (again4, _), _ = train_forward(variables, x, jax.random.key(2))
    assert out4.shape == (2, 16, 16, 34) and out2.shape == (2, 32, 32, 17)
    stem_mean = updates["batch_stats"]["backbone"]["stem_bn"]["mean"]
    assert stem_mean.shape == (cfg.backbone.stem_channels,)
    start = variables["batch_stats"]["backbone"]["stem_bn"]["mean"]
    assert not np.allclose(stem_mean, start)  # train mode updates the running statistics
    # drop-connect (rate 0.2 per residual block) makes two dropout keys give different outputs
    assert not np.allclose(out4, again4)


def test_bfloat16_compute_keeps_float32_params(fast_compile):
    cfg = generate_config(-4, rule="reference")
    model = EfficientHRNet(cfg, dtype=jnp.bfloat16)
    x = jax.random.normal(jax.random.key(0), (1, 64, 64, 3))
    shapes = init_shapes(cfg, 64, dtype=jnp.bfloat16)
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(shapes)} == {jnp.dtype(jnp.float32)}
    variables = _filled_variables(cfg)
    lowered = jax.jit(lambda v, x: model.apply(v, x)).lower(variables, x)
    assert "bf16" in lowered.as_text()  # the convolutions run in bfloat16
    out4, out2 = lowered.compile()(variables, x)
    assert out4.dtype == jnp.float32 and out4.shape == (1, 16, 16, 34)
    assert np.all(np.isfinite(out2))


def test_reference_init_scheme_starts_from_near_zero_predictions(fast_compile):
    """The reference's training init (kernels N(0, 0.001^2)): the untrained network predicts ~0,
    which is what lets training leave the all-zero plateau of the heatmap loss."""
    cfg = generate_config(-6)
    x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
    model = EfficientHRNet(cfg)
    variables = model.init(jax.random.key(0), x, train=False)
    kernels = [leaf for leaf in jax.tree_util.tree_leaves(variables["params"]) if leaf.ndim == 4]
    assert float(np.std(np.concatenate([np.ravel(k) for k in kernels]))) == pytest.approx(0.001, rel=0.02)
    assert float(jnp.max(jnp.abs(model.apply(variables, x)[0]))) < 0.05
    with pytest.raises(ValueError, match="init_scheme"):
        EfficientHRNet(cfg, init_scheme="xavier").init(jax.random.key(0), x)


def test_he_small_head_scheme_keeps_he_features_and_small_outputs(fast_compile):
    from flax import traverse_util

    cfg = generate_config(-6)
    x = jax.random.normal(jax.random.key(1), (1, 64, 64, 3))
    he = EfficientHRNet(cfg, init_scheme="he").init(jax.random.key(0), x, train=False)["params"]
    model = EfficientHRNet(cfg, init_scheme="he_small_head")
    variables = model.init(jax.random.key(0), x, train=False)
    flat, flat_he = (traverse_util.flatten_dict(p) for p in (variables["params"], he))
    outputs = [p for p in flat if p[0] == "head" and p[1].startswith("final_") and p[-1] == "kernel"]
    assert len(outputs) == 2  # the 1/4 and 1/2 output convs
    for path, leaf in flat.items():
        if path in outputs:
            assert float(np.std(leaf)) == pytest.approx(0.001, rel=0.2)
        else:
            np.testing.assert_array_equal(leaf, flat_he[path])
    assert float(jnp.max(jnp.abs(model.apply(variables, x)[0]))) < 0.5


def _assert_he_small_head(params):
    """The "he_small_head" scheme: the output convs ~N(0, 0.001^2), every other kernel He-scaled."""
    from flax import traverse_util

    for path, leaf in traverse_util.flatten_dict(params).items():
        if path[-1] != "kernel":
            continue
        std = float(np.std(np.asarray(leaf)))
        if path[-2].startswith("final_"):
            assert std == pytest.approx(0.001, rel=0.3), path
        else:
            assert std > 0.02, path  # He-normal: sqrt(2 / fan_out) >= 0.02 for every layer here


def _tiny_config():
    """phi=-6 cut down to one HR stage, one block per stage and branch: the fastest to compile."""
    import dataclasses

    cfg = generate_config(-6)
    taps = cfg.backbone.tap_stages[:2]
    stages = tuple(dataclasses.replace(s, repeats=1) for s in cfg.backbone.stages[: taps[-1]])
    return dataclasses.replace(
        cfg,
        backbone=dataclasses.replace(cfg.backbone, stages=stages, tap_stages=taps),
        hrnet=dataclasses.replace(cfg.hrnet, modules_per_stage=(1,), blocks_per_branch=1),
        head=dataclasses.replace(cfg.head, blocks_per_deconv=1),
    )


def test_every_flax_entry_point_gives_the_same_init_scheme(fast_compile):
    """No `init` override: init, init_with_output, lazy_init, init_variables and use as a
    submodule all draw the scheme's kernels (the same values where the parameter paths agree)."""
    from flax import linen as nn

    from efficienthrnet.nn import init_variables

    cfg = _tiny_config()
    model = EfficientHRNet(cfg, init_scheme="he_small_head")
    x = jnp.zeros((1, 16, 16, 3))

    class Wrapper(nn.Module):
        @nn.compact
        def __call__(self, x):
            return EfficientHRNet(cfg, init_scheme="he_small_head", name="pose")(x)

    @jax.jit  # one compile for all four (eager init compiles op by op: minutes on a busy CPU)
    def every_way(key):
        _, with_output = model.init_with_output(key, x, train=False)
        lazy = model.lazy_init(key, jax.ShapeDtypeStruct(x.shape, x.dtype), train=False)
        return model.init(key, x, train=False), with_output, lazy, Wrapper().init(key, x)

    key = jax.random.key(0)
    plain, with_output, lazy, wrapped = every_way(key)
    for variables in (with_output, lazy):
        jax.tree.map(np.testing.assert_array_equal, variables, plain)
    # compiled without LLVM optimisation: the same draws up to float rounding
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 init_variables(model, key), plain)
    _assert_he_small_head(plain["params"])
    _assert_he_small_head(wrapped["params"]["pose"])  # other keys (the path starts at "pose")


def test_pointwise_convs_as_matmuls_give_the_native_network(fast_compile, monkeypatch):
    """On CPU the 1x1 convs run as dots (`nn.ops.conv_general`): the whole network in train mode
    gives the outputs and parameter gradients of the all-native-conv network to float rounding."""
    from efficienthrnet.nn import ops

    cfg = generate_config(-6)
    model = EfficientHRNet(cfg, depthwise_impl="native")
    variables = _filled_variables(cfg)
    x = jax.random.normal(jax.random.key(0), (2, 64, 64, 3))

    def outputs_and_grads():
        def loss(params):
            (out4, out2), _ = model.apply({**variables, "params": params}, x, train=True, mutable=["batch_stats"],
                                        rngs={"dropout": jax.random.key(1)})
            return jnp.sum(out4 ** 2) + jnp.sum(out2 ** 2), (out4, out2)

        (_, outs), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(variables["params"])
        return outs, grads

    ours = outputs_and_grads()
    monkeypatch.setattr(ops, "_is_pointwise", lambda *args: False)
    native = outputs_and_grads()
    for a, b in zip(ours[0], native[0], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))
    # Some gradients are zero in exact arithmetic (a BN bias before another BN) and rounding
    # noise in both: compare the whole gradient vector, and each leaf against the largest entry.
    flat = lambda tree: jnp.concatenate([g.ravel() for g in jax.tree.leaves(tree)])
    g_ours, g_native = flat(ours[1]), flat(native[1])
    assert float(jnp.linalg.norm(g_ours - g_native)) < 1e-4 * float(jnp.linalg.norm(g_native))
    np.testing.assert_allclose(g_ours, g_native, rtol=1e-3, atol=1e-4 * float(jnp.max(jnp.abs(g_native))))
    assert len(jax.tree.leaves(ours[1])) == len(jax.tree.leaves(variables["params"]))
