"""The layer walk reproduces the reference measurements (§8 of the reference page) exactly.

Figures come from the shared folder's reference/efficienthrnet_reference.md §8.1/§8.2 (measured on the
authors' PyTorch models) and from the golden state-dict shapes of those models.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import shared_file
from efficienthrnet.complexity import (
    AS_REPORTED,
    AS_REPORTED_CLASSIFIERS,
    PARTS,
    _unpadded_taps,
    format_profile_table,
    profile,
    profile_classifier,
    profile_command,
    profile_table,
)
from efficienthrnet.nn.ops import conv_transpose_torch
from efficienthrnet.scaling import generate_config

GOLDEN_KEYS = "reference/golden/state_dict_keys.json"  # in the shared folder; skipped without it
PHIS = (0, -1, -2, -3, -4)
NAMES = {0: "H0", -1: "H-1", -2: "H-2", -3: "H-3", -4: "H-4"}

# §8.1: trainable params, backbone, HR transitions + stages (M, 3 decimals), head, MACs (G)
MEASURED = {
    0: (19_725_359, 3_595_388, (1.138, 14.919), 72_659, 23.96),
    -1: (13_004_446, 3_050_752, (0.813, 9.090), 50_933, 13.13),
    -2: (8_263_495, 2_125_854, (0.586, 5.516), 35_688, 7.03),
    -3: (5_360_390, 1_602_678, (0.421, 3.311), 25_364, 3.76),
    -4: (2_764_706, 993_186, (0.301, 1.452), 18_713, 1.81),
}
# §8.1 MAC split (G) by part, H0 .. H-4
MEASURED_SPLIT = {
    "backbone": (1.90, 1.50, 1.05, 0.72, 0.38),
    "transitions": (1.28, 0.79, 0.48, 0.29, 0.17),
    "stage2": (1.29, 0.75, 0.43, 0.24, 0.13),
    "stage3": (8.24, 3.56, 1.35, 0.38, 0.21),
    "stage4": (8.22, 4.73, 2.68, 1.51, 0.54),
    "head": (3.02, 1.80, 1.06, 0.62, 0.37),
}
# §8.1: what the repo's get_model_summary prints (the paper's figures before truncation)
SUMMARY = {
    0: (23_319_819, 25.619),
    -1: (16_054_270, 14.208),
    -2: (10_388_653, 7.725),
    -3: (6_962_372, 4.209),
    -4: (3_757_196, 2.105),
}


@pytest.fixture(scope="module")
def reference_profiles():
    return {phi: profile(generate_config(phi, rule="reference")) for phi in PHIS}


# ----------------------------------------------------------------------------- params


@pytest.mark.parametrize("phi", PHIS)
def test_reference_params_equal_measured(reference_profiles, phi):
    p = reference_profiles[phi]
    total, backbone, (transitions_m, stages_m), head, _ = MEASURED[phi]
    assert p.params == total
    assert p.parts["backbone"][0] == backbone
    assert p.parts["head"][0] == head
    assert round(p.parts["transitions"][0] / 1e6, 3) == transitions_m
    stages = sum(p.parts[s][0] for s in ("stage2", "stage3", "stage4"))
    assert round(stages / 1e6, 3) == stages_m
    assert sum(params for params, _ in p.parts.values()) == p.params


def _torch_part(key: str) -> str:
    """Which part a reference state-dict key belongs to."""
    if key.startswith("features."):
        return "backbone"
    if key.startswith("trans"):
        return "transitions"
    if key.startswith(("final_layers", "deconv_layers")):
        return "head"
    return key.split(".")[0]  # stage2 / stage3 / stage4


@pytest.mark.parametrize("phi", PHIS)
def test_walk_matches_reference_state_dict_per_part(reference_profiles, phi):
    """Params, BN statistics and number of conv kernels per part equal the PyTorch state dict's."""
    entries = json.loads(shared_file(GOLDEN_KEYS).read_text())[NAMES[phi]]
    params, stats, kernels = Counter(), Counter(), Counter()
    for key, shape, _ in entries:
        part, size = _torch_part(key), math.prod(shape)
        if key.endswith(("running_mean", "running_var")):
            stats[part] += size
        elif key.endswith(".weight") and len(shape) == 4:
            kernels[part] += 1
            params[part] += size
        elif not key.endswith("num_batches_tracked"):
            params[part] += size
    p = reference_profiles[phi]
    assert {part: p.parts[part][0] for part in PARTS} == dict(params)
    walk_stats = Counter()
    walk_kernels = Counter()
    for layer in p.layers:
        walk_stats[layer.part] += layer.bn_stats
        walk_kernels[layer.part] += layer.kind in ("conv", "depthwise", "deconv")
    assert dict(walk_stats) == dict(stats)
    assert dict(walk_kernels) == dict(kernels)


