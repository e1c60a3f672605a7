"""Every way a CLI command can fail ends in one line on stderr, an exit code, no traceback, and
the output folder as it was before the command ran.

The commands run in-process (`main([...])`, fast); one test runs the real executable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import flax.linen as nn
import numpy as np
import pytest

import efficienthrnet
from efficienthrnet import cli
from efficienthrnet import train as T
from efficienthrnet.cli import main
from efficienthrnet.scaling import generate_config

SIZE = 64


def fails(capsys, argv, code=2):
    """Run the CLI, expect exit ``code`` and one error line without a traceback; return the line."""
    assert main(argv) == code
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert lines[0].startswith(f"efficienthrnet {argv[0]}: ")
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() if p.is_file() else b"<dir>"
            for p in sorted(folder.rglob("*"))}


@pytest.fixture
def image(tmp_path):
    path = tmp_path / "person.png"
    cv2.imwrite(str(path), np.full((SIZE, SIZE, 3), 128, np.uint8))
    return path


# ------------------------------------------------------------------------- exit codes, --debug


def test_unexpected_error_is_one_line_with_a_debug_hint_and_exit_1(monkeypatch, capsys):
    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cli.architecture, "_run_config", broken)
    line = fails(capsys, ["config", "--phi", "-4"], code=1)
    assert "internal error: TypeError: unsupported operand" in line and "--debug" in line


def test_debug_flag_shows_the_traceback_before_or_after_the_command(monkeypatch, capsys):
    def broken(args):
        raise TypeError("unsupported operand")

    monkeypatch.setattr(cli.architecture, "_run_config", broken)
    for argv in (["--debug", "config", "--phi", "-4"], ["config", "--phi", "-4", "--debug"]):
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and err.strip().splitlines()[-1].startswith("efficienthrnet config: internal")


def test_interrupt_exits_130_with_one_line(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli.architecture, "_run_config", interrupted)
    assert "interrupted" in fails(capsys, ["config", "--phi", "-4"], code=130)


def test_a_bare_os_error_names_the_file_and_what_to_do(monkeypatch, capsys):
    def denied(args):
        raise PermissionError(13, "Permission denied", "runs/locked/config.json")

    monkeypatch.setattr(cli.architecture, "_run_config", denied)
    line = fails(capsys, ["config", "--phi", "-4"])
    assert "runs/locked/config.json: permission denied; check its permissions" in line


# ------------------------------------------------------------------------- permissions, paths


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root ignores file permissions")
def test_permission_denied_names_the_folder(tmp_path, capsys):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        line = fails(capsys, ["make-synthetic", "--out", str(locked / "data"), "--images", "2"])
    finally:
        locked.chmod(0o700)
    assert str(locked) in line and "permission" in line
    assert list(locked.iterdir()) == []


def test_unwritable_folder_is_refused_before_any_work(tmp_path, monkeypatch, capsys):
    """The same check as above, made to fail for root too (os.access is what it asks)."""
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: False if Path(p) == locked else real_access(p, mode))
    line = fails(capsys, ["make-synthetic", "--out", str(locked / "data"), "--images", "2"])
    assert str(locked) in line and "no permission to write" in line
    assert list(locked.iterdir()) == []


def test_a_file_where_a_folder_is_expected(tmp_path, capsys):
    file = tmp_path / "notes.txt"
    file.write_text("mine")
    line = fails(capsys, ["make-synthetic", "--out", str(file), "--images", "2"])
    assert str(file) in line and "not a folder" in line
    line = fails(capsys, ["make-synthetic", "--out", str(file / "data"), "--images", "2"])
    assert str(file) in line and "is a file" in line
    line = fails(capsys, ["train", "--phi", "-4", "--data", "synthetic:x", "--steps", "1", "--out", str(file)])
    assert str(file) in line and "not a folder" in line
    assert file.read_text() == "mine"


def test_a_folder_where_a_file_is_expected_is_refused_before_the_model_loads(tmp_path, image, capsys):
    line = fails(capsys, ["predict", str(image), "--checkpoint", str(tmp_path / "no_run"), "--out", str(tmp_path)])
    assert "--out" in line and str(tmp_path) in line and "is an existing folder" in line


def test_unreadable_image_names_the_file(tmp_path, capsys):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    line = fails(capsys, ["predict", str(bad), "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o.png")])
    assert str(bad) in line and "cannot be used" in line and "corrupt" in line
    line = fails(capsys, ["predict", str(tmp_path), "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o.png")])
    assert "is a folder" in line
    assert not (tmp_path / "o.png").exists()


# ------------------------------------------------------------------------- extras, rule files


def test_missing_ray_extra_names_the_install_command_and_writes_nothing(tmp_path, monkeypatch, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\ntask = "profile"\nphi = [-4]\nrules = ["efficienthrnet"]\noutput = "o"\n')
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as if it were not installed
    out = tmp_path / "out"
    line = fails(capsys, ["sweep", str(spec), "--out", str(out), "--executor", "ray"])
    assert "pip install 'efficienthrnet[ray]'" in line
    assert not out.exists()


def test_missing_torch_extra_names_the_install_command(tmp_path, monkeypatch, capsys):
    pth = tmp_path / "h.pth"
    pth.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "torch", None)
    line = fails(capsys, ["convert", str(pth), "--phi", "-4", "--out", str(tmp_path / "h.msgpack")])
    assert "efficienthrnet[torch]" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.pth"]


def test_a_missing_module_is_mapped_to_its_extra():
    err = ModuleNotFoundError("No module named 'tensorboardX'", name="tensorboardX")
    assert "pip install 'efficienthrnet[tensorboard]'" in cli.describe_error(err)
    err = ModuleNotFoundError("No module named 'optax'", name="optax")
    assert "optax" in cli.describe_error(err) and "reinstall" in cli.describe_error(err)


def test_broken_rule_file_names_the_file(tmp_path, capsys):
    rule = tmp_path / "mine.toml"
    rule.write_text("[backbone\nwidth = 1.1\n")
    line = fails(capsys, ["config", "--phi", "-4", "--rule", str(rule)])
    assert str(rule) in line and "not valid TOML" in line


# ------------------------------------------------------------------------- nothing half-written


def test_refused_sweep_writes_nothing(tmp_path, capsys):
    spec = tmp_path / "s.toml"
    spec.write_text('name = "s"\ntask = "profile"\nphi = [-4, 99]\nrules = ["efficienthrnet"]\noutput = "o"\n')
    out = tmp_path / "out"
    line = fails(capsys, ["sweep", str(spec), "--out", str(out)])
    assert "phi=99" in line
    assert not out.exists()


def test_train_on_missing_data_writes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    missing = tmp_path / "nodata"
    line = fails(capsys, ["train", "--phi", "-4", "--data", f"synthetic:{missing}", "--steps", "1", "--out", str(out)])
    assert str(missing) in line
    assert not out.exists()


@pytest.mark.parametrize("bad", [["--max-people", "9"], ["--seed", "-1"], ["--images", "0"], ["--size", "16"]])
def test_refused_make_synthetic_writes_nothing(tmp_path, capsys, bad):
    out = tmp_path / "data"
    line = fails(capsys, ["make-synthetic", "--out", str(out), "--images", "3", "--size", "64", *bad])
    assert bad[1] in line
    assert sorted(tmp_path.iterdir()) == []  # neither the folder nor a hidden build folder


def test_make_synthetic_keeps_a_folder_of_other_files_and_replaces_its_own_dataset(tmp_path, capsys):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("keep me")
    line = fails(capsys, ["make-synthetic", "--out", str(mine), "--images", "3", "--size", "64"])
    assert str(mine) in line and "thesis.tex" in line
    assert snapshot(mine) == {"thesis.tex": b"keep me"}
    data = tmp_path / "data"
    args = ["make-synthetic", "--out", str(data), "--images", "3", "--size", "64", "--max-people", "1"]
    assert main(args) == 0
    capsys.readouterr()
    assert main([*args[:-2], "--images", "2"]) == 0  # the earlier dataset is replaced whole
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["image_dir"] == str(data / "train")
    assert len(list((data / "train").iterdir())) + len(list((data / "val").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data", "mine"]  # no hidden folder left


# ------------------------------------------------------------------------- damaged run folders


def _run_folder(tmp_path, variables) -> Path:
    """A run folder of the phi=-6 model at 64 px with config.json and one checkpoint holding
    ``variables``, written without training."""
    model_config = generate_config(-6).with_input_size(SIZE)
    run = tmp_path / "run"
    T.write_run_config(run, model_config, T.TrainConfig(steps=1, batch_size=1), "synthetic:x")
    state = SimpleNamespace(params=variables["params"], batch_stats=variables["batch_stats"], opt_state={},
                            step=np.int32(1), rng=np.zeros(2, np.uint32))
    manager = T.checkpoint_manager(run)
    T.save_checkpoint(manager, state, model_config, data_state=None)
    manager.close()
    return run


class _Stem(nn.Module):
    """A one-layer stand-in for the network: the fit check is the same for any module."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        return nn.Conv(4, (3, 3), name="stem")(x)


