"""The training loader: deterministic, resumable, sharded; the eval iterator covers every image."""

import json

import numpy as np
import pytest

from conftest import COCO_SAMPLE
from efficienthrnet.data.coco import CocoKeypoints
from efficienthrnet.data.pipeline import build_train_loader, iterate_eval
from efficienthrnet.data.synthetic import make_synthetic_dataset

SAMPLE = COCO_SAMPLE
S = 64


@pytest.fixture(scope="module")
def spec(tmp_path_factory):
    root = tmp_path_factory.mktemp("pipe")
    make_synthetic_dataset(root, num_images=14, image_size=64, seed=5, val_fraction=0.15)
    return f"synthetic:{root}"


def _take(loader, n):
    return [next(loader) for _ in range(n)]


def _assert_same(a, b):
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


def test_batches_match_contract_and_seed(spec):
    one = build_train_loader(spec, S, batch_size=4, seed=7, shard_index=0, shard_count=1)
    batches = _take(one, 5)  # 20 samples: crosses the epoch boundary (12 training images)
    b = batches[0]
    assert b["image"].shape == (4, S, S, 3) and b["image"].dtype == np.float32
    assert b["heatmaps_4"].shape == (4, S // 4, S // 4, 17) and b["heatmaps_2"].shape == (4, S // 2, S // 2, 17)
    assert b["mask_4"].shape == (4, S // 4, S // 4) and b["mask_2"].shape == (4, S // 2, S // 2)
    assert b["joints_4"].shape == (4, 30, 17, 2) and b["joints_4"].dtype == np.int32
    assert b["image_id"].dtype == np.int64
    assert b["heatmaps_4"].max() == 1.0 and b["joints_4"][..., 1].sum() > 10
    # Each epoch is a permutation of the 12 training images, shuffled differently per epoch.
    ids = np.concatenate([x["image_id"] for x in batches])
    assert sorted(ids[:12]) == list(range(1, 13)) and not np.array_equal(ids[:8], ids[12:20])
    # Same seed -> identical batches, also with other thread counts; another seed differs.
    _assert_same(batches, _take(build_train_loader(spec, S, 4, seed=7, shard_index=0, shard_count=1,
                                                   num_threads=0), 5))
    other = next(build_train_loader(spec, S, 4, seed=8, shard_index=0, shard_count=1))
    assert not np.array_equal(other["image"], b["image"])


def test_restore_continues_stream(spec):
    full = _take(build_train_loader(spec, S, 3, seed=1, shard_index=0, shard_count=1), 6)
    first = build_train_loader(spec, S, 3, seed=1, shard_index=0, shard_count=1)
    _take(first, 4)
    state = json.loads(json.dumps(first.get_state()))  # survives a JSON round trip
    assert state["position"] == 12
    resumed = build_train_loader(spec, S, 3, seed=1, shard_index=0, shard_count=1)
    resumed.set_state(state)
    _assert_same(full[4:], _take(resumed, 2))
    mismatched = build_train_loader(spec, S, 2, seed=1, shard_index=0, shard_count=1)
    with pytest.raises(ValueError, match="batch_size=3"):
        mismatched.set_state(state)


def test_shards_are_disjoint(spec):
    shards = [build_train_loader(spec, S, 2, seed=3, shard_index=i, shard_count=3) for i in range(3)]
    assert shards[0].steps_per_epoch == 2  # 12 images / 3 shards / batch 2
    ids = [np.concatenate([x["image_id"] for x in _take(s, 2)]) for s in shards]
    assert all(len(set(i)) == 4 for i in ids)
    assert set(ids[0]).isdisjoint(ids[1]) and set(ids[1]).isdisjoint(ids[2]) and set(ids[0]).isdisjoint(ids[2])
    with pytest.raises(ValueError, match="shard_index 3"):
        build_train_loader(spec, S, 2, seed=3, shard_index=3, shard_count=3)


def test_worker_processes_give_the_same_batches(spec):
    ref = _take(build_train_loader(spec, S, 2, seed=2, shard_index=0, shard_count=1), 2)
    loader = build_train_loader(spec, S, 2, seed=2, shard_index=0, shard_count=1, num_workers=2)
    try:
        _assert_same(ref, _take(loader, 2))
    finally:
        loader.close()


def test_eval_iterator_covers_split_in_order():
    ds = CocoKeypoints(SAMPLE / "test_coco.json", SAMPLE)
    ids = [s.image_id for s in iterate_eval(ds, shard_index=0, shard_count=1)]
    assert ids == [785, 40083, 196141, 197388]
    halves = [[s.image_id for s in iterate_eval(ds, shard_index=i, shard_count=2)] for i in range(2)]
    assert sorted(halves[0] + halves[1]) == ids and not set(halves[0]) & set(halves[1])


def test_images_without_people_are_skipped_visibly(tmp_path, caplog):
    make_synthetic_dataset(tmp_path, num_images=4, image_size=64, seed=1, val_fraction=0.25)
    ann_file = tmp_path / "annotations" / "person_keypoints_train.json"
    data = json.loads(ann_file.read_text())
    empty = dict(data["images"][0], id=999)  # an image with nobody annotated in it
    data["images"].append(empty)
    ann_file.write_text(json.dumps(data))
    with caplog.at_level("WARNING", logger="efficienthrnet.data.coco"):
        loader = build_train_loader(f"synthetic:{tmp_path}", S, 1, seed=0, shard_index=0, shard_count=1)
    assert loader.skipped_image_ids == (999,) and loader.get_state()["num_samples"] == len(data["images"]) - 1
    assert "person_keypoints_train.json: skipping 1 of" in caplog.text
