"""``robin models``: build every registered robin model and print its summary and storage."""
from __future__ import annotations

import argparse

import timm

from ..errors import RobinError
from ..models.robustbench_names import robustbench_names
from ..summary import format_storage, storage_bytes, summarize

__all__ = ["add_models_parser"]


def add_models_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``robin models`` to ``subparsers``; returns its parser."""
    p = subparsers.add_parser("models", help="build every registered robin model and print its per-layer summary and storage")
    p.add_argument("--pattern", default="robin_*", help="timm model name pattern (default: robin_*)")
    p.add_argument("--keep-ratio", type=float, default=0.01, help="fraction of weights KEPT (default 0.01)")
    p.add_argument("--p", type=float, default=0.1, help="adaptive keep-ratio exponent in [0, 1] (default 0.1)")
    p.add_argument("--no-layers", dest="layers", action="store_false", help="totals only")
    p.set_defaults(func=_cmd_models)
    return p


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
