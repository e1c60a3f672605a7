"""A run folder: ``config.json`` (what was trained, written atomically), ``metrics.jsonl`` and
``checkpoints/``; which folders a request may write into."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import jax

from efficienthrnet.config import ModelConfig
from efficienthrnet.files import check_output_dir, write_text_atomic
from efficienthrnet.training.checkpoints import CHECKPOINT_DIR, check_same_architecture, first_line

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"


def read_run_config(run_dir: Path) -> dict[str, Any]:
    """A run folder's config.json; refuses a missing file, or a damaged one, naming it and the fix."""
    path = run_dir / CONFIG_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: {run_dir} is not a training run folder (train writes it first)"
        )
    try:
        record = json.loads(path.read_text())
        ModelConfig.from_dict(record["model"])
    except Exception as err:  # JSON, a missing table or a bad field: the file was edited or cut short
        raise ValueError(
            f"{path} is damaged ({type(err).__name__}: {first_line(err)}); restore it from a copy, or "
            f"delete the run folder {run_dir} and train again"
        ) from None
    return record


def check_run_dir(
    run_dir: Path,
    model_config: ModelConfig,
    resume: bool,
    check_stored: Callable[[Mapping[str, Any]], None] | None = None,
    read: Callable[[Path], Mapping[str, Any]] = read_run_config,
) -> None:
    """Refuse a run folder that this request must not write into; writes nothing.

    Valid: a new path, an existing folder, or a run folder of the same model with --resume.
    ``read`` reads the stored config.json (a task may refuse other tasks' folders there);
    ``check_stored(record)`` refuses a resume whose task settings differ from the stored ones.
    """
    check_output_dir(run_dir, "run folder")
    checkpoints = run_dir / CHECKPOINT_DIR
    has_checkpoints = checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())
    if has_checkpoints and not resume:
        raise FileExistsError(
            f"{run_dir} already holds checkpoints; pass resume=True (--resume) to continue it or choose a new run dir"
        )
    if resume and (run_dir / CONFIG_FILE).is_file():
        record = read(run_dir)
        check_same_architecture(ModelConfig.from_dict(record["model"]), model_config, f"run dir {run_dir}")
        if check_stored is not None:
            check_stored(record)


def write_run_record(run_dir: Path, record: Mapping[str, Any]) -> None:
    """Write RUN_DIR/config.json atomically (process 0 only), once everything is checked."""
    if jax.process_index() == 0:
        run_dir.mkdir(parents=True, exist_ok=True)
        write_text_atomic(run_dir / CONFIG_FILE, json.dumps(record, indent=2))
