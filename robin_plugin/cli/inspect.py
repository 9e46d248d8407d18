"""``robin inspect``: per-layer table of a model, mask-structure and training-curve plots.

:func:`add_inspect_parser` adds the command to the ``robin`` parser; its ``func`` prints the
table and the plots written.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ._common import add_source_args, keep_matplotlib_out_of_home, load_model_for_cli

__all__ = ["add_inspect_parser"]


def add_inspect_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``robin inspect`` to ``subparsers``; returns its parser."""
    p = subparsers.add_parser(
        "inspect",
        help="per-layer keep ratios, kept counts, pruned channels and bits; mask-structure and training-curve plots",
    )
    add_source_args(p, required=False)
    p.add_argument("--metrics", type=Path, help="metric log CSV (column 'epoch' plus e.g. train/loss, val/robust_acc)")
    p.add_argument("--out", type=Path, help="folder for the PNG plots (none are drawn without it)")
    p.add_argument("--no-plots", dest="plots", action="store_false", help="table only, no mask plots")
    p.set_defaults(func=_cmd_inspect)
    return p


def _cmd_inspect(args: argparse.Namespace) -> int:
    keep_matplotlib_out_of_home()  # before matplotlib is imported
    from ..viz import format_table, inspect_model, layer_table  # here: matplotlib takes a second to import

    model = load_model_for_cli(args)
    if model is None and args.metrics is None:
        raise ConfigError("nothing to inspect: pass a model (--run, --compact, or --model with --checkpoint) and/or --metrics")
    if args.run is not None and args.metrics is None and (args.run / "metrics.csv").is_file():
        args.metrics = args.run / "metrics.csv"  # the run's training curves
    if model is not None:
        print(format_table(layer_table(model)))
        if args.compact is not None:
            print(f"compact file: {args.compact.stat().st_size:,} bytes")
    if args.out is not None:
        for path in inspect_model(model if args.plots else None, args.out, metrics=args.metrics):
            print(f"wrote {path}")
    return 0
