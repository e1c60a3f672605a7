"""Predictor: shape buckets bound the compilations; resize, flip, crop and back-projection are exact enough."""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficienthrnet.keypoints import COCO17
from efficienthrnet.predict import (
    PredictConfig,
    Predictor,
    all_canvas_shapes,
    plan_resize,
    upsample2x,
)

J = COCO17.num_keypoints


@pytest.fixture(autouse=True)
def fast_compiles():
    jax.config.update("jax_disable_most_optimizations", True)
    yield
    jax.config.update("jax_disable_most_optimizations", False)


class TinyPoseNet(nn.Module):
    """The EfficientHRNet output contract with two convolutions."""

    @nn.compact
    def __call__(self, x, train: bool = False):
        out4 = nn.Conv(2 * J, (4, 4), strides=4)(x)
        out2 = nn.Conv(J, (2, 2), strides=2)(x)
        return out4, out2


def blob_apply(variables, x):
    """A parameter-free 'network' whose heatmaps are the image's red channel (all joints), tags 0."""
    red = (x[..., :1] + 0.485 / 0.229) / (1 / 0.229)  # back to [0, 1]
    b, h, w, _ = x.shape
    half = red.reshape(b, h // 2, 2, w // 2, 2, 1).mean(axis=(2, 4))
    quarter = red.reshape(b, h // 4, 4, w // 4, 4, 1).mean(axis=(2, 4))
    out4 = jnp.concatenate([jnp.tile(quarter, (1, 1, 1, J)), jnp.zeros((b, h // 4, w // 4, J))], axis=-1)
    return out4, jnp.tile(half, (1, 1, 1, J))


def blob_image(h, w, x0, y0, sigma=5.0):
    yy, xx = np.mgrid[0:h, 0:w]
    g = np.exp(-((xx + 0.5 - x0) ** 2 + (yy + 0.5 - y0) ** 2) / (2 * sigma**2))
    image = np.zeros((h, w, 3), np.uint8)
    image[..., 0] = np.round(255 * g).astype(np.uint8)
    return image


def test_compilations_bounded_by_buckets():
    config = PredictConfig(input_size=64, flip=True, decode_at="half")
    model = TinyPoseNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    predictor = Predictor(model, variables, COCO17, config)
    rng = np.random.default_rng(0)
    shapes = set()
    for _ in range(16):
        short, ratio = int(rng.integers(40, 90)), float(rng.uniform(1.0, 3.0))
        h, w = (short, int(short * ratio)) if rng.random() < 0.5 else (int(short * ratio), short)
        image = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)
        found = predictor(image)
        assert found.keypoints.shape[1:] == (J, 3)
        shapes.add(plan_resize((h, w), 64, config.long_side_ratios).canvas_hw)
    bound = all_canvas_shapes(config)
    # At 64 the ratios give long sides 64, 96, 128 (multiples of 32): 3 x 2 orientations, square once.
    assert shapes <= bound and len(bound) == 5
    assert predictor.num_compilations == len(shapes) < 16
    predictor(rng.integers(0, 255, (50, 60, 3), dtype=np.uint8))  # a seen bucket: no new compile
    assert predictor.num_compilations == len(shapes | {plan_resize((50, 60), 64, config.long_side_ratios).canvas_hw})


def test_with_variables_runs_other_weights_on_the_same_compiled_function():
    config = PredictConfig(input_size=64, flip=False, decode_at="half")
    model = TinyPoseNet()
    first = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    second = model.init(jax.random.key(1), jnp.zeros((1, 64, 64, 3)))
    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    predictor = Predictor(model, first, COCO17, config)
    heat_first = predictor.maps(image)[0]
    other = predictor.with_variables(second)
    heat_second = other.maps(image)[0]
    assert predictor.num_compilations == other.num_compilations == 1  # no new trace for the new weights
    np.testing.assert_allclose(heat_second, Predictor(model, second, COCO17, config).maps(image)[0], atol=1e-6)
    assert not np.allclose(heat_first, heat_second)
    np.testing.assert_array_equal(predictor.maps(image)[0], heat_first)  # the original keeps its weights


def test_sweep_trials_of_one_design_share_the_evaluation_predictor():
    from efficienthrnet import trials

    config = PredictConfig(input_size=64, flip=False)
    model = TinyPoseNet()
    variables = model.init(jax.random.key(0), jnp.zeros((1, 64, 64, 3)))
    trials._PREDICTORS.clear()
    seed0 = trials._predictor(model, "coco17", config, variables)
    seed1 = trials._predictor(model, "coco17", config, jax.tree.map(lambda a: a + 1, variables))
    assert seed1 is not seed0 and seed1._maps_fn is seed0._maps_fn and seed1.variables is not seed0.variables
    other_config = trials._predictor(model, "coco17", PredictConfig(input_size=96, flip=False), variables)
    assert other_config._maps_fn is not seed0._maps_fn
    for size in range(128, 128 + 32 * (trials._PREDICTORS_KEPT - 1), 32):
        trials._predictor(model, "coco17", PredictConfig(input_size=size, flip=False), variables)
    assert len(trials._PREDICTORS) == trials._PREDICTORS_KEPT  # the oldest design was let go
    assert trials._predictor(model, "coco17", config, variables)._maps_fn is not seed0._maps_fn
    trials._PREDICTORS.clear()


@pytest.mark.parametrize(
    "hw,xy,config",
    [
        ((90, 150), (101.3, 40.7), PredictConfig(input_size=64, flip=True)),
        ((160, 70), (30.2, 120.9), PredictConfig(input_size=64, flip=False, decode_at="half")),
        ((60, 250), (200.0, 30.0), PredictConfig(input_size=64, flip=True, scales=(1.0, 1.5))),
    ],
)
def test_blob_maps_back_to_image_coordinates(hw, xy, config):
    """Resize, padding crop, flip merge and the inverse resize put the blob where it is drawn."""
    predictor = Predictor.from_apply_fn(blob_apply, {}, COCO17, config)
    found = predictor(blob_image(*hw, *xy))
    assert found.num_people == 1
    k = min(64 / min(hw), max(predictor.config.long_side_ratios) * 64 / max(hw))
    step = 2.0 if config.decode_at == "half" else 1.0  # map pixel size on the network input
    err = np.abs(found.keypoints[0, :, :2] - np.asarray(xy)).max()
    assert err <= (0.5 * step + 0.5) / k
    assert np.all(found.keypoints[0, :, 2] > 0.5)


def test_plan_resize_buckets():
    plan = plan_resize((480, 640), 512, (1.0, 1.25, 1.5))
    assert plan.resized_hw == (512, 683) and plan.canvas_hw == (512, 768)
    tall = plan_resize((640, 200), 64, (1.0, 2.0))  # 3.2:1, longer than the largest bucket
    assert tall.canvas_hw == (128, 64) and tall.resized_hw == (128, 40)
    with pytest.raises(ValueError, match="include 1.0"):
        PredictConfig(scales=(0.5,))


def test_upsample2x_equals_bilinear_resize():
    x = jax.random.normal(jax.random.key(1), (2, 5, 7, 3))
    want = jax.image.resize(x, (2, 10, 14, 3), "bilinear")
    np.testing.assert_allclose(upsample2x(x), want, atol=1e-5)


def test_rejects_non_uint8_image():
    predictor = Predictor.from_apply_fn(blob_apply, {}, COCO17, PredictConfig(input_size=64))
    with pytest.raises(ValueError, match="uint8 RGB"):
        predictor(np.zeros((32, 32, 3), np.float32))
