"""The ``robin`` command line: ``robin models`` (and the commands later issues add)."""
from __future__ import annotations

import argparse
import logging
import os
import sys

import timm

from .errors import RobinError
from .eval.cli import add_eval_parser, add_leaderboard_parser
from .export.cli import add_export_parser, add_inspect_parser
from .models.robustbench_names import robustbench_names
from .summary import format_storage, storage_bytes, summarize
from .training.cli import add_train_parser

__all__ = ["main"]


def _cmd_models(args: argparse.Namespace) -> int:
    aliases = set(robustbench_names())  # the same architectures under RobustBench's naming
    names = [n for n in timm.list_models(args.pattern) if n.startswith("robin_") and n not in aliases]
    if not names:
        raise RobinError(f"no registered model matches {args.pattern!r}; try 'robin_*'")
    for name in names:
        kwargs = {} if name.endswith("_dense") else dict(keep_ratio=args.keep_ratio, p=args.p)
        model = timm.create_model(name, **kwargs)
        if name.endswith("_dense"):
            n = sum(t.numel() for t in model.parameters())
            print(f"== {name} (dense full-precision twin) ==")
            print(f"trainable parameters {n:,}; storage: {format_storage(storage_bytes(model))}\n")
            continue
        s = summarize(model)
        print(f"== {name} (keep_ratio={args.keep_ratio}, p={args.p}) ==")
        if args.layers:
            print(s)
        else:
            print(f"weights {s.total:,}, kept {s.kept:,} ({s.keep_ratio:.4f}); storage: {format_storage(storage_bytes(model))}")
        print()
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robin", description="Robust binary subnetworks for timm and torchattacks.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("models", help="build every registered robin model and print its per-layer summary and storage")
    p.add_argument("--pattern", default="robin_*", help="timm model name pattern (default: robin_*)")
    p.add_argument("--keep-ratio", type=float, default=0.01, help="fraction of weights KEPT (default 0.01)")
    p.add_argument("--p", type=float, default=0.1, help="adaptive keep-ratio exponent in [0, 1] (default 0.1)")
    p.add_argument("--no-layers", dest="layers", action="store_false", help="totals only")
    p.set_defaults(func=_cmd_models)
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


if __name__ == "__main__":
    sys.exit(main())
