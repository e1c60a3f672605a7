"""The `efficienthrnet` command: subcommands are thin wrappers; errors are one clear line."""

import json

from efficienthrnet.cli import main


def test_config_prints_the_resolved_architecture_as_json(capsys):
    assert main(["config", "--phi", "-4", "--rule", "reference", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["config"]["hrnet"]["branch_widths"] == [14, 27, 54, 107]
    used = {row["quantity"]: row["used"] for row in out["scaling"]}
    assert used["backbone width multiplier"] == 0.684 and used["input resolution"] == 384


def test_config_table_shows_raw_and_rounded_multipliers(capsys):
    assert main(["config", "--phi", "-2.5"]) == 0
    out = capsys.readouterr().out
    assert "input 416x416" in out and "HR branch 1 width" in out and "18.3179" in out


def test_bad_phi_is_one_error_line_naming_the_range(capsys):
    assert main(["config", "--phi", "nan"]) == 2
    err = capsys.readouterr().err
    assert "phi=nan" in err and "[-6.0, 3.0]" in err


def test_profile_json_gives_exact_counts(capsys):
    assert main(["profile", "--phi=0,-4", "--rule", "reference", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [r["params"] for r in rows] == [19_725_359, 2_764_706]


def test_profile_follows_the_keypoint_schema(capsys):
    assert main(["profile", "--phi=-4", "--json"]) == 0
    coco = json.loads(capsys.readouterr().out)[0]
    assert main(["profile", "--phi=-4", "--json", "--keypoints", "crowdpose"]) == 0
    crowd = json.loads(capsys.readouterr().out)[0]
    # 14 instead of 17 keypoints: a narrower head, the rest of the network unchanged.
    assert crowd["params_head"] < coco["params_head"] and crowd["params_backbone"] == coco["params_backbone"]


def test_make_synthetic_writes_a_coco_dataset(tmp_path, capsys):
    assert main(["make-synthetic", "--out", str(tmp_path), "--images", "5", "--size", "64", "--max-people", "2",
                 "--min-height", "0.5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["train"]["images"] + summary["val"]["images"] == 5
    assert (tmp_path / "annotations" / "person_keypoints_train.json").is_file()


def test_predict_names_a_missing_image(tmp_path, capsys):
    missing = tmp_path / "nope.jpg"
    assert main(["predict", str(missing), "--checkpoint", str(tmp_path), "--out", str(tmp_path / "o.png")]) == 2
    assert str(missing) in capsys.readouterr().err


def _subcommands() -> list[str]:
    import argparse

    from efficienthrnet.cli import build_parser

    parser, _ = build_parser()
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(actions[0].choices)


def test_every_help_page_prints(capsys):
    """argparse formats help text with %: a stray '%' in any help string crashes --help."""
    import pytest

    commands = _subcommands()
    assert {"train", "sweep", "compare", "export"} <= set(commands)
    for argv in ([], *([c] for c in commands)):
        with pytest.raises(SystemExit) as stop:
            main([*argv, "--help"])
        assert stop.value.code == 0, argv
        assert "usage:" in capsys.readouterr().out
