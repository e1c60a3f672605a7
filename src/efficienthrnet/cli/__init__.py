"""The `efficienthrnet` command. Each subcommand is a thin wrapper over a library call."""

# The package holds the parser and `main`; each command group is a module of its own:
# options (shared argument types), architecture (config, profile, table2), data (make-synthetic),
# training (train, classify), inference (evaluate, predict), sweeps (sweep, plot, compare),
# interchange (convert, export) and errors (exit codes, messages). Their names are re-exported here.

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence

from .architecture import (  # noqa: F401  (re-exported for existing callers)
    _add_config,
    _add_profile,
    _add_table2,
    _fmt,
    _run_config,
    _run_profile,
    _run_table2,
)
from .data import _add_make_synthetic, _run_make_synthetic  # noqa: F401
from .errors import (  # noqa: F401
    EXIT_CODES,
    EXIT_INTERNAL_ERROR,
    EXIT_INTERRUPTED,
    EXIT_USER_ERROR,
    EXTRAS,
    OS_HINTS,
    USER_ERRORS,
    _missing_module,
    _report,
    describe_error,
    run_command,
)
from .inference import (  # noqa: F401
    _add_evaluate,
    _add_predict,
    _add_predict_options,
    _predictor,
    _read_image,
    _run_evaluate,
    _run_predict,
)
from .interchange import _add_convert, _add_export, _batch, _run_convert, _run_export  # noqa: F401
from .options import _add_keypoints_option, _keypoints, _phi_list  # noqa: F401
from .sweeps import _add_compare, _add_plot, _add_sweep, _run_compare, _run_plot, _run_sweep  # noqa: F401
from .training import _add_classify, _add_train, _run_classify, _run_train  # noqa: F401

COMMANDS: list[Callable] = [
    _add_config, _add_profile, _add_make_synthetic, _add_train, _add_evaluate, _add_predict,
    _add_sweep, _add_plot, _add_compare, _add_convert, _add_classify, _add_table2, _add_export,
]


DEBUG_HELP = "on an error, show the Python traceback too"


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = argparse.ArgumentParser(prog="efficienthrnet", description=__doc__, epilog=EXIT_CODES,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    sub = parser.add_subparsers(dest="command", required=True)
    runners = {}
    for add in COMMANDS:
        before = set(sub.choices)
        runner = add(sub)
        (name,) = set(sub.choices) - before
        # Also after the command name; SUPPRESS keeps a --debug given before it.
        sub.choices[name].add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=DEBUG_HELP)
        runners[name] = runner
    return parser, runners


def main(argv: Sequence[str] | None = None) -> int:
    parser, runners = build_parser()
    args = parser.parse_args(argv)
    return run_command(args.command, runners[args.command], args, debug=args.debug)
