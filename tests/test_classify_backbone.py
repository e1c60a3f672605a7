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
from efficienthrnet.nn.model import init_shapes
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
        bi.merge_backbone(pose_variables, weights, other_rule)


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
    # the first line names the first problem (sorted per collection) and the pose model
    first = message.splitlines()[0]
    assert "phi=-4, rule='reference'" in first and "first missing params/block_0/dw_bn/scale" in first


def test_unknown_top_level_entries_are_not_dropped_silently(b4, classifier_variables):
    variables = {c: dict(tree) for c, tree in classifier_variables.items()}
    variables["params"]["projector"] = {"kernel": np.zeros((2, 2), np.float32)}
    with pytest.raises(ValueError, match=r"unexpected top-level 'params' entries \['projector'\]"):
        bi.backbone_from_classifier_variables(variables, b4)
    with pytest.raises(ValueError, match="has no 'backbone' entry"):
        bi.backbone_from_classifier_variables({"params": {"head_conv": {}}, "batch_stats": {}}, b4)


def test_merge_pretrained_replaces_only_the_named_subtree():
    variables = {
        "params": {"a": {"k": np.zeros((2, 3), np.float32)}, "b": {"k": np.ones(4, np.float32)}},
        "batch_stats": {"a": {"mean": np.zeros(3, np.float32)}},
    }
    pretrained = {"params": {"k": np.full((2, 3), 7.0)}, "batch_stats": {"mean": np.full(3, 2.0)}}
    merged = bi.merge_pretrained(variables, pretrained, where=("a",))
    np.testing.assert_array_equal(merged["params"]["a"]["k"], np.full((2, 3), 7.0))
    assert merged["params"]["a"]["k"].dtype == np.float32  # the model's dtype, not the given one
    np.testing.assert_array_equal(merged["params"]["b"]["k"], np.ones(4))
    np.testing.assert_array_equal(variables["params"]["a"]["k"], np.zeros((2, 3)))  # not modified
    bad = {"params": {"k": np.zeros((3, 2))}, "batch_stats": {"mean": np.zeros(3)}}
    with pytest.raises(ValueError, match=r"into 'a' of the model: first mis-shaped params/k: \(3, 2\), "
                                         r"the model needs \(2, 3\)"):
        bi.merge_pretrained(variables, bad, where=("a",))


def test_start_from_merges_into_a_train_state(b4, classifier_variables, pose_variables):
    """What `train(init_from=weights)` does to the freshly initialised state (no network compiled)."""
    from flax.struct import dataclass as struct_dataclass

    @struct_dataclass
    class State:
        params: dict
        batch_stats: dict

        def replace(self, **changes):
            return State(**{**self.__dict__, **changes})

    weights = bi.backbone_from_classifier_variables(classifier_variables, b4)
    state = bi.start_from(State(pose_variables["params"], pose_variables["batch_stats"]), weights, b4)
    want = classifier_variables["batch_stats"]["backbone"]["stem_bn"]["var"]
    np.testing.assert_array_equal(np.asarray(state.batch_stats["backbone"]["stem_bn"]["var"]), want)
    np.testing.assert_array_equal(state.params["head"]["final_0"]["kernel"],
                                  pose_variables["params"]["head"]["final_0"]["kernel"])


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
