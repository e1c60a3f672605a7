"""Issue 12 (hardening), the scaling/config core: numpy phis, rule values, one phi range rule,
non-finite hyper-parameters, a hermetic package and hermetic tests. Every error names what is wrong."""

from __future__ import annotations

import subprocess
import sys
import venv
from pathlib import Path

import numpy as np
import pytest

from efficienthrnet import cli, config, scaling
from efficienthrnet.scaling import generate_config, load_rule, phi_range

REPO = Path(__file__).resolve().parents[1]
BASE_RULE = scaling.RULES_DIR / "efficienthrnet.toml"


# ----------------------------------------------------------------------------- phi as a numpy scalar


@pytest.mark.parametrize("phi", [np.float32(-4), np.float64(-4.0), np.int64(-4), np.int32(-4)])
def test_numpy_real_scalars_are_accepted_as_phi(phi):
    cfg = generate_config(phi)
    assert cfg == generate_config(-4.0) and type(cfg.phi) is float
    assert type(cfg).from_json(cfg.to_json()) == cfg  # a numpy scalar must not leak into the JSON


@pytest.mark.parametrize("phi", [True, np.bool_(False), 1j, "-4", None])
def test_bool_and_non_real_phi_are_refused_naming_the_value(phi):
    with pytest.raises(ValueError, match="phi must be a real number") as err:
        generate_config(phi)
    assert repr(phi) in str(err.value) and type(phi).__name__ in str(err.value)


# ----------------------------------------------------------------------------- rule values


def _rule_with(tmp_path, section: str, line: str) -> Path:
    """A rule deriving from the shipped one with one field of `section` overridden."""
    path = tmp_path / "bad_rule.toml"
    path.write_text(f'base = "efficienthrnet"\nname = "bad"\ndescription = "x"\n[{section}]\n{line}\n')
    return path


@pytest.mark.parametrize("section, line, field, shown", [
    ("backbone", "width_coefficient = 0", "backbone.width_coefficient", "0"),
    ("backbone", "depth_coefficient = -1.2", "backbone.depth_coefficient", "-1.2"),
    ("backbone", "channel_divisor = 0", "backbone.channel_divisor", "0"),
    ("backbone", "channel_divisor = 8.5", "backbone.channel_divisor", "8.5"),
    ("backbone", "multiplier_decimals = 2.5", "backbone.multiplier_decimals", "2.5"),
    ("backbone", 'stem_channels = "32"', "backbone.stem_channels", "'32'"),
    ("backbone", "channel_round_limit = 1.5", "backbone.channel_round_limit", "1.5"),
    ("backbone", "channel_round_limit = 0", "backbone.channel_round_limit", "0"),
    ("backbone", "se_ratio = nan", "backbone.se_ratio", "nan"),
    ("backbone", "stages = [[1, 16, 1, 1, 3], [6, 24, 0, 2, 3]]", "backbone.stages[1]", "[6, 24, 0, 2, 3]"),
    ("backbone", "multiplier_overrides = [[0.0, 0.0, 1.0]]", "backbone.multiplier_overrides[0]", "[0.0, 0.0, 1.0]"),
    ("hrnet", "width_coefficient = inf", "hrnet.width_coefficient", "inf"),
    ("hrnet", "branch_base_widths = [32, 64, 0, 256]", "hrnet.branch_base_widths[2]", "0"),
    ("hrnet", "modules_per_phi = -1.0", "hrnet.modules_per_phi", "-1.0"),
    ("hrnet", "transition_bias = 1", "hrnet.transition_bias", "1"),
    ("hrnet", "width_rounding = \"up\"", "hrnet.width_rounding", "'up'"),
    ("head", "deconv_kernel = 5", "head.deconv_kernel", "5"),
    ("resolution", "multiple = 16", "resolution.multiple", "16"),
    ("resolution", "min = 100", "resolution.min", "100"),
])
def test_rule_field_values_are_checked_naming_file_field_and_value(tmp_path, section, line, field, shown):
    path = _rule_with(tmp_path, section, line)
    with pytest.raises(ValueError) as err:
        load_rule(path)
    message = str(err.value)
    assert str(path) in message and f"{field} = {shown}" in message and "must be" in message


