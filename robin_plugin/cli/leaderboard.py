"""``robin leaderboard``: where a result would rank on the RobustBench snapshot, as a table and a plot.

:func:`add_leaderboard_parser` adds the command to the ``robin`` parser. The snapshot, the
comparability checks and the ranking are :mod:`robin_plugin.eval.leaderboard`; this module
presents them: :func:`format_ranking` (the table) and :func:`plot_size_vs_accuracy` (the PNG).
"""
from __future__ import annotations

import argparse
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..eval.leaderboard import (CITATION, LEADERBOARDS, Ranking, comparability, leaderboard_for, load_leaderboard,
                                model_bytes, rank)
from ..eval.report import load_result
from ..io import atomic_write
from ._common import keep_matplotlib_out_of_home

__all__ = ["add_leaderboard_parser", "format_ranking", "plot_size_vs_accuracy", "run_leaderboard"]


def add_leaderboard_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    """Add ``robin leaderboard`` to ``subparsers``."""
    p = subparsers.add_parser(
        "leaderboard", help="rank a result on the RobustBench leaderboard snapshot and plot accuracy vs storage",
        description="Where a result (robin eval JSON) would rank on RobustBench's Linf leaderboard, its neighbours, "
                    "and a PNG of AutoAttack accuracy against model storage (MB, log scale).")
    p.add_argument("result", help="result JSON written by robin eval")
    p.add_argument("--board", choices=sorted(LEADERBOARDS), default=None, help="leaderboard (default: the result's dataset)")
    p.add_argument("--neighbours", type=int, default=3, help="entries shown above and below (default 3)")
    p.add_argument("--plot", default=None, help="PNG path (default: <result>_leaderboard.png)")
    p.add_argument("--no-plot", dest="make_plot", action="store_false")
    p.add_argument("--size-key", default="sign_mask_bytes",
                   choices=("fp32_bytes", "sign_mask_bytes", "seeded_mask_bytes", "entropy_bound_bytes"),
                   help="which storage figure places our model (default sign_mask_bytes: +-1 signs and a bit mask)")
    p.set_defaults(func=run_leaderboard)
    return p


def run_leaderboard(args: argparse.Namespace) -> int:
    """Run ``robin leaderboard``; returns the exit code."""
    result = load_result(args.result)
    if args.neighbours < 0:
        raise ConfigError(f"--neighbours must be >= 0, got {args.neighbours}")
    board_name = args.board or leaderboard_for(str(result.get("dataset", "")))
    board = load_leaderboard(board_name)
    notes = comparability(result, board, args.result)  # refuses another threat model or another board's dataset
    r = rank(result, board, neighbours=args.neighbours, size_key=args.size_key, path=args.result)
    print(format_ranking(result, r, board, size_key=args.size_key, notes=notes))
    if args.make_plot:
        keep_matplotlib_out_of_home()  # before plot_size_vs_accuracy imports matplotlib
        plot = Path(args.plot) if args.plot else Path(args.result).with_name(Path(args.result).stem + "_leaderboard.png")
        plot_size_vs_accuracy(result, board, plot, size_key=args.size_key, notes=notes)
        print(f"wrote {plot}")
    return 0


def format_ranking(result: Mapping[str, Any], r: Ranking, board: Mapping[str, Any], size_key: str = "sign_mask_bytes",
                   notes: Sequence[str] | None = None) -> str:
    """A readable table: rank, neighbours with their accuracies and fp32 sizes, and ours.

    ``notes``: what :func:`comparability` found (computed here when not given).
    """
    ours_b = model_bytes(result, size_key)
    lines = [f"RobustBench {board['dataset']} {board['threat_model']} eps {board['eps']} (snapshot {board['snapshot_date']})",
             f"{result['name']} would rank {r.rank} of {r.total} with AutoAttack {float(result['autoattack_acc']):.2f}% "
             f"(clean {float(result['clean_acc']):.2f}%)"]
    lines += list(notes if notes is not None else comparability(result, board))
    if r.duplicate is not None:
        lines.append(f"NOTE: this result is the board's entry {r.duplicate}: counted once")
    lines.append(f"{'rank':>4}  {'AA %':>6}  {'clean %':>7}  {'size MB':>9}  {'architecture':<28} model")

    def row(rk: int | str, e: Mapping[str, Any], mb: str) -> str:
        return f"{rk:>4}  {e['autoattack_acc']:>6.2f}  {e['clean_acc']:>7.2f}  {mb:>9}  {e['architecture'][:28]:<28} {e['id']}"

    start = r.rank - len(r.above)
    for i, e in enumerate(r.above):
        lines.append(row(start + i, e, _mb(e)))
    ours = {"autoattack_acc": float(result["autoattack_acc"]), "clean_acc": float(result["clean_acc"]),
            "architecture": str(result["architecture"]), "id": f"<< {result['name']} >>"}
    lines.append(row(r.rank, ours, f"{ours_b / 1e6:.3f}" if ours_b else "?"))
    for i, e in enumerate(r.below):
        lines.append(row(r.rank + 1 + i, e, _mb(e)))
    if ours_b:
        lines.append(f"entries above ours that are also smaller (fp32 size <= {ours_b / 1e6:.3f} MB): {len(r.smaller_and_better)}")
    lines.append(f"Data: {CITATION}")
    return "\n".join(lines)


