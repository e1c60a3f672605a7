"""Keypoint schemas as a named, registered choice: registry, CrowdPose-14, the synthetic body model,
the CLI's --keypoints, sweep specs' [data] keypoints, runs that store and restore their schema,
OKS sigmas in COCOeval, a CrowdPose-format file, and CrowdPose end to end through the CLI."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from conftest import xla_optimizations_off
from efficienthrnet import keypoints as K
from efficienthrnet.cli import main
from efficienthrnet.data.coco import CocoKeypoints
from efficienthrnet.data.synthetic import make_synthetic_dataset, render_synthetic_image
from efficienthrnet.evaluate import ground_truth_schema, score_coco
from efficienthrnet.keypoints import COCO17, CROWDPOSE14, KeypointSchema
from efficienthrnet.scaling import generate_config
from efficienthrnet.sweep import ensure_dataset, expand_trials, load_spec, trial_settings
from efficienthrnet.train import restore_run_schema

# A custom schema: COCO's arms only (every name is one the synthetic body model places).
ARMS = KeypointSchema(
    name="test_arms",
    keypoints=("left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist"),
    flip_pairs=((0, 1), (2, 3), (4, 5)),
    sigmas=(0.079, 0.079, 0.072, 0.072, 0.062, 0.062),
    skeleton=((0, 1), (0, 2), (2, 4), (1, 3), (3, 5)),
    grouping_order=(0, 1, 2, 3, 4, 5),
)


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test (registration is process-wide)."""
    monkeypatch.setattr(K, "SCHEMAS", dict(K.SCHEMAS))
    return K.SCHEMAS


# ----------------------------------------------------------------------------- registry


def test_both_schemas_ship_and_unknown_names_list_the_known_ones():
    assert {"coco17", "crowdpose"} <= set(K.available_schemas())
    assert K.get_schema("crowdpose") is CROWDPOSE14
    with pytest.raises(ValueError, match=r"unknown keypoint schema 'mpii'; known: .*coco17.*crowdpose"):
        K.get_schema("mpii")


def test_register_schema_accepts_a_repeat_and_refuses_a_clash(registry):
    assert K.register_schema(ARMS) is ARMS
    K.register_schema(ARMS)  # the same definition again is fine
    assert K.get_schema("test_arms") is ARMS
    other = dataclasses.replace(ARMS, sigmas=(0.1,) * 6)
    with pytest.raises(ValueError, match="'test_arms' is already registered with another definition"):
        K.register_schema(other)
    with pytest.raises(ValueError, match="'coco17' is already registered"):
        K.register_schema(dataclasses.replace(CROWDPOSE14, name="coco17"))
    assert K.get_schema("test_arms") is ARMS


def test_crowdpose_matches_the_dataset():
    assert CROWDPOSE14.keypoints[:12] == COCO17.keypoints[5:]  # COCO's body joints, same order
    assert CROWDPOSE14.keypoints[12:] == ("head", "neck")
    # crowdposetools' sigmas: [.79, .79, .72, .72, .62, .62, 1.07, 1.07, .87, .87, .89, .89, .79, .79] / 10
    expected = np.array([0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79]) / 10
    np.testing.assert_allclose(CROWDPOSE14.sigmas_array, expected)
    names = CROWDPOSE14.keypoints
    for a, b in CROWDPOSE14.flip_pairs:  # each pair swaps left for right, nothing else
        assert names[a].startswith("left_") and names[b] == "right_" + names[a][len("left_"):]
    flipped = [names[i] for i in CROWDPOSE14.flip_permutation]
    assert flipped[0] == "right_shoulder" and flipped[12:] == ["head", "neck"]
    assert CROWDPOSE14.grouping_order[:2] == (12, 13)  # head top and neck seed the people


def test_a_stored_definition_round_trips_and_registers(registry):
    stored = json.loads(json.dumps(K.schema_to_dict(ARMS)))
    assert "test_arms" not in registry
    assert K.restore_schema(stored) == ARMS
    assert K.get_schema("test_arms") == ARMS
    stored["sigmas"] = [0.5] * 6
    with pytest.raises(ValueError, match="run.json defines keypoint schema 'test_arms' differently"):
        K.restore_schema(stored, "run.json")
    with pytest.raises(ValueError, match=r"run.json: expected the fields .* got \['name'\]"):
        K.schema_from_dict({"name": "x"}, "run.json")


