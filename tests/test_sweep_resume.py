"""A sweep killed with SIGKILL in the middle of a trial loses no finished trial, repeats none and
completes the rest when run again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

PHIS = (-5.0, -4.0, -3.0, -2.0, -1.0)
HANG_PHI = -3.0  # the third trial hangs in the first run and is killed there

SCRIPT = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from efficienthrnet import sweep

    out_dir, counts_dir, hang_phi = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])

    def counting_task(trial, spec, trial_dir):
        # One line per start of this trial: how often it ran, across processes.
        with open(counts_dir / f"{trial.trial_id}.runs", "a") as f:
            f.write("run\\n")
        if trial.phi == hang_phi:
            (counts_dir / "hanging").touch()
            time.sleep(600)
        return {"value": trial.phi * 2}

    sweep.register_task("counting", counting_task)
    spec = sweep.SweepSpec(name="kill", task="counting", phi=PHIS, rules=("efficienthrnet",),
                           output=str(out_dir), latency=sweep.LatencySpec(enabled=False))
    sweep.run_sweep(spec, progress=False)
    """
).replace("PHIS", repr(PHIS))


def _run(script: Path, out: Path, counts: Path, hang_phi: float) -> subprocess.Popen:
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    return subprocess.Popen([sys.executable, str(script), str(out), str(counts), str(hang_phi)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def _record(out: Path, phi: float) -> Path:
    return out / "trials" / f"counting-efficienthrnet-phi{phi:g}-seed0" / "result.json"


def test_sigkill_mid_trial_then_rerun_completes_without_repeats(tmp_path):
    script, out, counts = tmp_path / "run_sweep.py", tmp_path / "out", tmp_path / "counts"
    script.write_text(SCRIPT)
    counts.mkdir()

    first = _run(script, out, counts, HANG_PHI)
    deadline = time.monotonic() + 120
    while not (counts / "hanging").exists():
        assert first.poll() is None, first.communicate()[0].decode()
        assert time.monotonic() < deadline, "the sweep never reached the hanging trial"
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait()

    finished = [p for p in PHIS if p < HANG_PHI]
    states = {p: json.loads(_record(out, p).read_text())["status"] for p in finished}
    assert states == {p: "done" for p in finished}
    assert json.loads(_record(out, HANG_PHI).read_text())["status"] == "running"  # interrupted, visible
    assert not any(_record(out, p).exists() for p in PHIS if p > HANG_PHI)
    mtimes = {p: _record(out, p).stat().st_mtime_ns for p in finished}

    second = _run(script, out, counts, hang_phi=99.0)  # nothing hangs this time
    output, _ = second.communicate(timeout=120)
    assert second.returncode == 0, output.decode()

    runs = {p: len((counts / f"counting-efficienthrnet-phi{p:g}-seed0.runs").read_text().split())
            for p in PHIS}
    assert runs == {p: (2 if p == HANG_PHI else 1) for p in PHIS}
    assert {p: _record(out, p).stat().st_mtime_ns for p in finished} == mtimes
    records = {p: json.loads(_record(out, p).read_text()) for p in PHIS}
    assert all(r["status"] == "done" for r in records.values())
    assert records[HANG_PHI]["attempt"] == 2
    assert [records[p]["result"]["value"] for p in PHIS] == [2 * p for p in PHIS]
