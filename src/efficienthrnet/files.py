"""Output paths checked before any work, and files written so that nothing is ever half-written.

A command first checks every path it will write (`check_output_dir`, `check_output_file`), then
does its work, then writes each file through a temporary file in the same folder that replaces
the target in one step (`os.replace`): a reader, or a later run, sees the old file or the whole
new one. A folder built piece by piece (a dataset) is built in a hidden folder beside the target
and renamed into place (`replace_dir`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
from collections.abc import Iterator
from pathlib import Path


def _first_existing(path: Path) -> Path:
    """The path itself or its nearest existing ancestor (the folder a new path would be made in)."""
    path = path.absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_creatable(path: Path, what: str) -> None:
    """Refuse a path whose nearest existing ancestor is a file or is not writable, naming both."""
    base = _first_existing(path)
    if not base.is_dir():
        raise NotADirectoryError(
            f"{what} {path}: {base} is a file, not a folder; choose a path that does not go through a file"
        )
    if not os.access(base, os.W_OK | os.X_OK):
        raise PermissionError(
            f"{what} {path}: no permission to write in {base}; fix its permissions or choose another location"
        )


def check_output_dir(path: str | os.PathLike, what: str = "output folder") -> Path:
    """A folder to write into: absent (it will be made) or an existing writable folder; not a file.

    ``what`` names the option or role in the messages, e.g. "--out".
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise NotADirectoryError(f"{what} {path} is an existing file, not a folder; choose a folder path")
    _check_creatable(path, what)
    return path


def check_output_file(path: str | os.PathLike, what: str = "output file") -> Path:
    """A file to write: absent or an existing file (replaced), in a folder that exists or can be made."""
    path = Path(path)
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is an existing folder; give a file path, e.g. {path / 'out'}")
    if not path.name:
        raise ValueError(f"{what} {str(path)!r} has no file name")
    _check_creatable(path, what)
    if path.exists() and not os.access(path, os.W_OK):
        raise PermissionError(f"{what} {path} exists and is read-only; fix its permissions or choose another path")
    return path


def check_input_file(path: str | os.PathLike, what: str = "input file") -> Path:
    """A file to read: it exists, is a file and is readable; errors name it and say what to do."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{what} {path} not found; check the path")
    if path.is_dir():
        raise IsADirectoryError(f"{what} {path} is a folder; give a file")
    if not os.access(path, os.R_OK):
        raise PermissionError(f"{what} {path} is not readable; check its permissions")
    return path


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same suffix, so writers pick the same format);
    it replaces ``path`` when the block ends without error and is removed otherwise."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _hidden_name(path, f".tmp{path.suffix}")  # made by the writer, so with the usual permissions
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file (flushed to disk) and one rename."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    return write_bytes_atomic(path, text.encode("utf-8"))


def _hidden_name(path: Path, suffix: str) -> Path:
    """An unused hidden name beside ``path``: ``.NAME.<random>SUFFIX``."""
    return path.parent / f".{path.stem or path.name}.{secrets.token_hex(4)}{suffix}"


def temp_dir_beside(target: str | os.PathLike) -> Path:
    """A new hidden folder next to ``target`` (same filesystem, so that a rename can move it)."""
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    folder = _hidden_name(target, ".tmp")
    folder.mkdir()  # plain mkdir (not mkdtemp's 0700) so that the result has the usual permissions
    return folder


def replace_dir(built: Path, target: str | os.PathLike) -> None:
    """Move the finished folder ``built`` to ``target``; an existing ``target`` is swapped out
    first and deleted only once the new folder is in place."""
    target = Path(target)
    if not target.exists():
        os.replace(built, target)
        return
    old = _hidden_name(target.absolute(), ".old")
    os.replace(target, old)
    try:
        os.replace(built, target)
    except BaseException:
        os.replace(old, target)  # put the old folder back
        raise
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building_dir(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a hidden folder beside ``target`` to build into; it becomes ``target`` when the block
    ends without error and is deleted otherwise, so a failure leaves ``target`` as it was."""
    built = temp_dir_beside(target)
    try:
        yield built
        replace_dir(built, target)
    finally:
        if built.exists():
            shutil.rmtree(built, ignore_errors=True)
