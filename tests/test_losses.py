"""The vectorised losses equal a slow loop-based transcription of the reference definitions."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from efficienthrnet.losses import (
    LossWeights,
    ae_loss_per_image,
    compute_losses,
    gather_joint_tags,
    heatmap_loss,
)

J = 5  # a small schema is enough: nothing here depends on COCO's 17


# ---------------------------------------------------------------- slow oracle (reference code structure)


def oracle_heatmap(pred, gt, mask):
    """Per-sample mean of the masked squared error over J*H*W, loops over samples."""
    out = []
    for b in range(pred.shape[0]):
        total = 0.0
        for y in range(pred.shape[1]):
            for x in range(pred.shape[2]):
                for j in range(pred.shape[3]):
                    total += (float(pred[b, y, x, j]) - float(gt[b, y, x, j])) ** 2 * float(mask[b, y, x])
        out.append(total / (pred.shape[1] * pred.shape[2] * pred.shape[3]))
    return out


def oracle_ae_single(tag_map, joints, push_loss="exp"):
    """One image: tag_map [H, W, J], joints [P, J, 2]; loops over people and joints as the reference."""
    width = tag_map.shape[1]
    refs, pull = [], 0.0
    for person in joints:
        vals = [
            float(tag_map[idx // width, idx % width, j]) for j, (idx, flag) in enumerate(person) if flag > 0
        ]
        if not vals:
            continue
        mean = sum(vals) / len(vals)
        refs.append(mean)
        pull += sum((v - mean) ** 2 for v in vals) / len(vals)
    n = len(refs)
    if n == 0:
        return 0.0, 0.0
    if n == 1:
        return 0.0, pull
    if push_loss == "exp":
        push = sum(math.exp(-((refs[i] - refs[k]) ** 2)) for i in range(n) for k in range(n) if i != k)
    else:  # "max": the diagonal's 1s are subtracted in the reference, here never added
        push = sum(max(0.0, 1.0 - abs(refs[i] - refs[k])) for i in range(n) for k in range(n) if i != k)
    return push / ((n - 1) * n) * 0.5, pull / n


# ---------------------------------------------------------------- random inputs with the edge cases


def random_batch(rng: np.random.Generator, b=4, h=8, w=8, people=6):
    """A batch in the pipeline contract with: an image without people, a person with one joint,
    padding rows, and invisible joints with non-zero indices (which must be ignored)."""
    joints = np.zeros((b, people, J, 2), np.int32)
    joints[..., 0] = rng.integers(0, h * w, size=(b, people, J))
    joints[..., 1] = rng.random((b, people, J)) < 0.6
    joints[0] = 0  # image 0: no people at all
    joints[1, 0, :, 1] = 0
    joints[1, 0, 2, 1] = 1  # image 1, person 0: exactly one visible joint
    joints[1, 1:, :, 1] = 0  # ... and nobody else: N = 1, push must be 0
    joints[2, 3:] = 0  # image 2: padding rows after 3 people
    joints[2, :3, 0, 1] = 1  # each of them visible
    return {
        "heatmaps_4": rng.random((b, h, w, J), np.float32),
        "heatmaps_2": rng.random((b, 2 * h, 2 * w, J), np.float32),
        "mask_4": (rng.random((b, h, w)) < 0.8).astype(np.float32),
        "mask_2": (rng.random((b, 2 * h, 2 * w)) < 0.8).astype(np.float32),
        "joints_4": joints,
    }


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    batch = random_batch(rng)
    b, h, w, _ = batch["heatmaps_4"].shape
    out4 = rng.normal(size=(b, h, w, 2 * J)).astype(np.float32)
    out2 = rng.normal(size=(b, 2 * h, 2 * w, J)).astype(np.float32)
    return out4, out2, batch


def test_heatmap_loss_matches_oracle(data):
    out4, out2, batch = data
    got4 = np.asarray(heatmap_loss(out4[..., :J], batch["heatmaps_4"], batch["mask_4"]))
    got2 = np.asarray(heatmap_loss(out2, batch["heatmaps_2"], batch["mask_2"]))
    np.testing.assert_allclose(
        got4, oracle_heatmap(out4[..., :J], batch["heatmaps_4"], batch["mask_4"]), rtol=1e-5
    )
    np.testing.assert_allclose(got2, oracle_heatmap(out2, batch["heatmaps_2"], batch["mask_2"]), rtol=1e-5)


def test_masked_pixels_stay_in_denominator():
    pred = np.ones((1, 2, 2, 1), np.float32)
    gt = np.zeros_like(pred)
    mask = np.array([[[1, 0], [0, 0]]], np.float32)
    # one pixel of four counts with error 1: the mean is 1/4, not 1
    assert float(heatmap_loss(pred, gt, mask)[0]) == pytest.approx(0.25)


def test_gather_reads_tag_of_own_joint_type():
    tags = np.arange(2 * 3 * 4 * J, dtype=np.float32).reshape(2, 3, 4, J)
    joints = np.zeros((2, 1, J, 2), np.int32)
    joints[1, 0, :, 0] = 2 * 4 + 1  # y=2, x=1
    got = np.asarray(gather_joint_tags(tags, joints))
    np.testing.assert_array_equal(got[1, 0], tags[1, 2, 1, :])


@pytest.mark.parametrize("push_loss", ["exp", "max"])
def test_ae_matches_oracle_including_edge_cases(data, push_loss):
    out4, _, batch = data
    tags = out4[..., J:]
    fn = jax.jit(ae_loss_per_image, static_argnums=2)
    push, pull = (np.asarray(a) for a in fn(tags, batch["joints_4"], push_loss))
    for b in range(tags.shape[0]):
        o_push, o_pull = oracle_ae_single(tags[b], batch["joints_4"][b], push_loss)
        assert push[b] == pytest.approx(o_push, rel=1e-5, abs=1e-7), f"push image {b}"
        assert pull[b] == pytest.approx(o_pull, rel=1e-5, abs=1e-7), f"pull image {b}"
    assert push[0] == 0.0 and pull[0] == 0.0  # no people
    assert push[1] == 0.0  # one person with one joint: no pair, and pull 0 by definition
    assert pull[1] == 0.0
    assert push[3] > 0.0 and pull[3] > 0.0  # the random image does exercise both terms


def test_total_is_weighted_sum_and_matches_oracle(data):
    out4, out2, batch = data
    weights = LossWeights(heatmap_4=1.0, heatmap_2=0.5, push=2e-3, pull=1e-3)
    total, parts = jax.jit(compute_losses, static_argnums=3)(out4, out2, batch, weights)
    b = out4.shape[0]
    ae = [oracle_ae_single(out4[i, ..., J:], batch["joints_4"][i]) for i in range(b)]
    expected = {
        "heatmap_4": 1.0 * np.mean(oracle_heatmap(out4[..., :J], batch["heatmaps_4"], batch["mask_4"])),
        "heatmap_2": 0.5 * np.mean(oracle_heatmap(out2, batch["heatmaps_2"], batch["mask_2"])),
        "push": 2e-3 * np.mean([p for p, _ in ae]),
        "pull": 1e-3 * np.mean([q for _, q in ae]),
    }
    for name, value in expected.items():
        assert float(parts[name]) == pytest.approx(value, rel=1e-5), name
    assert float(total) == pytest.approx(sum(expected.values()), rel=1e-5)


def test_bfloat16_outputs_give_float32_loss(data):
    out4, out2, batch = data
    total, parts = compute_losses(jnp.asarray(out4, jnp.bfloat16), jnp.asarray(out2, jnp.bfloat16), batch)
    assert total.dtype == jnp.float32 and all(p.dtype == jnp.float32 for p in parts.values())
    ref, _ = compute_losses(out4, out2, batch)
    assert float(total) == pytest.approx(float(ref), rel=2e-2)


def test_gradient_of_pull_pulls_tags_together():
    # Two joints of one person at different tags: the pull gradient points them at each other.
    tags = np.zeros((1, 1, 2, J), np.float32)
    tags[0, 0, 0, 0], tags[0, 0, 1, 1] = -1.0, 1.0
    joints = np.zeros((1, 1, J, 2), np.int32)
    joints[0, 0, 0] = (0, 1)
    joints[0, 0, 1] = (1, 1)
    grad = np.asarray(jax.grad(lambda t: ae_loss_per_image(t, joints)[1].sum())(tags))
    assert grad[0, 0, 0, 0] < 0 < grad[0, 0, 1, 1]


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match="2J"):
        compute_losses(np.zeros((1, 4, 4, 7)), np.zeros((1, 8, 8, 4)), {})
    with pytest.raises(ValueError, match="mask shape"):
        heatmap_loss(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 5)))
    with pytest.raises(ValueError, match="joints shape"):
        gather_joint_tags(np.zeros((1, 4, 4, 2)), np.zeros((1, 3, 3, 2), np.int32))
    with pytest.raises(ValueError, match="push=-1"):
        LossWeights(push=-1)


def test_max_push_separates_collapsed_tags_where_exp_cannot():
    """Two people whose tags are (almost) equal: the exp push has (almost) no gradient there."""
    tags = np.zeros((1, 2, 2, J), np.float32)
    tags[0, 0, 1, :] = 1e-4  # person 1's joints sit at pixel (0, 1), person 0's at (0, 0)
    joints = np.zeros((1, 2, J, 2), np.int32)
    joints[0, 1, :, 0] = 1
    joints[0, :, :, 1] = 1

    def push_grad(kind):
        return np.asarray(jax.grad(lambda t: ae_loss_per_image(t, joints, kind)[0].sum())(tags))

    exp_grad, max_grad = np.abs(push_grad("exp")).max(), np.abs(push_grad("max")).max()
    assert exp_grad < 1e-4 and max_grad > 0.01
    with pytest.raises(ValueError, match="push_loss='sq'"):
        ae_loss_per_image(tags, joints, "sq")