def test_h0_bn_statistics_are_reported_apart(reference_profiles):
    assert reference_profiles[0].bn_stats == 71_456  # §8.1: H0's BN running buffers


# ----------------------------------------------------------------------------- MACs


@pytest.mark.parametrize("phi", PHIS)
def test_reference_macs_equal_measured(reference_profiles, phi):
    p = reference_profiles[phi]
    assert p.input_size == (512 + 32 * phi,) * 2
    assert p.macs / 1e9 == pytest.approx(MEASURED[phi][4], rel=0.005)
    assert round(p.macs / 1e9, 2) == MEASURED[phi][4]  # the table's rounding, in fact
    assert p.flops == 2 * p.macs
    assert sum(macs for _, macs in p.parts.values()) == p.macs
    for part, row in MEASURED_SPLIT.items():
        # the split table is rounded to 2 decimals, once apparently via 3 (H-3 stage 4: 1.5047 -> 1.51)
        assert abs(p.parts[part][1] / 1e9 - row[PHIS.index(phi)]) <= 0.0055, part


def test_h0_head_macs_by_hand():
    """H0 head: deconv 66->32 k4 at 128^2 (input side), 4 3x3 convs 32->32 at 256^2, two 1x1 predictions."""
    p = profile(generate_config(0, rule="reference"))
    expected = 128 * 128 * 16 * 66 * 32 + 4 * 256 * 256 * 9 * 32 * 32 + 128 * 128 * 32 * 34 + 256 * 256 * 32 * 17
    assert p.parts["head"][1] == expected


def test_spatial_parts_scale_exactly_with_input_area():
    """Doubling the input side quadruples every spatial conv; only the SE convs (1x1 maps) do not."""
    cfg = generate_config(-2, rule="reference")
    small, large = profile(cfg, 256), profile(cfg, 512)
    for part in ("transitions", "stage2", "stage3", "stage4", "head"):
        assert large.parts[part][1] == 4 * small.parts[part][1]
    se = sum(layer.macs for layer in small.layers if "/se/" in layer.name)
    assert se > 0
    assert large.parts["backbone"][1] - se == 4 * (small.parts["backbone"][1] - se)


def test_input_size_forms_and_non_square():
    cfg = generate_config(-1, rule="reference")
    assert profile(cfg, 480) == profile(cfg) == profile(cfg, (480, 480))
    wide = profile(cfg, (384, 512))
    assert wide.input_size == (384, 512)
    assert wide.params == profile(cfg).params
    head = [layer for layer in wide.layers if layer.name == "head/final_1"][0]
    assert head.out_hw == (192, 256)
    # the model's fixed max(k - s, 0) padding: floor(in / stride) at odd sizes
    odd = profile(cfg, (101, 37))
    assert [layer.out_hw for layer in odd.layers if layer.name == "backbone/stem_conv"] == [(50, 18)]


@pytest.mark.parametrize("bad", [0, -32, (512,), (512, 0), 512.0, "512", True])
def test_bad_input_size_raises_naming_the_value(bad):
    with pytest.raises(ValueError, match="input_size"):
        profile(generate_config(0), bad)


def test_profile_needs_a_model_config():
    with pytest.raises(TypeError, match="generate_config"):
        profile({"phi": 0})


# ----------------------------------------------------------------------------- the paper's counter