@pytest.mark.parametrize("section, line, field, supported", [
    ("head", "tag_dim = 2", "head.tag_dim", "1"),
    ("head", "tags_at_half = true", "head.tags_at_half", "False"),
    ("head", "num_deconvs = 2", "head.num_deconvs", "1"),
    ("resolution", "output_strides = [4]", "resolution.output_strides", "[4, 2]"),
])
def test_fields_the_pipeline_does_not_support_are_refused_saying_what_is(tmp_path, section, line, field, supported):
    path = _rule_with(tmp_path, section, line)
    with pytest.raises(ValueError) as err:
        load_rule(path)
    message = str(err.value)
    assert str(path) in message and field in message and f"must be {supported}" in message


def test_tap_strides_must_end_at_the_network_stride(tmp_path):
    path = _rule_with(tmp_path, "backbone", "tap_stages = [2, 3, 4, 5]")  # strides 4, 8, 16, 16
    with pytest.raises(ValueError, match=rf"backbone\.tap_stages = \[2, 3, 4, 5\].*{config.NETWORK_STRIDE}") as err:
        load_rule(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize("section, line, what", [
    ("hrnet", "width_coefficient = 100.0", "every HR branch width is clamped to hrnet.branch_min_width"),
    ("backbone", "width_coefficient = 100.0", "every backbone stage is clamped to backbone.channel_min"),
    ("backbone", "depth_coefficient = 100.0", "every backbone stage has one repeat"),
])
def test_rules_that_collapse_the_model_are_refused(tmp_path, section, line, what):
    path = _rule_with(tmp_path, section, line)
    with pytest.raises(ValueError, match="degenerate model") as err:
        load_rule(path)
    message = str(err.value)
    assert str(path) in message and what in message and "phi.min = -6" in message and "100.0" in message


def test_every_rule_field_has_a_value_check():
    """A field added to a rule section without a check would again be accepted with any value."""
    import dataclasses

    fields = {f"{section}.{f.name}" for section, cls in scaling._SECTIONS.items()
              for f in dataclasses.fields(cls) if not f.name.endswith("rounding")}
    assert fields == set(scaling._FIELD_CHECKS)


@pytest.mark.parametrize("name", scaling.list_rules())
def test_shipped_rules_pass_the_value_checks(name):
    assert load_rule(scaling.RULES_DIR / f"{name}.toml").name == name


# ----------------------------------------------------------------------------- one network stride


def test_the_network_stride_comes_from_config():
    from efficienthrnet import predict
    from efficienthrnet.data import pipeline
    from efficienthrnet.train import TrainConfig

    assert predict.SIZE_STEP == config.NETWORK_STRIDE
    assert max(generate_config(-4).backbone.tap_strides) == config.NETWORK_STRIDE
    for refuse in (lambda: pipeline.output_sizes(48), lambda: TrainConfig(input_size=48),
                   lambda: generate_config(-4).with_input_size(48)):
        with pytest.raises(ValueError, match=f"48.*{config.NETWORK_STRIDE}"):
            refuse()


# ----------------------------------------------------------------------------- phi ranges


@pytest.mark.parametrize("args, expected", [
    ((0, 1, 0.6), (0.0, 0.6)),                    # never past stop
    ((0, -4, 1), (0.0, -1.0, -2.0, -3.0, -4.0)),   # descending with a positive step
    ((0, -4, -1), (0.0, -1.0, -2.0, -3.0, -4.0)),  # ... or a negative one
    ((-1, 0, 0.25), (-1.0, -0.75, -0.5, -0.25, 0.0)),
    ((2, 2, 1), (2.0,)),
])
def test_phi_range(args, expected):
    assert phi_range(*args) == expected


def test_phi_range_is_float_safe():
    values = phi_range(-6, 2, 0.1)
    assert len(values) == 81 and values[0] == -6.0 and values[-1] == 2.0 and -5.7 in values


@pytest.mark.parametrize("args, shown", [
    ((0, 1, 0), "step must not be 0"),
    ((0, 4, -1), "step -1 moves away from stop 4"),
    ((float("nan"), 1, 1), "start must be a finite number, got nan"),
    ((0, True, 1), "stop must be a finite number, got True"),
    ((0, 1e9, 1e-3), "at most"),
])
def test_phi_range_refusals_name_the_value(args, shown):
    with pytest.raises(ValueError, match=shown):
        phi_range(*args)


def test_cli_and_sweep_spec_share_the_range_rule():
    from efficienthrnet.sweep import _phi_values

    for start, stop, step in [(0, 1, 0.6), (0, -4, 1), (-6, 2, 0.25)]:
        assert tuple(cli._phi_list(f"{start}:{stop}:{step}")) == _phi_values(
            {"start": start, "stop": stop, "step": step}, "spec") == phi_range(start, stop, step)
    with pytest.raises(ValueError, match=r"sweep spec x\.toml: phi = .*step must not be 0"):
        _phi_values({"start": 0, "stop": 1, "step": 0}, "sweep spec x.toml")


@pytest.mark.parametrize("text, shown", [
    ("0:1:0", "step must not be 0"), ("1:2", "needs exactly start:stop:step"),
    ("a,b", "'a,b' is not a list of numbers"), (",", "holds no value"),
])
def test_cli_phi_option_refuses_bad_ranges_naming_them(capsys, text, shown):
    with pytest.raises(SystemExit) as exit_:
        cli.main(["profile", f"--phi={text}"])
    assert exit_.value.code != 0
    err = capsys.readouterr().err
    assert "--phi" in err and shown in err and "Traceback" not in err


def test_profile_with_a_descending_range_runs(capsys):
    assert cli.main(["profile", "--phi=0:-4:1"]) == 0
    out = capsys.readouterr().out
    for phi in (" 0 ", "-1 ", "-2 ", "-3 ", "-4 "):
        assert phi in out


# ----------------------------------------------------------------------------- non-finite hyper-parameters


@pytest.mark.parametrize("kwargs, shown", [
    ({"weight_decay": float("nan")}, "TrainConfig.weight_decay=nan"),
    ({"learning_rate": float("inf")}, "TrainConfig.learning_rate=inf"),
    ({"decay_factor": float("-inf")}, "TrainConfig.decay_factor=-inf"),
    ({"decay_fractions": (0.5, float("nan"))}, "TrainConfig.decay_fractions=(0.5, nan)"),
])
def test_train_config_refuses_non_finite_numbers(kwargs, shown):
    from efficienthrnet.train import TrainConfig

    with pytest.raises(ValueError, match="not a finite number") as err:
        TrainConfig(**kwargs)
    assert shown in str(err.value)


def test_cli_train_refuses_nan_weight_decay_before_writing(tmp_path, capsys):
    out = tmp_path / "run"
    code = cli.main(["train", "--phi", "-4", "--data", f"synthetic:{tmp_path / 'none'}", "--steps", "1",
                     "--weight-decay", "nan", "--out", str(out)])
    err = capsys.readouterr().err
    assert code != 0 and "TrainConfig.weight_decay=nan" in err and not out.exists()


def test_classify_config_refuses_non_finite_numbers():
    from efficienthrnet.classify import ClassifyConfig

    with pytest.raises(ValueError, match=r"ClassifyConfig\.momentum=nan"):
        ClassifyConfig(momentum=float("nan"))


# ----------------------------------------------------------------------------- hermetic tests


def test_conftest_treats_a_folder_without_reference_as_absent(tmp_path, monkeypatch):
    """Importing conftest never raises (this file imported it); the lookup is by $EFFICIENTHRNET_SHARED."""
    import conftest

    monkeypatch.setenv("EFFICIENTHRNET_SHARED", str(tmp_path))
    assert conftest._shared_dir() is None
    monkeypatch.setenv("EFFICIENTHRNET_SHARED", str(tmp_path / "nonexistent"))
    assert conftest._shared_dir() is None
    (tmp_path / "reference").mkdir()
    monkeypatch.setenv("EFFICIENTHRNET_SHARED", str(tmp_path))
    assert conftest._shared_dir() == tmp_path


def test_golden_tests_skip_with_the_reason_when_the_shared_folder_is_absent(monkeypatch):
    import conftest

    monkeypatch.setattr(conftest, "SHARED", None)
    with pytest.raises(pytest.skip.Exception, match="reference/golden/x.npz.*EFFICIENTHRNET_SHARED"):
        conftest.shared_file("reference/golden/x.npz")


def test_no_test_reads_an_absolute_machine_path():
    for path in sorted((REPO / "tests").glob("*.py")):
        needle = "/".join(["", "work", ""])  # noqa: FLY002 - spelled so that this file does not match itself
        assert needle not in path.read_text(), f"{path.name} names an absolute machine path"


def test_coco_sample_is_in_the_repository():
    from conftest import COCO_SAMPLE

    assert (COCO_SAMPLE / "test_coco.json").is_file()
    assert len(list(COCO_SAMPLE.glob("*.jpg"))) == 4
    assert sum(p.stat().st_size for p in COCO_SAMPLE.iterdir()) < 1_000_000  # small enough to keep in git


# ----------------------------------------------------------------------------- hermetic package


def test_rule_files_and_specs_are_package_data():
    package = Path(scaling.__file__).resolve().parent
    assert scaling.RULES_DIR == package / "scaling_rules" and not scaling.RULES_DIR.is_symlink()
    assert (package / "experiments" / "quickstart.toml").is_file()
    # The top-level folders the README names point into the package.
    for name in ("scaling_rules", "experiments"):
        top = REPO / name
        if top.exists():  # absent when the tests run from an installed wheel
            assert top.resolve() == (package / name).resolve()


@pytest.mark.slow
def test_wheel_installed_in_a_clean_venv_has_rules_and_specs(tmp_path):
    """`pip wheel .`, install the wheel alone into a fresh venv (its dependencies come from this
    interpreter's site-packages through a .pth file, so nothing is downloaded but the build backend)
    and use it from a folder outside the source tree. About 15 s on 2 cores."""
    import site

    wheel_dir, env_dir, outside = tmp_path / "wheel", tmp_path / "venv", tmp_path / "elsewhere"
    outside.mkdir()
    build = subprocess.run([sys.executable, "-m", "pip", "wheel", str(REPO), "--no-deps", "-w", str(wheel_dir),
                            "-q"], capture_output=True, text=True, timeout=300, check=False)
    if build.returncode != 0 and "satisfies the requirement setuptools" in build.stderr:
        pytest.skip(f"the build backend (setuptools) cannot be fetched here: {build.stderr.strip()[-300:]}")
    assert build.returncode == 0, build.stderr
    (wheel,) = wheel_dir.glob("efficienthrnet-*.whl")
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    install = subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "-q",
                              "--target", purelib, str(wheel)], capture_output=True, text=True, timeout=300,
                             check=False)
    assert install.returncode == 0, install.stderr
    # Dependencies only: a path line in a .pth adds the folder, not the .pth files in it (so not the
    # editable install of the checkout), and it comes after the venv's own site-packages.
    (Path(purelib) / "_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    code = (
        "import efficienthrnet, pathlib\n"
        "from efficienthrnet.scaling import generate_config\n"
        "from efficienthrnet.demo import experiment_path\n"
        "from efficienthrnet.sweep import load_spec\n"
        f"assert pathlib.Path(efficienthrnet.__file__).is_relative_to({purelib!r}), efficienthrnet.__file__\n"
        "cfg = generate_config(-2.5)\n"
        "assert cfg.input_size == 416 and cfg.hrnet.branch_widths == (19, 37, 74, 147), cfg\n"
        "assert generate_config(-4, rule='reference').hrnet.branch_widths == (14, 27, 54, 107)\n"
        "print(load_spec(experiment_path('quickstart.toml')).name)\n"
    )
    run = subprocess.run([str(python), "-I", "-c", code], cwd=outside, capture_output=True, text=True, timeout=300,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "quickstart"
