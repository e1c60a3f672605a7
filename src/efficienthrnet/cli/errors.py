"""How the command fails: exit codes, user errors versus internal ones, and one-line messages."""

from __future__ import annotations

import errno
import sys
import traceback
from collections.abc import Callable

EXIT_CODES = """exit codes: 0 done; 1 an internal error (rerun with --debug and report it), or a sweep
with failed trials; 2 a bad input (the message names it and says what to do); 130 interrupted."""

EXIT_USER_ERROR, EXIT_INTERNAL_ERROR, EXIT_INTERRUPTED = 2, 1, 130
# Errors in what the user gave (arguments, files, folders, the installation), as opposed to bugs.
USER_ERRORS = (ValueError, OSError, ImportError)
# Optional extras (pyproject.toml) by the module that needs them.
EXTRAS = {"torch": "torch", "ray": "ray", "tensorflow_datasets": "tfds", "tensorflow": "tfds-prepare",
          "tensorboardX": "tensorboard"}
OS_HINTS = {
    errno.EACCES: "check its permissions or choose another location",
    errno.EPERM: "check its permissions or choose another location",
    errno.ENOENT: "check the path",
    errno.EISDIR: "it is a folder: give a file path",
    errno.ENOTDIR: "a part of the path is a file, not a folder",
    errno.EEXIST: "it already exists: choose another path or delete it",
    errno.ENOSPC: "the disk is full: free some space",
    errno.EROFS: "the file system is read-only: choose another location",
}


def run_command(command: str, runner: Callable, args, debug: bool = False) -> int:
    """Run one subcommand; any error becomes one line on stderr and an exit code (EXIT_CODES)."""
    try:
        return runner(args) or 0
    except KeyboardInterrupt:
        return _report(command, "interrupted", EXIT_INTERRUPTED, debug)
    except USER_ERRORS as err:
        return _report(command, f"error: {describe_error(err)}", EXIT_USER_ERROR, debug)
    except Exception as err:
        message = (f"internal error: {type(err).__name__}: {err}; "
                   f"rerun with --debug to see the traceback, and please report it")
        return _report(command, message, EXIT_INTERNAL_ERROR, debug)


def _report(command: str, message: str, code: int, debug: bool) -> int:
    if debug:
        traceback.print_exc()
    line = " ".join(message.split())  # one line, whatever the exception's text holds
    if len(line) > 2000:
        line = line[:1997] + "..."
    print(f"efficienthrnet {command}: {line}", file=sys.stderr)
    return code


def describe_error(err: BaseException) -> str:
    """The user-facing text of an error: our own messages as they are; a missing module names its
    extra; a bare OS error names the file and says what to do."""
    if isinstance(err, ImportError):
        return _missing_module(err)
    if isinstance(err, OSError) and err.strerror and err.filename is not None:
        hint = OS_HINTS.get(err.errno, "")
        return f"{err.filename}: {err.strerror.lower()}" + (f"; {hint}" if hint else "")
    return str(err) or type(err).__name__


def _missing_module(err: ImportError) -> str:
    text = str(err)
    if "pip install" in text:  # our own message already names the extra
        return text
    top = (err.name or "").split(".")[0]
    if top in EXTRAS:
        return f"this needs {top}, which is not installed: pip install 'efficienthrnet[{EXTRAS[top]}]'"
    return f"{text}: the installation is incomplete; reinstall it (pip install --force-reinstall efficienthrnet)"
