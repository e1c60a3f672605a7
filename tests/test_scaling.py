"""Scaling rules: Table 1 exactly under the reference rule, monotone and valid for any phi."""

import ast
import json
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from efficienthrnet import scaling
from efficienthrnet.config import ModelConfig
from efficienthrnet.scaling import explain, generate_config, get_rule, list_rules, load_rule

# Table 1 of the paper and the reference page's backbone table (section 2).
TABLE1 = {
    0: (512, (32, 64, 128, 256), (1, 4, 3), (128, 256)),
    -1: (480, (26, 52, 103, 206), (1, 3, 3), (120, 240)),
    -2: (448, (21, 42, 83, 166), (1, 2, 3), (112, 224)),
    -3: (416, (17, 34, 67, 133), (1, 1, 3), (104, 208)),
    -4: (384, (14, 27, 54, 107), (1, 1, 2), (96, 192)),
}
BACKBONES = {
    0: (32, (16, 24, 40, 80, 112, 192, 320), (1, 2, 2, 3, 3, 4, 1), (24, 40, 112, 320)),
    -1: (32, (16, 24, 40, 72, 104, 176, 288), (1, 2, 2, 3, 3, 4, 1), (24, 40, 104, 288)),
    -2: (24, (16, 24, 32, 64, 96, 160, 264), (1, 2, 2, 3, 3, 3, 1), (24, 32, 96, 264)),
    -3: (24, (16, 24, 32, 64, 88, 144, 240), (1, 2, 2, 2, 2, 3, 1), (24, 32, 88, 240)),
    -4: (24, (16, 16, 32, 56, 80, 128, 216), (1, 1, 1, 2, 2, 2, 1), (16, 32, 80, 216)),
}


@pytest.mark.parametrize("phi", sorted(TABLE1))
def test_reference_rule_gives_table1(phi):
    cfg = generate_config(phi, rule="reference")
    size, widths, modules, outputs = TABLE1[phi]
    assert cfg.input_size == size
    assert cfg.hrnet.branch_widths == widths
    assert cfg.hrnet.modules_per_stage == modules
    assert cfg.output_sizes == outputs
    assert cfg.head.deconv_channels == widths[0]
    assert cfg.hrnet.blocks_per_branch == 2 and cfg.head.blocks_per_deconv == 2


@pytest.mark.parametrize("phi", sorted(BACKBONES))
def test_reference_rule_gives_released_backbones(phi):
    bb = generate_config(phi, rule="reference").backbone
    stem, channels, repeats, taps = BACKBONES[phi]
    assert bb.stem_channels == stem
    assert tuple(s.channels for s in bb.stages) == channels
    assert tuple(s.repeats for s in bb.stages) == repeats
    assert bb.tap_channels == taps
    assert bb.tap_strides == (4, 8, 16, 32)


def test_reference_multipliers_are_the_yaml_literals():
    got = [scaling.backbone_multipliers(p, get_rule("reference"))[2:] for p in (0, -1, -2, -3, -4)]
    assert got == [(1.0, 1.0), (0.909, 0.833), (0.826, 0.694), (0.751, 0.578), (0.684, 0.483)]


def test_paper_rule_hr_widths_use_1_25():
    # Reference page section 3: ceil(base * 1.25^phi).
    assert generate_config(-1).hrnet.branch_widths == (26, 52, 103, 205)
    assert generate_config(-4).hrnet.branch_widths == (14, 27, 53, 105)


def test_classifier_resolution_and_head_width():
    got = [(generate_config(p, "reference").backbone.classifier_resolution,
            generate_config(p, "reference").backbone.classifier_head_channels) for p in (0, -1, -2, -3, -4)]
    assert got == [(224, 1280), (195, 1160), (169, 1056), (147, 960), (128, 872)]


def test_readme_example_fractional_phi():
    cfg = generate_config(phi=-2.5)
    assert cfg.input_size == 416
    assert cfg.hrnet.branch_widths == (19, 37, 74, 147)
    assert cfg.hrnet.modules_per_stage == (1, 1, 3)
    assert cfg.output_sizes == (104, 208)


def test_positive_phi_scales_up():
    cfg = generate_config(2.0)
    assert cfg.input_size == 576
    assert cfg.hrnet.modules_per_stage == (1, 6, 3)  # more modules on the middle stage
    assert cfg.backbone.num_blocks > generate_config(0).backbone.num_blocks
    assert cfg.hrnet.branch_widths == (50, 100, 200, 400)


