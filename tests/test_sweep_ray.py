"""The Ray executor: a two-trial profile sweep on a local Ray cluster."""

from __future__ import annotations

import json
import os

import pytest

ray = pytest.importorskip("ray", reason="the 'ray' extra is not installed (pip install 'efficienthrnet[ray]')")

from efficienthrnet.sweep import LatencySpec, SweepSpec, run_sweep


@pytest.fixture
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_two_trial_sweep_runs_as_ray_tasks(tmp_path, local_ray):
    spec = SweepSpec(name="ray", task="profile", phi=(-4.0, -2.0), rules=("reference",), output=str(tmp_path / "out"),
                     latency=LatencySpec(enabled=False))
    df = run_sweep(spec, executor="ray", progress=False)
    assert list(df["status"]) == ["done", "done"]
    # Released H-4 and H-2 trainable parameter counts (reference page 8.1).
    assert list(df["params"]) == [2_764_706, 8_263_495]
    for trial_id in df["trial_id"]:
        record = json.loads((tmp_path / "out" / "trials" / trial_id / "result.json").read_text())
        assert record["provenance"]["pid"] != os.getpid()  # ran in a Ray worker, not in the driver
    # Re-running finds both finished and submits nothing.
    again = run_sweep(spec, executor="ray", progress=False)
    assert list(again["attempt"]) == [1, 1]
