"""Training the real EfficientHRNet (phi=-4, 64 px) on synthetic data through the real pipeline.

One module fixture trains 12 steps (the compile dominates, so every test here reads that run):
the loss must fall clearly, a resume from its step-6 checkpoint must reproduce its step-12
parameters bit for bit, and checkpoints of another phi or rule must be refused.
"""

from __future__ import annotations

import json
import shutil

import jax
import numpy as np
import pytest

from efficienthrnet import train as T
from efficienthrnet.data.synthetic import make_synthetic_dataset
from efficienthrnet.nn.model import EfficientHRNet, init_shapes
from efficienthrnet.scaling import generate_config
from efficienthrnet.training import state as train_state
from efficienthrnet.training.parallel import make_mesh

SIZE = 64
CONFIG = T.TrainConfig(
    steps=12,
    batch_size=4,
    input_size=SIZE,
    # A short run: a higher constant rate shows learning within 12 steps.
    learning_rate=3e-3,
    decay_factor=1.0,
    checkpoint_every=6,
    keep_checkpoints=2,
    log_every=1,
    progress=False,
)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    previous = jax.config.read("jax_disable_most_optimizations")
    jax.config.update("jax_disable_most_optimizations", True)  # compile time dominates, not speed
    root = tmp_path_factory.mktemp("train_real")
    make_synthetic_dataset(root / "data", num_images=16, image_size=128, seed=0)
    spec = f"synthetic:{root / 'data'}"
    # Compiled ahead, as a sweep does for its next design; the run must then compile neither.
    T._jitted_train_step.cache_clear()
    train_state.compiled_state_builder.cache_clear()
    step = T.make_train_step(CONFIG, make_mesh())
    T.compile_ahead(generate_config(-4), CONFIG, spec)
    ahead = {"step_executables": step._cache_size(), "state_builds": train_state.compiled_state_builder.cache_info()}
    summary = T.train(generate_config(-4), CONFIG, spec, root / "full")
    after = {"step_executables": step._cache_size(), "state_builds": train_state.compiled_state_builder.cache_info()}
    yield {"root": root, "spec": spec, "summary": summary, "ahead": ahead, "after": after}
    jax.config.update("jax_disable_most_optimizations", previous)


def read_metrics(run_dir):
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def zero_prediction_heatmap_loss(spec, steps):
    """The 1/4 heatmap loss an all-zero prediction gets on each of the run's batches (the
    pipeline is deterministic, so a fresh loader with the run's settings replays them)."""
    loader = T.make_train_loader(spec, T.effective_model_config(generate_config(-4), CONFIG), CONFIG)
    losses = []
    for _ in range(steps):
        batch = next(loader)
        per_pixel = batch["heatmaps_4"] ** 2 * batch["mask_4"][..., None]
        losses.append(float(np.mean(np.mean(per_pixel, axis=(1, 2, 3)))))
    loader.close()
    return np.array(losses)


def test_loss_falls_clearly_on_synthetic_data(full_run):
    """From the reference init the network starts at the all-zero prediction; learning means
    fitting the peaks, i.e. beating that prediction's loss on the same batches."""
    metrics = read_metrics(full_run["root"] / "full")
    heat4 = np.array([r["heatmap_4"] for r in metrics])
    assert len(heat4) == 12 and np.all(np.isfinite([r["loss"] for r in metrics]))
    zero = zero_prediction_heatmap_loss(full_run["spec"], 12)
    assert heat4[0] == pytest.approx(zero[0], rel=0.05)  # near-zero outputs at the start
    ratio = heat4[-4:].mean() / zero[-4:].mean()
    assert ratio < 0.8, f"heatmap loss {heat4[-4:].mean():.4f} vs all-zero prediction {zero[-4:].mean():.4f}"
    assert full_run["summary"]["step"] == 12 and full_run["summary"]["images_per_s"] > 0


def test_a_run_compiled_ahead_compiles_neither_its_state_init_nor_its_step(full_run):
    ahead, after = full_run["ahead"], full_run["after"]
    assert ahead["step_executables"] == 1 and ahead["state_builds"].misses == 1
    assert after["step_executables"] == 1  # the run's 12 steps used the step compiled ahead
    assert after["state_builds"].misses == 1 and after["state_builds"].hits > ahead["state_builds"].hits


def test_resume_from_checkpoint_reproduces_the_uninterrupted_run(full_run):
    root = full_run["root"]
    # A run that stopped after step 6: the same folder as the full run had then.
    shutil.copytree(root / "full", root / "resumed")
    shutil.rmtree(root / "resumed" / "checkpoints" / "12")
    summary = T.train(generate_config(-4), CONFIG, full_run["spec"], root / "resumed", resume=True)
    assert summary["start_step"] == 6 and summary["step"] == 12
    _, _, uninterrupted = T.load_for_inference(root / "full")
    _, _, resumed = T.load_for_inference(root / "resumed")
    jax.tree.map(np.testing.assert_array_equal, uninterrupted, resumed)
    # metrics.jsonl holds each step once, the resumed steps with the same losses
    full, again = read_metrics(root / "full"), read_metrics(root / "resumed")
    assert [r["step"] for r in again] == list(range(1, 13))
    assert [r["loss"] for r in again] == [r["loss"] for r in full]


def test_load_for_inference_gives_the_model_variables(full_run):
    model_config, model, variables = T.load_for_inference(full_run["root"] / "full", step=6)
    assert model_config.phi == -4 and model_config.input_size == SIZE
    assert isinstance(model, EfficientHRNet) and model.config == model_config
    expected = init_shapes(model_config)
    shapes = jax.tree.map(lambda a: a.shape, variables)
    assert shapes == jax.tree.map(lambda a: a.shape, dict(expected))
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 5; it has steps \\[6, 12\\]"):
        T.load_for_inference(full_run["root"] / "full", step=5)


@pytest.mark.parametrize(
    "other, named",
    [((-3, "efficienthrnet"), "phi=-3"), ((-4, "reference"), "rule='reference'")],
)
def test_checkpoint_of_another_phi_or_rule_is_refused(full_run, other, named):
    phi, rule = other
    requested = generate_config(phi, rule=rule)
    run_dir = full_run["root"] / "full"
    with pytest.raises(ValueError, match=f"rule='efficienthrnet' phi=-4.*{named}"):
        T.train(requested, CONFIG, full_run["spec"], run_dir, resume=True)
    # the checkpoint itself carries its model config, checked even without config.json
    manager = T.checkpoint_manager(run_dir, read_only=True)
    try:
        with pytest.raises(ValueError, match=f"checkpoint .*rule='efficienthrnet' phi=-4.*{named}"):
            T.restore_checkpoint(manager, None, requested.with_input_size(SIZE))
    finally:
        manager.close()


def test_train_command_builds_the_configs_from_flags(full_run):
    # Resuming the phi=-4 run with --phi -3 reaches the architecture check (nothing compiles).
    with pytest.raises(ValueError, match="rule='efficienthrnet' phi=-4.*phi=-3"):
        T.train_command(
            phi=-3,
            data=full_run["spec"],
            steps=12,
            batch=4,
            out=full_run["root"] / "full",
            input_size=SIZE,
            resume=True,
        )
    with pytest.raises(ValueError, match="TrainConfig.batch_size=0"):
        T.train_command(phi=-4, data=full_run["spec"], steps=12, batch=0, out=full_run["root"] / "new")