def test_model_head_follows_the_schema():
    cfg = generate_config(-6, keypoints="crowdpose")
    assert cfg.keypoints == "crowdpose" and cfg.num_keypoints == 14
    assert cfg.head.quarter_channels == 28 and cfg.head.half_channels == 14


# ----------------------------------------------------------------------------- synthetic body model


def test_synthetic_crowdpose_places_head_top_and_neck_on_the_same_people():
    """Same rng -> same figures: the shared body joints coincide, and the neck lies between the
    shoulders and the head top, which is farther up than the nose."""
    coco_img, coco = render_synthetic_image(np.random.default_rng([5, 0]), 96, 3, 0.5, "coco17")
    crowd_img, crowd = render_synthetic_image(np.random.default_rng([5, 0]), 96, 3, 0.5, "crowdpose")
    assert [a["bbox"] for a in coco] == [a["bbox"] for a in crowd]
    assert all(len(a["keypoints"]) == 42 for a in crowd)
    people = [(np.reshape(a["keypoints"], (17, 3)), np.reshape(b["keypoints"], (14, 3)))
              for a, b in zip(coco, crowd) if b["num_keypoints"] > 0]
    assert people
    checked = 0
    for c, p in people:
        both = (c[5:, 2] > 0) & (p[:12, 2] > 0)
        np.testing.assert_allclose(c[5:][both, :2], p[:12][both, :2], atol=0.011)  # JSON rounds to 0.01
        if not (p[[0, 1, 12, 13], 2] > 0).all():
            continue  # a point off the image has no coordinates
        head, neck, shoulders, nose = p[12, :2], p[13, :2], (p[0, :2] + p[1, :2]) / 2, c[0, :2]
        assert np.linalg.norm(neck - shoulders) < 0.5 * np.linalg.norm(head - shoulders)
        checked += 1
        if c[0, 2] > 0:
            assert np.linalg.norm(head - neck) > np.linalg.norm(nose - neck)
    assert checked >= 2
    assert not np.array_equal(coco_img, crowd_img)  # crowdpose draws head/neck discs, no face discs


def test_synthetic_makes_a_custom_schema_and_refuses_one_it_cannot_place(tmp_path, registry):
    K.register_schema(ARMS)
    summary = make_synthetic_dataset(tmp_path / "arms", 2, 64, schema="test_arms", max_people=1)
    data = json.loads((tmp_path / "arms" / "annotations" / "person_keypoints_val.json").read_text())
    assert data["categories"][0]["keypoints"] == list(ARMS.keypoints)
    assert all(len(a["keypoints"]) == 18 for a in data["annotations"]) and summary["val"]["images"] == 1
    tail = dataclasses.replace(ARMS, name="test_tail", keypoints=ARMS.keypoints[:5] + ("tail",))
    with pytest.raises(ValueError, match=r"'test_tail': the synthetic body model cannot place \['tail'\]"):
        make_synthetic_dataset(tmp_path / "tail", 2, 64, schema=tail)
    assert not (tmp_path / "tail").exists()


# ----------------------------------------------------------------------------- CLI and sweep spec


