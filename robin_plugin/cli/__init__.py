"""The ``robin`` command line: the parser, logging to the terminal, and dispatch to one module per command.

``robin models`` (:mod:`.models`), ``train`` (:mod:`.train`), ``eval`` (:mod:`.eval`),
``leaderboard`` (:mod:`.leaderboard`), ``export`` (:mod:`.export`) and ``inspect``
(:mod:`.inspect`); :mod:`._common` holds the options they share. This package is the top floor:
it parses arguments, calls the library and prints; the library below it logs and never prints.
``python -m robin_plugin.cli`` runs :func:`main` too (``__main__.py``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys

from ..errors import RobinError
from .eval import add_eval_parser
from .export import add_export_parser
from .inspect import add_inspect_parser
from .leaderboard import add_leaderboard_parser
from .models import add_models_parser
from .train import add_train_parser

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    """The ``robin`` parser: one sub-command per module of this package, each setting ``func``."""
    parser = argparse.ArgumentParser(prog="robin", description="Robust binary subnetworks for timm and torchattacks.")
    sub = parser.add_subparsers(dest="command", required=True)
    add_models_parser(sub)
    add_train_parser(sub)
    add_eval_parser(sub)
    add_leaderboard_parser(sub)
    add_export_parser(sub)
    add_inspect_parser(sub)
    return parser


class _StdHandler(logging.StreamHandler):
    """A stream handler that writes to the current ``sys.stdout`` / ``sys.stderr`` (looked up per record)."""

    def __init__(self, name: str):
        super().__init__()
        self._name = name

    @property
    def stream(self):  # type: ignore[override]
        return getattr(sys, self._name)

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the lookup above wins
        pass


def _setup_logging() -> None:
    """The package's log lines (progress, metrics) on stdout with the command's report, warnings on stderr.

    So ``robin eval ... > log.txt`` keeps the progress lines in the file. Only the
    ``robin_plugin`` logger is touched; calling it again changes nothing.
    """
    logger = logging.getLogger("robin_plugin")
    if any(getattr(h, "_robin_cli", False) for h in logger.handlers):
        return
    out, err = _StdHandler("stdout"), _StdHandler("stderr")
    out.addFilter(lambda record: record.levelno < logging.WARNING)
    err.setLevel(logging.WARNING)
    for h in (out, err):
        h.setFormatter(logging.Formatter("%(message)s"))
        h._robin_cli = True  # type: ignore[attr-defined]
        logger.addHandler(h)
    logger.setLevel(logging.INFO)


def main(argv: list[str] | None = None) -> int:
    """Run the ``robin`` command line; returns the exit status.

    A :class:`RobinError` prints ``robin <command>: error: <message>`` and returns 2. When the
    reader of stdout goes away (``robin train --list-presets | head``), the command stops
    quietly with status 141 (128 + SIGPIPE, as a tool killed by SIGPIPE), without a traceback.
    """
    args = build_parser().parse_args(argv)
    _setup_logging()
    try:
        code = args.func(args)
        sys.stdout.flush()  # inside the try: a closed pipe fails here, not in the interpreter's exit
        return code
    except RobinError as e:
        print(f"robin {args.command}: error: {e}", file=sys.stderr)
        return 2
    except BrokenPipeError:
        _discard_stdout()
        return 141


def _discard_stdout() -> None:
    """Send what is left in stdout's buffer to /dev/null, so that Python's exit does not report the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):  # stdout is not a real file (captured by a test)
        pass
