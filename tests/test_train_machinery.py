"""Training machinery on a tiny stand-in network: config, schedule, freezing, guards, checkpoints.

The stand-in has the model contract's interface (out4 with 2J channels, out2 with J, a
"backbone" submodule, BatchNorm and dropout), so these tests run in seconds; the real
EfficientHRNet is trained in tests/test_train.py.
"""

from __future__ import annotations

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import COCO_SAMPLE, xla_optimizations_off
from efficienthrnet import train as T
from efficienthrnet.data.augment import AugmentConfig
from efficienthrnet.losses import LossWeights
from efficienthrnet.scaling import generate_config

J = 17
SIZE = 64


class TinyPoseNet(nn.Module):
    """Smallest network with the EfficientHRNet interface."""

    config: object

    @nn.compact
    def __call__(self, x, train: bool = False):
        # No bias before BatchNorm: its true gradient is 0, and Adam would turn rounding noise
        # in it into full-size updates, which differ between device layouts.
        h = nn.Conv(8, (3, 3), strides=4, use_bias=False, name="backbone")(x)
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9)(h)
        h = nn.Dropout(0.1, deterministic=not train)(nn.relu(h))
        out4 = nn.Conv(2 * J, (3, 3))(h)
        b, hh, ww, c = h.shape
        out2 = nn.Conv(J, (3, 3))(jax.image.resize(h, (b, 2 * hh, 2 * ww, c), "nearest"))
        return out4, out2