def test_corrupted_config_json_names_the_file(tmp_path, image, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"model": {"phi": -4,')
    line = fails(capsys, ["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "o.png")])
    assert str(run / "config.json") in line and "damaged" in line
    line = fails(capsys, ["train", "--phi", "-4", "--data", "synthetic:x", "--steps", "1", "--out", str(run),
                          "--resume"])
    assert str(run / "config.json") in line


def test_damaged_checkpoint_names_the_folder_and_what_to_do(tmp_path, image, capsys):
    run = _run_folder(tmp_path, {"params": {"w": np.zeros((3, 4), np.float32)}, "batch_stats": {}})
    for path in (run / "checkpoints" / "1" / "state").rglob("*"):
        if path.is_file():
            path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])  # cut short, as by a full disk
    before = snapshot(run)
    line = fails(capsys, ["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "o.png")])
    assert str(run / "checkpoints" / "1") in line and "damaged" in line and "delete" in line
    assert snapshot(run) == before and not (tmp_path / "o.png").exists()


def test_checkpoint_that_does_not_fit_names_the_parameter_and_both_shapes(tmp_path, image, monkeypatch, capsys):
    monkeypatch.setattr(T, "build_model", lambda *args, **kwargs: _Stem())
    wide = {"params": {"stem": {"kernel": np.zeros((3, 3, 3, 5), np.float32), "bias": np.zeros(5, np.float32)}},
            "batch_stats": {}}
    run = _run_folder(tmp_path, wide)
    line = fails(capsys, ["predict", str(image), "--checkpoint", str(run), "--out", str(tmp_path / "o.png")])
    assert "params stem/bias" in line and "(5,) in the checkpoint but (4,) in the model" in line
    assert str(run / "checkpoints" / "1") in line


# ------------------------------------------------------------------------- the real executable


def test_the_installed_command_prints_no_traceback(tmp_path):
    src = str(Path(efficienthrnet.__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")]),
           "JAX_PLATFORMS": "cpu"}
    missing = tmp_path / "nope.toml"
    done = subprocess.run([sys.executable, "-m", "efficienthrnet.cli", "config", "--phi", "-4", "--rule",
                           str(missing)], check=False, capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 2
    assert "Traceback" not in done.stderr and done.stderr.count("\n") == 1
    assert done.stderr.startswith("efficienthrnet config: error: ") and str(missing) in done.stderr
