"""PyTorch -> Flax weight conversion: every reference state-dict name of H0..H-4 maps onto the
Flax tree (strict), errors list every bad entry, checkpoint unwrapping, backbone-only import."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from conftest import shared_file
from efficienthrnet.convert import (
    backbone_variables_from_torch,
    load_torch_checkpoint,
    unwrap_state_dict,
    variables_from_torch,
)
from efficienthrnet.nn import init_shapes
from efficienthrnet.scaling import generate_config

CONFIGS = {"H0": 0, "H-1": -1, "H-2": -2, "H-3": -3, "H-4": -4}


@pytest.fixture(scope="module")
def reference_keys() -> dict:
    return json.loads(shared_file("reference/golden/state_dict_keys.json").read_text())


def _zeros(entries) -> dict[str, np.ndarray]:
    return {name: np.zeros(shape, np.float32) for name, shape, _dtype in entries}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_reference_names_and_shapes_map_onto_the_model(reference_keys, name):
    cfg = generate_config(CONFIGS[name], rule="reference")
    variables = variables_from_torch(_zeros(reference_keys[name]), cfg)
    expected = init_shapes(cfg, 64)
    got_shapes = jax.tree_util.tree_map(lambda a: a.shape, variables)
    want_shapes = jax.tree_util.tree_map(lambda s: tuple(s.shape), expected)
    assert got_shapes == want_shapes
    # every float tensor of the state dict was used (num_batches_tracked are the only leftovers)
    used = sum(leaf.size for leaf in jax.tree_util.tree_leaves(variables))
    floats = sum(int(np.prod(shape)) for _n, shape, dtype in reference_keys[name] if dtype == "float32")
    assert used == floats


def test_layouts_are_transposed_not_reshaped(reference_keys):
    cfg = generate_config(-4, rule="reference")
    state = _zeros(reference_keys["H-4"])
    conv = np.arange(14 * 16 * 9, dtype=np.float32).reshape(14, 16, 3, 3)  # OIHW
    depthwise = np.arange(96 * 9, dtype=np.float32).reshape(96, 1, 3, 3)
    deconv = np.arange(48 * 14 * 16, dtype=np.float32).reshape(48, 14, 4, 4)  # IOHW
    state["trans1_branch1.0.weight"] = conv
    state["features.2.conv.1.1.weight"] = depthwise
    state["deconv_layers.0.0.0.weight"] = deconv
    state["features.0.2.running_var"] = np.full(24, 3.0, np.float32)
    v = variables_from_torch(state, cfg)
    params = v["params"]
    trans_kernel = params["hrnet"]["transition1"]["branch_0"]["conv"]["kernel"]
    np.testing.assert_array_equal(trans_kernel, conv.transpose(2, 3, 1, 0))
    dw_kernel = params["backbone"]["block_1"]["dw_conv"]["kernel"]
    np.testing.assert_array_equal(dw_kernel[:, :, 0, :], depthwise[:, 0].transpose(1, 2, 0))
    deconv_kernel = params["head"]["deconv_0"]["deconv"]["kernel"]
    np.testing.assert_array_equal(deconv_kernel, deconv.transpose(2, 3, 0, 1))
    np.testing.assert_array_equal(v["batch_stats"]["backbone"]["stem_bn"]["var"], 3.0)


def test_strict_errors_list_every_problem(reference_keys):
    cfg = generate_config(-4, rule="reference")
    state = _zeros(reference_keys["H-4"])
    del state["stage2.0.fuse_layers.0.1.1.running_var"]
    del state["final_layers.1.bias"]
    state["extra.layer.weight"] = np.zeros(3, np.float32)
    state["features.0.1.weight"] = np.zeros((32, 3, 3, 3), np.float32)
    with pytest.raises(ValueError) as info:
        variables_from_torch(state, cfg)
    message = str(info.value)
    for fragment in (
        "2 missing",
        "stage2.0.fuse_layers.0.1.1.running_var",
        "final_layers.1.bias",
        "1 unexpected: extra.layer.weight",
        "1 mis-shaped: features.0.1.weight: got shape (32, 3, 3, 3), expected (24, 3, 3, 3)",
    ):
        assert fragment in message


def test_weights_of_another_phi_are_rejected(reference_keys):
    with pytest.raises(ValueError, match="mis-shaped"):
        variables_from_torch(_zeros(reference_keys["H-3"]), generate_config(-4, rule="reference"))


def test_unwrap_state_dict_handles_wrappers():
    inner = {"module.features.0.1.weight": 1, "module.final_layers.0.bias": 2}
    unwrapped = unwrap_state_dict({"state_dict": inner, "epoch": 3})
    assert unwrapped == {"features.0.1.weight": 1, "final_layers.0.bias": 2}
    assert unwrap_state_dict({"a": 1}) == {"a": 1}
    with pytest.raises(ValueError, match="both with and without"):
        unwrap_state_dict({"module.a": 1, "a": 2})


def test_backbone_only_import(reference_keys):
    cfg = generate_config(-2, rule="reference")
    full = _zeros(reference_keys["H-2"])
    backbone_state = {k: v for k, v in full.items() if k.startswith("features.")}
    backbone_state["features.0.2.weight"] = np.full(24, 2.0, np.float32)
    v = backbone_variables_from_torch(backbone_state, cfg)
    assert set(v["params"]) == {"backbone"}
    np.testing.assert_array_equal(v["params"]["backbone"]["stem_bn"]["scale"], 2.0)
    assert jax.tree_util.tree_map(np.shape, v["params"]["backbone"]) == jax.tree_util.tree_map(
        lambda s: tuple(s.shape), init_shapes(cfg, 64)["params"]["backbone"]
    )
    # a classifier checkpoint carries head weights: an error unless asked to ignore them
    backbone_state["classifier.weight"] = np.zeros((1000, 1056), np.float32)
    with pytest.raises(ValueError, match="classifier.weight"):
        backbone_variables_from_torch(backbone_state, cfg)
    backbone_variables_from_torch(backbone_state, cfg, ignore_non_backbone=True)


def test_load_torch_checkpoint_errors(tmp_path):
    cfg = generate_config(-4, rule="reference")
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        load_torch_checkpoint(tmp_path / "nope.pth", cfg)
    path = tmp_path / "model.pth"
    path.write_bytes(b"not a checkpoint")
    try:
        import torch  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"pip install efficienthrnet\[torch\]"):
            load_torch_checkpoint(path, cfg)
    else:
        with pytest.raises(Exception):
            load_torch_checkpoint(path, cfg)