class RandomLoader:
    """Deterministic random batches in the pipeline contract, with get_state/set_state."""

    def __init__(self, batch_size: int, size: int = SIZE, seed: int = 0, people: int = 4):
        self.batch_size, self.size, self.seed, self.people, self.position = batch_size, size, seed, people, 0

    def __iter__(self):
        return self

    def get_state(self):
        return {"position": self.position}

    def set_state(self, state):
        self.position = state["position"]

    def __next__(self):
        rng = np.random.default_rng([self.seed, self.position])
        self.position += 1
        b, s, p = self.batch_size, self.size, self.people
        joints = np.zeros((b, p, J, 2), np.int32)
        joints[..., 0] = rng.integers(0, (s // 4) ** 2, (b, p, J))
        joints[..., 1] = rng.random((b, p, J)) < 0.7
        return {
            "image": rng.normal(size=(b, s, s, 3)).astype(np.float32),
            "heatmaps_4": rng.random((b, s // 4, s // 4, J), np.float32),
            "heatmaps_2": rng.random((b, s // 2, s // 2, J), np.float32),
            "mask_4": np.ones((b, s // 4, s // 4), np.float32),
            "mask_2": np.ones((b, s // 2, s // 2), np.float32),
            "joints_4": joints,
            "image_id": np.arange(b, dtype=np.int64),
        }


@pytest.fixture(scope="module", autouse=True)
def fast_compile_module():
    """Speed is not under test here: skip most XLA optimisations to keep compiles short."""
    with xla_optimizations_off():
        yield


@pytest.fixture(scope="module")
def model_config():
    return generate_config(-4).with_input_size(SIZE)


def small_config(**overrides) -> T.TrainConfig:
    base = {
        "steps": 6,
        "batch_size": 2,
        "checkpoint_every": 3,
        "log_every": 1,
        "progress": False,
        "input_size": SIZE,
    }
    return T.TrainConfig(**{**base, **overrides})


def run(model_config, config, run_dir, **kwargs):
    # One module object for every run, so that the cached jitted step is reused.
    return T.train(
        model_config,
        config,
        None,
        run_dir,
        model=tiny(model_config),
        loader=RandomLoader(config.batch_size),
        **kwargs,
    )


_TINY = {}


def tiny(model_config) -> TinyPoseNet:
    return _TINY.setdefault(model_config, TinyPoseNet(model_config))


# ----------------------------------------------------------------------------------- config


def test_train_config_round_trips_through_json():
    config = T.TrainConfig(steps=7, loss_weights=LossWeights(push=2e-3), input_size=128, weight_decay=1e-4,
                           augment=AugmentConfig(max_rotation=10.0, scale_range=(0.9, 1.2)))
    again = T.TrainConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again == config
    assert again.augment.scale_range == (0.9, 1.2)


def test_augment_ranges_reach_the_input_pipeline():
    """With every range closed, training batches are exactly the centred evaluation crops."""
    from efficienthrnet.data.coco import CocoKeypoints
    from efficienthrnet.data.pipeline import make_eval_example

    sample_dir = COCO_SAMPLE
    dataset = CocoKeypoints(sample_dir / "test_coco.json", sample_dir)
    still = AugmentConfig(max_rotation=0.0, scale_range=(1.0, 1.0), max_translate=0.0, flip_prob=0.0)
    config = T.TrainConfig(batch_size=1, augment=still)
    loader = T.make_train_loader(dataset, generate_config(-4).with_input_size(64), config)
    batch = next(loader)
    loader.close()
    sample = next(s for s in dataset if s.image_id == int(batch["image_id"][0]))
    np.testing.assert_allclose(batch["image"][0], make_eval_example(sample, 64)["image"], atol=1e-6)


@pytest.mark.parametrize("sigma", [1.0, 2.0])
def test_heatmap_sigma_reaches_the_targets(sigma):
    """Beside each isolated peak of 1, the target falls to exp(-1 / (2 sigma^2)) one map pixel away."""
    from efficienthrnet.data.coco import CocoKeypoints

    dataset = CocoKeypoints(COCO_SAMPLE / "test_coco.json", COCO_SAMPLE)
    still = AugmentConfig(max_rotation=0.0, scale_range=(1.0, 1.0), max_translate=0.0, flip_prob=0.0)
    config = T.TrainConfig(batch_size=1, augment=still, heatmap_sigma=sigma)
    loader = T.make_train_loader(dataset, generate_config(-4).with_input_size(128), config)
    heat = next(loader)["heatmaps_2"][0]
    loader.close()
    ys, xs, js = np.nonzero(heat == 1.0)
    assert len(js) > 3
    expected = np.exp(-1.0 / (2 * sigma**2))
    beside = [heat[y, x + 1, j] for y, x, j in zip(ys, xs, js, strict=True) if x + 1 < heat.shape[1]]
    assert np.median(beside) == pytest.approx(expected, abs=1e-4)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("steps", 0, "steps=0"),
        ("heatmap_sigma", 0.0, "heatmap_sigma=0.0 must be > 0"),
        ("input_size", 100, "multiple of 32"),
        ("compute_dtype", "float16", "float16"),
        ("decay_fractions", (0.9, 0.5), "increasing"),
        ("weight_decay", -1.0, "weight_decay"),
        ("push_loss", "abs", "push_loss=.abs.*exp.*max"),
        ("init_scheme", "xavier", "init_scheme=.xavier.*he_small_head"),
    ],
)
def test_train_config_rejects_bad_values(field, value, message):
    with pytest.raises(ValueError, match=message):
        T.TrainConfig(**{field: value})


def test_unknown_train_config_field_is_named():
    with pytest.raises(ValueError, match="lr_typo"):
        T.TrainConfig.from_dict({"lr_typo": 1})


def test_schedule_decays_at_two_thirds_and_thirteen_fifteenths():
    schedule = T.learning_rate_schedule(T.TrainConfig(steps=300, learning_rate=1e-3))
    lr = {s: float(schedule(s)) for s in (0, 199, 200, 259, 260, 299)}
    assert lr[0] == pytest.approx(1e-3) and lr[199] == pytest.approx(1e-3)
    assert lr[200] == pytest.approx(1e-4) and lr[259] == pytest.approx(1e-4)
    assert lr[260] == pytest.approx(1e-5) and lr[299] == pytest.approx(1e-5)


def test_warmup_ramps_linearly_and_keeps_boundaries():
    schedule = T.learning_rate_schedule(T.TrainConfig(steps=300, warmup_steps=10))
    assert float(schedule(0)) == pytest.approx(1e-4)
    assert float(schedule(4)) == pytest.approx(5e-4)
    assert float(schedule(10)) == pytest.approx(1e-3)
    assert float(schedule(200)) == pytest.approx(1e-4)


# ------------------------------------------------------------------------------- the step


def test_seeds_of_one_design_share_one_compiled_step():
    mesh = T.make_mesh()
    step = T.make_train_step(small_config(seed=0), mesh)
    # A sweep's seeds (and logging cadence) do not enter the step: the same jitted function is reused.
    assert T.make_train_step(small_config(seed=3, log_every=7, checkpoint_every=9), mesh) is step
    assert T.make_train_step(small_config(seed=0, learning_rate=0.5), mesh) is not step


def test_frozen_backbone_gets_no_update_but_head_does(model_config):
    config = small_config(freeze_backbone=True)
    model = TinyPoseNet(model_config)
    state = T.create_train_state(model, model_config, config)
    mesh = T.make_mesh()
    before = jax.device_get(state.params)
    new, _ = T.make_train_step(config, mesh)(
        T.replicate(state, mesh), T.shard_batch(next(RandomLoader(2)), mesh)
    )
    after = jax.device_get(new.params)
    np.testing.assert_array_equal(after["backbone"]["kernel"], before["backbone"]["kernel"])
    assert not np.array_equal(after["Conv_0"]["kernel"], before["Conv_0"]["kernel"])
    # as in the reference, BatchNorm statistics keep moving while frozen
    assert not np.array_equal(
        new.batch_stats["BatchNorm_0"]["mean"], state.batch_stats["BatchNorm_0"]["mean"]
    )


def test_freezing_a_model_without_backbone_names_its_modules():
    with pytest.raises(ValueError, match="no 'backbone' submodule.*Conv_0"):
        T.backbone_labels({"Conv_0": {"kernel": jnp.zeros(1)}})


def test_weight_decay_switches_to_adamw(model_config):
    # With zero gradients Adam leaves params alone; AdamW still shrinks them.
    params = {"w": jnp.ones(3)}
    zero = {"w": jnp.zeros(3)}
    for decay, expected in ((0.0, 1.0), (0.1, 1.0 - 1e-3 * 0.1)):
        tx = T.make_optimizer(T.TrainConfig(weight_decay=decay))
        updates, _ = tx.update(zero, tx.init(params), params)
        assert float(params["w"][0] + updates["w"][0]) == pytest.approx(expected)


def test_bfloat16_step_keeps_float32_params_and_loss(model_config):
    config = small_config(compute_dtype="bfloat16")
    state = T.create_train_state(TinyPoseNet(model_config), model_config, config)
    mesh = T.make_mesh()
    new, metrics = T.make_train_step(config, mesh)(
        T.replicate(state, mesh), T.shard_batch(next(RandomLoader(2)), mesh)
    )
    assert metrics["loss"].dtype == jnp.float32
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new.params))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(new.batch_stats))
    assert np.isfinite(float(metrics["loss"]))


def test_batch_not_divisible_by_devices_is_refused():
    mesh = T.make_mesh(jax.devices()[:1] * 1)
    T.check_batch_divisible(3, mesh)  # one device takes any batch
    fake = type("FakeMesh", (), {"size": 4})()
    with pytest.raises(ValueError, match="batch_size 6 does not divide evenly over 4 devices; use 4 or 8"):
        T.check_batch_divisible(6, fake)


# ------------------------------------------------------------------------- runs and resume


def test_run_writes_config_metrics_and_keeps_last_checkpoints(model_config, tmp_path):
    config = small_config(steps=5, checkpoint_every=1, keep_checkpoints=2, log_every=2)
    summary = run(model_config, config, tmp_path / "run")
    assert summary["step"] == 5 and summary["checkpoints"] == [4, 5]
    record = json.loads((tmp_path / "run" / "config.json").read_text())
    assert record["model"]["phi"] == -4 and record["model"]["input_size"] == SIZE
    assert T.TrainConfig.from_dict(record["train"]) == config
    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4, 5]
    for key in ("loss", "heatmap_4", "heatmap_2", "push", "pull", "learning_rate", "images_per_s"):
        assert np.isfinite(lines[-1][key]), key
    assert lines[-1]["loss"] == pytest.approx(
        sum(lines[-1][k] for k in ("heatmap_4", "heatmap_2", "push", "pull")), rel=1e-5
    )


def test_stop_and_resume_equals_uninterrupted_run(model_config, tmp_path):
    config = small_config(steps=6, checkpoint_every=3)
    run(model_config, config, tmp_path / "full")
    run(model_config, config, tmp_path / "split", stop_after_steps=4)
    summary = run(model_config, config, tmp_path / "split", resume=True)
    assert summary["start_step"] == 4 and summary["step"] == 6
    _, _, full = T.load_for_inference(tmp_path / "full", model=tiny(model_config))
    _, _, split = T.load_for_inference(tmp_path / "split", model=tiny(model_config))
    jax.tree.map(np.testing.assert_array_equal, full, split)
    steps = [json.loads(x)["step"] for x in (tmp_path / "split" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_existing_run_without_resume_is_refused(model_config, tmp_path):
    run(model_config, small_config(steps=1), tmp_path / "run")
    with pytest.raises(FileExistsError, match="resume=True"):
        run(model_config, small_config(steps=1), tmp_path / "run")


def test_non_finite_loss_stops_naming_the_step(model_config, tmp_path):
    class PoisonedLoader(RandomLoader):
        def __next__(self):
            batch = super().__next__()
            if self.position == 3:  # the third batch carries a NaN target
                batch["heatmaps_4"][0, 0, 0, 0] = np.nan
            return batch

    config = small_config(steps=6, checkpoint_every=2)
    with pytest.raises(FloatingPointError, match="non-finite loss nan at step 3"):
        T.train(
            model_config, config, None, tmp_path / "run", model=tiny(model_config), loader=PoisonedLoader(2)
        )
    assert T.checkpoint_steps(tmp_path / "run") == [2]  # nothing saved from the poisoned state
