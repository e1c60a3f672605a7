"""Data parallelism: the sharded step over 4 host CPU devices equals the one-device step.

jax fixes its device count when it initialises, so the 4-device run happens in a subprocess
started with XLA_FLAGS=--xla_force_host_platform_device_count=4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = r"""
import json, sys
import jax, numpy as np
jax.config.update("jax_disable_most_optimizations", True)
from efficienthrnet import train as T
from efficienthrnet.scaling import generate_config
from test_train_machinery import RandomLoader, TinyPoseNet

assert jax.device_count() == 4, jax.devices()
model_config = generate_config(-4).with_input_size(64)
config = T.TrainConfig(steps=10, batch_size=8, input_size=64, progress=False)
model = TinyPoseNet(model_config)
batches = [next(iter(RandomLoader(8, seed=s))) for s in (1, 2)]

def two_steps(devices):
    mesh = T.make_mesh(devices)
    state = T.replicate(T.create_train_state(model, model_config, config), mesh)
    step = T.make_train_step(config, mesh)
    losses = []
    for batch in batches:
        sharded = T.shard_batch(batch, mesh)
        state, metrics = step(state, sharded)
        losses.append(float(metrics["loss"]))
    return jax.device_get({"params": state.params, "batch_stats": state.batch_stats}), losses, sharded

one, one_losses, _ = two_steps(jax.devices()[:1])
four, four_losses, sharded = two_steps(jax.devices())
diffs = jax.tree.leaves(jax.tree.map(lambda a, b: float(np.max(np.abs(a - b)) / (np.max(np.abs(a)) + 1e-12)), one, four))
try:
    T.check_batch_divisible(6, T.make_mesh())
    refused = ""
except ValueError as e:
    refused = str(e)
print(json.dumps({
    "losses_one": one_losses, "losses_four": four_losses, "max_rel_diff": max(diffs),
    "shards": len(sharded["image"].addressable_shards),
    "shard_rows": sharded["image"].addressable_shards[0].data.shape[0],
    "refused": refused,
}))
"""


@pytest.fixture(scope="module")
def result():
    tests_dir = Path(__file__).parent
    env = dict(os.environ)
    env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip()
    env["JAX_PLATFORMS"] = "cpu"
    env["PYTHONPATH"] = os.pathsep.join([str(tests_dir), env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        cwd=tests_dir,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_batch_is_split_over_four_devices(result):
    assert result["shards"] == 4 and result["shard_rows"] == 2


def test_four_device_steps_equal_one_device_steps(result):
    # BatchNorm statistics, gradients and Adam updates all see the global batch of 8.
    for one, four in zip(result["losses_one"], result["losses_four"]):
        assert four == pytest.approx(one, rel=1e-5)
    assert result["max_rel_diff"] < 1e-5


def test_batch_that_does_not_split_is_refused(result):
    assert "batch_size 6 does not divide evenly over 4 devices; use 4 or 8" in result["refused"]
