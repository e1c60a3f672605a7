"""The topology (one description of the layers, read by the cost model and the converter) against
the Flax modules: the same parameter tree, names and shapes, leaf by leaf (traced, never run)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import pytest
from flax import traverse_util

from efficienthrnet import topology
from efficienthrnet.nn import EfficientNetClassifier, init_shapes
from efficienthrnet.scaling import generate_config


def _shapes(tree) -> dict[str, tuple[int, ...]]:
    return {"/".join(p): tuple(getattr(leaf, "shape", leaf)) for p, leaf in traverse_util.flatten_dict(tree).items()}


def _same_tree(model_tree, layers):
    expected = topology.variable_shapes(layers)
    assert set(expected) == set(model_tree)
    for collection in model_tree:
        want, got = _shapes(model_tree[collection]), _shapes(expected[collection])
        assert sorted(got.keys() - want.keys()) == [] and sorted(want.keys() - got.keys()) == [], collection
        assert got == want, collection


@pytest.mark.parametrize("phi, rule", [(-2.5, "efficienthrnet"), (1, "depth_only")])
def test_pose_topology_is_the_model_tree(phi, rule):
    cfg = generate_config(phi, rule=rule)
    _same_tree(init_shapes(cfg, 64), topology.pose_layers(cfg, (64, 64)))


def test_classifier_topology_is_the_model_tree():
    cfg = generate_config(-4, rule="reference")
    model = EfficientNetClassifier(cfg, 7)
    x = jax.ShapeDtypeStruct((1, 64, 64, 3), jnp.float32)
    tree = jax.eval_shape(lambda k, x: model.init(k, x, train=False), jax.random.key(0), x)
    _same_tree(tree, topology.classifier_layers(cfg.backbone, 7, (64, 64)))


def test_every_layer_has_a_known_kind_part_and_unique_names():
    cfg = generate_config(0, rule="reference")
    layers = topology.pose_layers(cfg, (512, 512))
    assert {layer.kind for layer in layers} <= set(topology.KINDS)
    assert {layer.part for layer in layers} == set(topology.PARTS)
    assert len({layer.path for layer in layers}) == len(layers)
    assert len({layer.torch for layer in layers}) == len(layers)
    assert layers[-1].out_hw == (256, 256)  # the 1/2 heatmaps of the 512 input


def test_unsupported_deconv_kernel_is_named():
    import dataclasses

    cfg = generate_config(-4, rule="reference")
    bad = dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, deconv_kernel=5))
    with pytest.raises(ValueError, match="deconv kernel 5: supported kernels are \\[2, 3, 4\\]"):
        topology.pose_layers(bad)