@pytest.mark.parametrize("phi", PHIS)
def test_paper_counter_reproduces_get_model_summary(reference_profiles, phi):
    p = reference_profiles[phi]
    params, gmacs = SUMMARY[phi]
    assert p.paper_params == params
    assert round(p.paper_macs / 1e9, 3) == gmacs
    # the two bugs, one by one: MBConv params twice (so backbone minus stem), deconv 4x
    stem = sum(layer.params for layer in p.layers if layer.name.startswith("backbone/stem"))
    assert p.paper_params - p.params == p.parts["backbone"][0] - stem
    deconv = sum(layer.macs for layer in p.layers if layer.kind == "deconv")
    assert p.paper_macs - p.macs == 3 * deconv
    # truncating (not rounding) gives the paper's Table 3 figures
    reported = AS_REPORTED[phi]
    assert math.floor(p.paper_params / 1e5) / 10 == pytest.approx(reported.params / 1e6)
    assert math.floor(p.paper_macs / 1e8) / 10 == pytest.approx(reported.flops / 1e9)
    assert reported.input_size == p.input_size[0]


def test_as_reported_table_rows():
    assert [AS_REPORTED[phi].model for phi in PHIS] == ["H0", "H-1", "H-2", "H-3", "H-4"]
    assert [AS_REPORTED[phi].test_dev_ap for phi in PHIS] == [64.0, 59.1, 52.8, 44.5, 35.5]
    assert [AS_REPORTED[phi].test_dev_ap_multiscale for phi in PHIS] == [67.1, 62.3, 55.0, 45.5, 39.7]
    assert [AS_REPORTED[phi].val_ap for phi in PHIS] == [64.8, 59.2, 52.9, 44.8, 35.7]
    assert [AS_REPORTED[phi].params for phi in PHIS] == [23.3e6, 16.0e6, 10.3e6, 6.9e6, 3.7e6]
    # Table 4's FPS: H-1 is the one slower than H0 (the paper blames its tile sizes)
    fps = [AS_REPORTED[phi].fps_jetson_nx for phi in PHIS]
    assert fps[1] < fps[0] < fps[2] < fps[3] < fps[4]


# ----------------------------------------------------------------------------- classifiers


@pytest.mark.parametrize(
    "phi, resolution, params_1000, params_100",
    [(0, 224, 5.289, 4.136), (-1, 195, 4.548, 3.503), (-2, 170, 3.464, 2.512), (-3, 147, 2.796, 1.931)],
)
def test_classifier_params_equal_measured(phi, resolution, params_1000, params_100):
    cfg = generate_config(phi, rule="reference")
    imagenet = profile_classifier(cfg, 1000, resolution)
    cifar = profile_classifier(cfg, 100, resolution)
    assert round(imagenet.params / 1e6, 3) == params_1000
    assert round(cifar.params / 1e6, 3) == params_100
    # the backbone alone is EfficientHRNet's feature extractor
    assert imagenet.parts["backbone"] == profile(cfg, resolution).parts["backbone"]
    head_channels = cfg.backbone.classifier_head_channels
    assert imagenet.params - cifar.params == 900 * head_channels + 900
    assert AS_REPORTED_CLASSIFIERS[phi].resolution == resolution


def test_b0_classifier_is_efficientnet_b0():
    p = profile_classifier(generate_config(0, rule="reference"))
    assert p.input_size == (224, 224)
    assert p.params == 5_288_548  # EfficientNet-B0's well-known count
    assert round(p.macs / 1e9, 3) == 0.386
    assert p.paper_params == p.params and p.paper_macs == p.macs


@pytest.mark.parametrize("phi, resolution, gmacs", [(0, 224, 0.386), (-1, 195, 0.254), (-2, 169, 0.147),
                                                    (-2, 170, 0.148), (-3, 147, 0.088), (-4, 128, 0.046)])
def test_classifier_macs_match_the_reference_measurement(phi, resolution, gmacs):
    """Reference page 8.2: MACs of the reference classifiers at Table 2's resolutions."""
    p = profile_classifier(generate_config(phi, rule="reference"), 1000, resolution)
    assert round(p.macs / 1e9, 3) == gmacs


def test_classifier_rejects_bad_num_classes():
    with pytest.raises(ValueError, match="num_classes"):
        profile_classifier(generate_config(0), 0)


# ----------------------------------------------------------------------------- XLA's count, layer by layer


def _xla_flops(fn, *shapes) -> int:
    """XLA's CPU cost analysis (on GPU the convs become cuDNN calls that it does not cost)."""
    cpu = jax.sharding.SingleDeviceSharding(jax.devices("cpu")[0])
    structs = [jax.ShapeDtypeStruct(s, jnp.float32, sharding=cpu) for s in shapes]
    cost = jax.jit(fn).lower(*structs).compile().cost_analysis()
    return int((cost[0] if isinstance(cost, list) else cost)["flops"])