def _sizes(cfg: ModelConfig):
    bb = cfg.backbone
    return (
        [cfg.input_size, bb.stem_channels, bb.classifier_head_channels, cfg.head.deconv_channels]
        + [s.channels for s in bb.stages]
        + [s.repeats for s in bb.stages]
        + list(cfg.hrnet.branch_widths)
        + list(cfg.hrnet.modules_per_stage)
    )


@pytest.mark.parametrize("rule", list_rules())
@settings(max_examples=60, deadline=None)
@given(a=st.floats(-6, 3), b=st.floats(-6, 3))
def test_monotone_and_valid_for_any_phi(rule, a, b):
    lo, hi = sorted((a, b))
    small, large = generate_config(lo, rule), generate_config(hi, rule)
    assert small.input_size % 32 == 0 and large.input_size % 32 == 0
    assert all(x <= y for x, y in zip(_sizes(small), _sizes(large))), (lo, hi)
    assert all(s.channels % 8 == 0 for s in small.backbone.stages)
    assert min(small.hrnet.modules_per_stage) >= 1


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf, "-2", None, True, -6.5, 3.5])
def test_bad_phi_names_value_and_range(bad):
    with pytest.raises(ValueError) as err:
        generate_config(bad)
    assert repr(bad) in str(err.value) and "[-6.0, 3.0]" in str(err.value)


def test_json_round_trip():
    cfg = generate_config(-2.5, rule="reference")
    again = ModelConfig.from_json(cfg.to_json())
    assert again == cfg
    assert ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


def test_from_dict_rejects_unknown_fields():
    data = generate_config(-1).to_dict()
    data["hrnet"]["widths"] = [1]
    with pytest.raises(ValueError, match="widths"):
        ModelConfig.from_dict(data)


def test_rule_as_path_and_object(tmp_path):
    rule = get_rule("reference")
    assert generate_config(-3, rule) == generate_config(-3, "reference")
    assert generate_config(-3, rule.source) == generate_config(-3, "reference")


def test_rule_file_missing_field_is_named(tmp_path):
    text = (scaling.RULES_DIR / "efficienthrnet.toml").read_text().replace("channel_divisor = 8", "")
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(ValueError, match=r"backbone\.channel_divisor") as err:
        load_rule(path)
    assert str(path) in str(err.value)


def test_rule_file_unknown_field_is_named(tmp_path):
    path = tmp_path / "extra.toml"
    path.write_text('base = "efficienthrnet"\nname = "extra"\n[hrnet]\nwidth_coeff = 1.3\n')
    with pytest.raises(ValueError, match=r"hrnet\.width_coeff") as err:
        load_rule(path)
    assert str(path) in str(err.value)


def test_derived_rule_overrides_only_what_it_says(tmp_path):
    path = tmp_path / "wider.toml"
    path.write_text(
        f'base = "{scaling.RULES_DIR / "efficienthrnet.toml"}"\nname = "wider"\n'
        'description = "x"\n[hrnet]\nwidth_coefficient = 1.5\n'
    )
    cfg = generate_config(-1, path)
    assert cfg.rule == "wider"
    assert cfg.hrnet.branch_widths == tuple(math.ceil(b / 1.5) for b in (32, 64, 128, 256))
    assert cfg.backbone == generate_config(-1).backbone


def test_unknown_rule_lists_known_rules():
    with pytest.raises(FileNotFoundError, match="reference"):
        generate_config(-1, rule="no_such_rule")


def test_width_only_and_resolution_only_rules():
    w, r = generate_config(-3, "width_only"), generate_config(-3, "resolution_only")
    assert w.input_size == 512 and w.hrnet.modules_per_stage == (1, 4, 3)
    assert w.hrnet.branch_widths == generate_config(-3).hrnet.branch_widths
    assert r.input_size == 416 and r.hrnet.branch_widths == (32, 64, 128, 256)
    assert r.backbone.stages == generate_config(0).backbone.stages
    assert r.backbone.classifier_resolution == 147  # resolution scaling applies to the classifier too


def test_explain_reports_raw_and_used():
    rows = {row["quantity"]: row for row in explain(-4, "reference")}
    assert rows["backbone width multiplier"]["used"] == 0.684
    assert rows["backbone width multiplier"]["raw"] == pytest.approx(1.1**-4)
    assert rows["HR branch 4 width"]["used"] == 107
    assert rows["input resolution"]["used"] == 384


def test_no_scaling_literals_in_scaling_code():
    # The rule is data: apart from neutral numbers, scaling*.py holds no numeric literal.
    for path in sorted(scaling.RULES_DIR.parent.glob("scaling*.py")):
        tree = ast.parse(path.read_text())
        numbers = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and type(n.value) in (int, float)}
        assert numbers <= {0, 1, 2, 0.5, 1e-9}, path.name  # 2: half a divisor rounds to nearest, numbers
