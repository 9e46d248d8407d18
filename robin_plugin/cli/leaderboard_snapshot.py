"""Rebuild the RobustBench leaderboard snapshot shipped with robin_plugin (a maintainer's command).

    python -m robin_plugin.cli.leaderboard_snapshot --rebuild ../shared/data/robustbench-model-info [--out DIR] [--date YYYY-MM-DD]

:func:`~robin_plugin.eval.leaderboard.build_snapshot` does the work; this prints the files
written. It is no ``robin`` sub-command (the package ``__init__`` does not import it), so that
``python -m`` runs it without importing it twice.
"""
from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence

from ..errors import ConfigError, InputError
from ..eval.leaderboard import build_snapshot

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``--rebuild SRC [--out DIR] [--date YYYY-MM-DD]``, rebuild, print each board's file; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m robin_plugin.cli.leaderboard_snapshot",
                                     description="Rebuild the RobustBench leaderboard snapshot shipped with robin_plugin.")
    parser.add_argument("--rebuild", metavar="SRC", required=True, help="folder of RobustBench model_info/<dataset>/<threat>/*.json")
    parser.add_argument("--out", default=None, help="output folder (default: the package's leaderboard_data)")
    parser.add_argument("--date", default=None, help="snapshot date to record (default: today)")
    args = parser.parse_args(argv)
    if args.date is not None and not re.fullmatch(r"\d{4}-\d{2}-\d{2}", args.date):
        parser.error(f"--date must be YYYY-MM-DD, got {args.date!r}")
    try:
        for board, path in build_snapshot(args.rebuild, args.out, date=args.date).items():
            print(f"{board}: {path}")
    except (InputError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