def test_cli_refuses_an_unknown_schema_naming_it(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["config", "--phi", "-4", "--keypoints", "mpii"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "--keypoints" in err and "'mpii'" in err and "coco17" in err and "crowdpose" in err


def test_cli_config_builds_the_schemas_head(capsys):
    assert main(["config", "--phi", "-4", "--keypoints", "crowdpose", "--json"]) == 0
    cfg = json.loads(capsys.readouterr().out)["config"]
    assert cfg["keypoints"] == "crowdpose" and cfg["head"]["num_keypoints"] == 14


SPEC = """
name = "crowd"
task = "pose"
phi = [-6.0]
rules = ["efficienthrnet"]
output = "out"
[data]
kind = "synthetic"
dir = "{dir}"
keypoints = "{keypoints}"
[data.synthetic]
num_images = 2
image_size = 64
[train]
steps = 1
"""


def test_sweep_spec_data_keypoints_reaches_trials_and_data(tmp_path):
    path = tmp_path / "crowd.toml"
    path.write_text(SPEC.format(dir=(tmp_path / "data").as_posix(), keypoints="crowdpose"))
    spec = load_spec(path)
    (trial,) = expand_trials(spec)
    assert trial.keypoints == "crowdpose" and trial.model_config().num_keypoints == 14
    assert trial.trial_id == "pose-efficienthrnet-phi-6-seed0"
    assert trial_settings(trial, spec)["data"]["keypoints"] == "crowdpose"
    ensure_dataset(spec.data)
    data = json.loads((tmp_path / "data" / "annotations" / "person_keypoints_train.json").read_text())
    assert data["categories"][0]["keypoints"] == list(CROWDPOSE14.keypoints)


def test_sweep_spec_refuses_an_unknown_schema_and_keeps_old_settings(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text(SPEC.format(dir="data", keypoints="mpii"))
    with pytest.raises(ValueError, match=r"bad.toml: data.keypoints: unknown keypoint schema 'mpii'"):
        load_spec(path)
    path.write_text(SPEC.format(dir="data", keypoints="coco17"))
    spec = load_spec(path)
    # COCO-17 is the default and stays out of the settings, so older sweep folders still resume
    settings = trial_settings(expand_trials(spec)[0], spec)
    assert "keypoints" not in settings["trial"] and "keypoints" not in settings["data"]


# ----------------------------------------------------------------------------- runs restore their schema


def test_a_run_restores_its_custom_schema_and_refuses_another(tmp_path, registry):
    record = {"model": {"keypoints": "test_arms"}, "keypoints": K.schema_to_dict(ARMS)}
    assert "test_arms" not in registry
    assert restore_run_schema(record, tmp_path) == "test_arms"
    assert K.get_schema("test_arms") == ARMS
    with pytest.raises(ValueError, match=r"keypoints 'coco17' were asked for, but run .* trained with keypoint "
                                         r"schema 'test_arms'; leave --keypoints out or pass --keypoints test_arms"):
        restore_run_schema(record, tmp_path, "coco17")
    # a run written before the definition was stored names a schema that must be registered
    with pytest.raises(ValueError, match=r"config.json: unknown keypoint schema 'lost'"):
        restore_run_schema({"model": {"keypoints": "lost"}}, tmp_path)


# ----------------------------------------------------------------------------- a CrowdPose-format file


def crowdpose_file(tmp_path):
    """A tiny file in CrowdPose's own format: 14 keypoints, crowdIndex, no segmentation."""
    people = [
        [[30, 20], [50, 20], [26, 34], [54, 34], [24, 46], [56, 46], [34, 50], [46, 50],
         [33, 64], [47, 64], [32, 78], [48, 78], [40, 4], [40, 15]],
        [[80, 30], [96, 30], [76, 42], [100, 42], [74, 52], [102, 52], [83, 56], [93, 56],
         [82, 68], [94, 68], [81, 80], [95, 80], [88, 16], [88, 25]],
    ]
    annotations = []
    for i, person in enumerate(people):
        xy = np.asarray(person, float)
        x0, y0 = xy.min(0) - 4
        w, h = xy.max(0) - xy.min(0) + 8
        kps = [v for x, y in person for v in (x, y, 2)]
        annotations.append({"num_keypoints": 14, "iscrowd": 0, "keypoints": kps, "image_id": 1,
                            "bbox": [float(x0), float(y0), float(w), float(h)], "area": float(w * h) * 0.5,
                            "category_id": 1, "id": i + 1})
    data = {
        "images": [{"file_name": "100000.jpg", "id": 1, "height": 96, "width": 128, "crowdIndex": 0.12}],
        "annotations": annotations,
        "categories": [{"supercategory": "person", "id": 1, "name": "person",
                        "keypoints": list(CROWDPOSE14.keypoints),
                        "skeleton": [[a + 1, b + 1] for a, b in CROWDPOSE14.skeleton]}],
    }
    (tmp_path / "images").mkdir()
    import cv2

    cv2.imwrite(str(tmp_path / "images" / "100000.jpg"), np.full((96, 128, 3), 90, np.uint8))
    path = tmp_path / "crowdpose_val.json"
    path.write_text(json.dumps(data))
    return path, data


def test_reads_a_crowdpose_format_file(tmp_path):
    path, _ = crowdpose_file(tmp_path)
    dataset = CocoKeypoints(path, tmp_path / "images", schema="crowdpose")
    sample = dataset[0]
    assert sample.keypoints.shape == (2, 14, 3) and sample.image.shape == (96, 128, 3)
    np.testing.assert_allclose(sample.keypoints[0, 12], [40, 4, 2])  # head top
    assert ground_truth_schema(path) is CROWDPOSE14


def gt_as_results(data, shift):
    return [{"image_id": a["image_id"], "category_id": 1, "score": 1.0,
             "keypoints": [v + (shift if i % 3 == 0 else 0) for i, v in enumerate(a["keypoints"])]}
            for a in data["annotations"]]


def test_crowdpose_sigmas_reach_cocoeval(tmp_path):
    path, data = crowdpose_file(tmp_path)
    assert score_coco(path, gt_as_results(data, 0))["AP"] > 0.99
    off = gt_as_results(data, 2.0)
    given_a_path = score_coco(path, off)  # the file's category names the schema, hence its sigmas
    assert given_a_path == score_coco(path, off, sigmas=CROWDPOSE14.sigmas)
    tighter = score_coco(path, off, sigmas=CROWDPOSE14.sigmas_array / 2)
    assert tighter["AP"] < given_a_path["AP"]
    assert score_coco(path, off, schema="crowdpose") == given_a_path


def test_a_file_naming_an_unknown_skeleton_is_refused_naming_it(tmp_path):
    path, data = crowdpose_file(tmp_path)
    data["categories"][0]["keypoints"][12] = "head_top"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match=r"crowdpose_val.json names keypoints .*'head_top'.* no registered schema"):
        score_coco(path, gt_as_results(data, 0))


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def crowd_run(tmp_path_factory):
    """make-synthetic --keypoints crowdpose, then train 2 steps at phi=-6, 64 px (the compile dominates)."""
    root = tmp_path_factory.mktemp("crowd")
    data, run = root / "data", root / "run"
    with xla_optimizations_off():
        assert main(["make-synthetic", "--out", str(data), "--images", "3", "--size", "64", "--max-people", "2",
                     "--keypoints", "crowdpose"]) == 0
        assert main(["train", "--phi", "-6", "--data", f"synthetic:{data}", "--steps", "2", "--batch", "2",
                     "--input-size", "64", "--checkpoint-every", "2", "--keypoints", "crowdpose",
                     "--out", str(run)]) == 0
        yield {"data": data, "run": run}


@pytest.mark.slow
def test_crowdpose_end_to_end(crowd_run, capsys):
    from efficienthrnet.predict import PredictConfig, Predictor

    data, run = crowd_run["data"], crowd_run["run"]
    stored = json.loads((run / "config.json").read_text())
    assert stored["model"]["keypoints"] == "crowdpose" and stored["keypoints"]["name"] == "crowdpose"
    assert stored["model"]["head"]["num_keypoints"] == 14
    with xla_optimizations_off():
        capsys.readouterr()
        assert main(["evaluate", "--checkpoint", str(run), "--data", f"synthetic:{data}", "--no-flip",
                     "--out", str(run / "eval.json")]) == 0
        metrics = json.loads(capsys.readouterr().out)
        assert metrics["num_images"] == 1 and 0.0 <= metrics["AP"] <= 1.0
        results = json.loads((run / "eval.json").read_text())
        assert all(len(r["keypoints"]) == 42 for r in results)
        # predict: the schema comes from the run; its people carry 14 keypoints
        predictor = Predictor.from_run(run, config=PredictConfig(input_size=64, flip=False))
        image = CocoKeypoints.from_spec(f"synthetic:{data}", "val", schema="crowdpose").load_image(3)
        found = predictor(image)
        assert predictor.schema is CROWDPOSE14 and found.keypoints.shape[1:] == (14, 3)
        # the CLI's predict draws with the run's schema, people found or not
        capsys.readouterr()
        assert main(["predict", str(data / "val" / "000000000003.jpg"), "--checkpoint", str(run), "--no-flip",
                     "--input-size", "64", "--out", str(run / "people.png")]) == 0
        assert (run / "people.png").is_file() and "people" in json.loads(capsys.readouterr().out)
        # resuming without --keypoints continues with the run's schema (nothing left to train here)
        assert main(["train", "--phi", "-6", "--data", f"synthetic:{data}", "--steps", "2", "--batch", "2",
                     "--input-size", "64", "--checkpoint-every", "2", "--out", str(run), "--resume"]) == 0
        capsys.readouterr()
    # an explicit schema that is not the run's is one clear error, before any compile
    image_file = data / "val" / "000000000003.jpg"
    assert main(["predict", str(image_file), "--checkpoint", str(run), "--keypoints", "coco17",
                 "--out", str(run / "p.png")]) == 2
    err = capsys.readouterr().err
    assert "'coco17' were asked for" in err and "'crowdpose'" in err and str(run) in err
    assert not (run / "p.png").exists()