def _mb(e: Mapping[str, Any]) -> str:
    return f"{4 * e['params'] / 1e6:.1f}" if e.get("params") else "?"


def _size_label(result: Mapping[str, Any], size_key: str) -> str:
    sb = result.get("storage_bytes") or {}
    if sb.get(size_key):
        return size_key.replace("_bytes", "")
    return "fp32" if sb.get("fp32_bytes") or model_bytes(result, size_key) else "size unknown"


def plot_size_vs_accuracy(result: Mapping[str, Any], board: Mapping[str, Any], path: str | os.PathLike, *,
                          size_key: str = "sign_mask_bytes", notes: Sequence[str] | None = None) -> Path:
    """PNG: AutoAttack accuracy against model storage (MB, log scale).

    Leaderboard entries sit at their architecture's parameter count x 4 bytes (fp32); entries of
    unknown size are counted in the legend. The result sits at its real size,
    ``storage_bytes[size_key]``, else at its architecture's fp32 size, else it is drawn as a
    dashed line at its accuracy ("size unknown"). :func:`comparability` runs first: a result of
    another dataset, threat model or attack set is refused, not drawn. Written atomically.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    notes = list(notes if notes is not None else comparability(result, board))
    ours_b = model_bytes(result, size_key)
    pts = [(4 * e["params"] / 1e6, e["autoattack_acc"], e) for e in board["entries"] if e.get("params")]
    unknown = len(board["entries"]) - len(pts)
    fig = Figure(figsize=(7.5, 5.0), dpi=120)
    ax = fig.subplots()
    extra = [p for p in pts if p[2]["additional_data"]]
    plain = [p for p in pts if not p[2]["additional_data"]]
    ax.scatter([p[0] for p in plain], [p[1] for p in plain], s=18, c="tab:blue", alpha=0.7, label="RobustBench (fp32)")
    ax.scatter([p[0] for p in extra], [p[1] for p in extra], s=18, c="tab:cyan", alpha=0.7, marker="s",
               label="RobustBench, extra data (fp32)")
    for mb, acc, e in pts:
        if "compress" in (e.get("footnote") or "").lower():
            ax.annotate(e["id"], (mb, acc), fontsize=7, xytext=(3, 3), textcoords="offset points")
    if unknown:
        ax.scatter([], [], s=0, label=f"{unknown} entries of unknown size (not drawn)")
    label = f"{str(result['name'])[:40]} ({_size_label(result, size_key)})"
    acc = float(result["autoattack_acc"])
    if ours_b:
        ax.scatter([ours_b / 1e6], [acc], s=110, marker="*", zorder=5, label=label,
                   facecolors="tab:red", edgecolors="tab:red", linewidths=1.5)
    else:
        ax.axhline(acc, color="tab:red", linestyle="--", linewidth=1, label=label)
    ax.set_xscale("log")
    ax.set_xlabel("model storage (MB, log scale)")
    ax.set_ylabel("AutoAttack robust accuracy (%)")
    ax.set_title(f"RobustBench {board['dataset']} {board['threat_model']} eps {board['eps']} (snapshot {board['snapshot_date']})",
                 fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.text(0.01, 0.01, "Data: RobustBench (Croce et al., NeurIPS 2021 D&B)", fontsize=6, alpha=0.7)
    fig.tight_layout()
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
