"""Loading a trained backbone into EfficientHRNet: strict leaves, head dropped, phi/rule checked.

Shapes come from `jax.eval_shape` and values from numpy, so nothing here compiles a network.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from efficienthrnet import backbone_init as bi
from efficienthrnet.nn.efficientnet import EfficientNetClassifier
from efficienthrnet.nn.model import EfficientHRNet, init_shapes
from efficienthrnet.scaling import generate_config

SIZE = 64


def random_values(shapes, seed: int):
    rng = np.random.default_rng(seed)
    return jax.tree.map(lambda s: rng.standard_normal(s.shape).astype(s.dtype), shapes)


@pytest.fixture(scope="module")
def b4():
    return generate_config(-4, rule="reference")


@pytest.fixture(scope="module")
def classifier_variables(b4):
    model = EfficientNetClassifier(b4, 10)
    shapes = jax.eval_shape(
        lambda k: model.init(k, jnp.zeros((1, SIZE, SIZE, 3)), train=False), jax.random.key(0)
    )
    return random_values(shapes, seed=1)


@pytest.fixture(scope="module")
def pose_variables(b4):
    return random_values(init_shapes(b4, SIZE), seed=2)


def test_same_phi_loads_exactly_the_classifier_backbone(b4, classifier_variables, pose_variables):
    weights = bi.backbone_from_classifier_variables(classifier_variables, b4)
    assert weights.dropped == ("classifier", "head_bn", "head_conv")
    merged = bi.merge_backbone(pose_variables, weights, b4)
    for collection in ("params", "batch_stats"):
        got = traverse_util.flatten_dict(merged[collection]["backbone"])
        want = traverse_util.flatten_dict(classifier_variables[collection]["backbone"])
        assert got.keys() == want.keys() and len(got) > 50
        for path in want:
            np.testing.assert_array_equal(np.asarray(got[path]), want[path], err_msg="/".join(path))
        # The HR network and head keep their own values.
        for part in ("hrnet", "head"):
            for path, leaf in traverse_util.flatten_dict(pose_variables[collection].get(part, {})).items():
                np.testing.assert_array_equal(
                    np.asarray(traverse_util.flatten_dict(merged[collection][part])[path]), leaf
                )


def test_other_phi_is_refused_naming_both(b4, classifier_variables, pose_variables):
    weights = bi.backbone_from_classifier_variables(classifier_variables, b4)
    b3 = generate_config(-3, rule="reference")
    with pytest.raises(
        ValueError, match=r"trained at phi=-4, rule='reference'.*pose model at phi=-3, rule='reference'"
    ):
        bi.merge_backbone(random_values(init_shapes(b3, SIZE), 0), weights, b3)
    other_rule = generate_config(-4, rule="efficienthrnet")
    with pytest.raises(ValueError, match=r"phi=-4, rule='reference'.*phi=-4, rule='efficienthrnet'"):
        bi.pose_model_with_backbone(other_rule, weights)


def test_missing_extra_and_misshaped_leaves_are_all_reported(b4, classifier_variables, pose_variables):
    variables = jax.tree.map(lambda a: a, classifier_variables)  # a copy of the containers
    params = variables["params"]["backbone"]
    del params["block_0"]["dw_bn"]["scale"]
    params["block_1"]["extra"] = np.zeros(3, np.float32)
    params["stem_conv"]["kernel"] = np.zeros((3, 3, 3, 5), np.float32)
    weights = bi.backbone_from_classifier_variables(variables, b4)
    with pytest.raises(ValueError) as err:
        bi.merge_backbone(pose_variables, weights, b4)
    message = str(err.value)
    assert "missing params/block_0/dw_bn/scale" in message
    assert "unexpected params/block_1/extra" in message
    assert "mis-shaped params/stem_conv/kernel: (3, 3, 3, 5)" in message


def test_unknown_top_level_entries_are_not_dropped_silently(b4, classifier_variables):
    variables = {c: dict(tree) for c, tree in classifier_variables.items()}
    variables["params"]["projector"] = {"kernel": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match=r"unexpected top-level 'params' entries \['projector'\]"):
        bi.backbone_from_classifier_variables(variables, b4)
    with pytest.raises(ValueError, match="has no 'backbone' entry"):
        bi.backbone_from_classifier_variables({"params": {"head_conv": {}}, "batch_stats": {}}, b4)


def test_pretrained_pose_module_has_plain_efficienthrnet_tree(b4, classifier_variables):
    """`init` of the training module merges the backbone and keeps EfficientHRNet's tree (traced only)."""
    weights = bi.backbone_from_classifier_variables(classifier_variables, b4)
    model = bi.pose_model_with_backbone(b4, weights)
    x = jnp.zeros((1, SIZE, SIZE, 3))
    shapes = jax.eval_shape(lambda k: model.init(k, x, train=False), jax.random.key(0))
    plain = jax.eval_shape(lambda k: EfficientHRNet(b4).init(k, x, train=False), jax.random.key(0))
    assert jax.tree.structure(shapes) == jax.tree.structure(plain)
    assert jax.tree.map(lambda s: s.shape, shapes) == jax.tree.map(lambda s: s.shape, plain)


def test_torch_backbone_goes_through_the_converter(b4, classifier_variables, pose_variables):
    """A reference-layout state dict of features.* (plus a classifier head) loads strictly."""
    from efficienthrnet import convert

    entries = convert.backbone_entries(b4.backbone)
    flat = {(e.collection,) + e.path: e for e in entries}
    state = {}
    for collection in ("params", "batch_stats"):
        for path, leaf in traverse_util.flatten_dict(classifier_variables[collection]["backbone"]).items():
            entry = flat[(collection, "backbone") + path]
            array = np.asarray(leaf)
            if entry.transpose is not None:  # back to the PyTorch layout
                array = array.transpose(np.argsort(entry.transpose))
            state[entry.torch_key] = array
    state["_fc.weight"] = np.zeros((10, 872), np.float32)  # the released checkpoints carry a head
    weights = bi.backbone_from_torch(state, b4)
    merged = bi.merge_backbone(pose_variables, weights, b4)
    got = traverse_util.flatten_dict(merged["params"]["backbone"])
    for path, leaf in traverse_util.flatten_dict(classifier_variables["params"]["backbone"]).items():
        np.testing.assert_array_equal(np.asarray(got[path]), leaf)
