"""The sweep's task table: plain data, imported lazily, the only place that knows task names."""

import ast
import sys
from pathlib import Path

import pytest

from efficienthrnet import sweep, tasks

SRC = Path(__file__).resolve().parents[1] / "src" / "efficienthrnet"


def _imported_modules(path: Path) -> set[str]:
    """Every module a source file imports, at the top or inside functions (relative ones resolved)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = ("efficienthrnet." if node.level else "") + (node.module or "")
            names |= {base.rstrip(".")} | {f"{base}.{alias.name}".lstrip(".") for alias in node.names}
    return names


def test_table_is_a_leaf_and_trainers_import_nothing_from_above():
    """tasks.py imports only the standard library; the training layer and the trainers never
    import the sweep, the plots, the trials or the CLI (so nothing registers itself at import)."""
    assert all(name.split(".")[0] in sys.stdlib_module_names | {"__future__"}
               for name in _imported_modules(SRC / "tasks.py"))
    above = {"efficienthrnet.sweep", "efficienthrnet.pareto", "efficienthrnet.cli", "efficienthrnet.trials",
             *(f"efficienthrnet.{p.stem}" for p in SRC.glob("sweep_*.py"))}
    below = [*SRC.glob("train*.py"), SRC / "table2.py", *SRC.glob("classify*.py"), *(SRC / "training").glob("*.py")]
    for path in below:
        assert not _imported_modules(path) & above, path.name


def test_sweep_and_pareto_name_no_task():
    """Task names appear in no string literal of sweep*.py or pareto.py (docstrings aside)."""
    for module in (*sorted(p.name for p in SRC.glob("sweep*.py")), "pareto.py"):
        tree = ast.parse((SRC / module).read_text())
        docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef)) and node.body
                      and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
        literals = {node.value for node in ast.walk(tree)
                    if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}
        assert not literals & set(tasks.TASKS), (module, literals & set(tasks.TASKS))


def test_every_entry_resolves_to_functions():
    for task in list(tasks.TASKS.values()):
        assert callable(tasks.resolve(task.run)), task.name
        assert task.plotter is None or callable(tasks.resolve(task.plotter)), task.name
        assert task.check_train is None or callable(tasks.resolve(task.check_train)), task.name
    assert sweep.get_task("pose").__module__ == "efficienthrnet.trials"
    with pytest.raises(ValueError, match="'nope:'.*import path"):
        tasks.resolve("nope:")


def test_register_task_adds_an_entry_and_refuses_bad_settings(monkeypatch, tmp_path):
    monkeypatch.setattr(tasks, "TASKS", dict(tasks.TASKS))
    monkeypatch.setattr(sweep, "TASKS", tasks.TASKS)

    def run(trial, spec, trial_dir):
        return {}

    sweep.register_task("test_with_data", run, needs_data=True, trains=False, fields=("AP",))
    assert tasks.get_task("test_with_data") == tasks.Task("test_with_data", run, ("AP",), None, True, False)
    # The entry's flag, not its name, makes the sweep ask for a [data] table.
    path = tmp_path / "s.toml"
    path.write_text('name = "s"\ntask = "test_with_data"\nphi = [-4.0]\nrules = ["efficienthrnet"]\n'
                    f'output = "{(tmp_path / "out").as_posix()}"\n')
    with pytest.raises(ValueError, match=r"s\.toml: task 'test_with_data' needs a \[data\] table"):
        sweep.load_spec(path)
    sweep.register_task("test_with_data", run)  # the same function again: allowed
    with pytest.raises(ValueError, match="'test_with_data' is already registered.*replace=True"):
        sweep.register_task("test_with_data", lambda *a: {})
    with pytest.raises(ValueError, match=r"unknown setting\(s\) \['need_data'\]"):
        sweep.register_task("test_other", run, need_data=True)
