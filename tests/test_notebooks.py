"""The notebooks execute top to bottom with small settings and write their figures."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _execute(name: str, env: dict[str, str], monkeypatch) -> nbformat.NotebookNode:
    for key, value in env.items():
        monkeypatch.setenv(key, value)  # the kernel inherits this process's environment
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    NotebookClient(notebook, timeout=180, kernel_name="python3",
                   resources={"metadata": {"path": str(NOTEBOOKS)}}).execute()
    return notebook


@pytest.mark.parametrize("name", ["01_scaling_rules.ipynb", "02_pareto.ipynb"])
def test_notebooks_are_committed_without_outputs(name):
    notebook = nbformat.read(NOTEBOOKS / name, as_version=4)
    code = [c for c in notebook.cells if c.cell_type == "code"]
    assert code and all(not c.outputs and c.execution_count is None for c in code)


def test_scaling_rules_notebook(tmp_path, monkeypatch):
    _execute("01_scaling_rules.ipynb", {"EHR_RULES": "efficienthrnet,reference", "EHR_PHI": "-4:0:1",
                                        "EHR_OUT": str(tmp_path)}, monkeypatch)
    table = pd.read_csv(tmp_path / "scaling_table.csv")
    assert len(table) == 10
    h0 = table[(table["rule"] == "reference") & (table["phi"] == 0.0)].iloc[0]
    assert h0["params (M)"] == pytest.approx(19.725359)  # the released H0 (reference page 8.1)
    assert h0["input size"] == 512
    for suffix in ("png", "svg"):
        assert (tmp_path / f"scaling_rules.{suffix}").stat().st_size > 1000


def test_pareto_notebook_runs_a_small_sweep(tmp_path, monkeypatch):
    # phis outside the spec's latency subset: timing is tested with the full sweep, not here
    notebook = _execute("02_pareto.ipynb", {"EHR_PHI": "-5,-3,-1", "EHR_OUT": str(tmp_path)}, monkeypatch)
    sweep_dir = tmp_path / "profile_phi"
    results = pd.read_csv(sweep_dir / "results.csv")
    assert len(results) == 3 * results["rule"].nunique() and set(results["status"]) == {"done"}
    for suffix in ("png", "svg"):
        assert (sweep_dir / "plots" / f"macs_vs_phi.{suffix}").stat().st_size > 1000
    printed = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "params-per-MAC front" in printed
    assert os.fspath(sweep_dir / "plots" / "params_vs_phi.png") in printed