@pytest.mark.parametrize(
    "n, k, stride, pad, cin, cout, groups",
    [
        (16, 3, 1, (1, 1), 8, 8, 1),  # BasicBlock conv
        (16, 3, 2, (1, 1), 8, 12, 1),  # stride-2 fuse conv, PyTorch padding
        (16, 3, 2, (0, 1), 8, 8, 8),  # TF SAME depthwise
        (16, 5, 2, (1, 2), 8, 8, 8),
        (15, 5, 2, (1, 2), 8, 8, 8),  # odd size
        (9, 5, 1, (2, 2), 4, 4, 4),
        (7, 1, 1, (0, 0), 4, 6, 1),  # 1x1: no padding, count is exact
    ],
)
def test_unpadded_taps_is_what_xla_counts(n, k, stride, pad, cin, cout, groups):
    """XLA: 2 FLOPs per multiply-add, taps on the zero padding left out."""

    def conv(x, w):
        return jax.lax.conv_general_dilated(
            x, w, (stride, stride), [pad, pad], dimension_numbers=("NHWC", "HWIO", "NHWC"),
            feature_group_count=groups,
        )

    n_out = (n + sum(pad) - k) // stride + 1
    per_axis = _unpadded_taps(n, n_out, k, stride, pad[0])
    assert _xla_flops(conv, (1, n, n, cin), (k, k, cin // groups, cout)) == 2 * per_axis**2 * cin // groups * cout
    if k > 1:
        assert per_axis < n_out * k  # so the full-kernel count is strictly larger


@pytest.mark.parametrize("n", [4, 5, 8])
def test_unpadded_taps_of_the_transposed_conv(n):
    """k4 s2 p1 ConvTranspose: per axis 4n - 2 pairs hit a real pixel, against 4n in the true MACs."""
    per_axis = _unpadded_taps(n, 2 * n, 4, 1, 2, 2)
    assert per_axis == 4 * n - 2
    xla = _xla_flops(lambda x, w: conv_transpose_torch(x, w, 2, 1), (1, n, n, 6), (4, 4, 6, 5))
    assert xla == 2 * per_axis**2 * 6 * 5


def test_unpadded_macs_are_a_few_percent_below_macs(reference_profiles):
    ratio = reference_profiles[0].unpadded_macs / reference_profiles[0].macs
    assert 0.96 < ratio < 0.99  # DESIGN.md: "about 4 % below"
    for layer in reference_profiles[0].layers:
        assert layer.unpadded_macs <= layer.macs


# ----------------------------------------------------------------------------- tables and speed


def test_profile_of_100_phis_is_fast():
    phis = np.linspace(-6, 3, 100)
    start = time.perf_counter()
    profiles = [profile(generate_config(float(phi), rule="efficienthrnet")) for phi in phis]
    elapsed = time.perf_counter() - start
    assert elapsed < 10.0, f"100 profiles took {elapsed:.2f} s"
    macs = [p.macs for p in profiles]
    assert macs == sorted(macs)  # a larger phi never gives a cheaper model


def test_profile_table_side_by_side(reference_profiles):
    df = profile_table([0, -4, -2.5], rule="reference")
    assert list(df["phi"]) == [0.0, -4.0, -2.5]
    assert df.loc[0, "params"] == reference_profiles[0].params
    assert df.loc[1, "macs_stage4"] == reference_profiles[-4].parts["stage4"][1]
    assert df.loc[0, "paper_counter_params"] == 23_319_819
    assert df.loc[1, "reported_flops"] == 2.1e9
    assert df.loc[2, "reported_params"] is None or np.isnan(df.loc[2, "reported_params"])  # no paper model
    text = format_profile_table(df)
    assert "19.725" in text and "23.958" in text and "23.320/25.619" in text and "23.3/25.6@512" in text
    assert text.splitlines()[0].split()[:3] == ["phi", "rule", "input"]


def test_profile_command_json_and_input_size():
    rows = json.loads(profile_command([-4], rule="reference", input_size=256, as_json=True))
    assert rows[0]["input_h"] == 256 and rows[0]["params"] == 2_764_706
    assert rows[0]["macs"] == profile(generate_config(-4, rule="reference"), 256).macs
