"""``robin inspect``: per-layer mask statistics, mask-structure plots and training curves.

A viewer, not an export: it reads a model (or a metric log) and draws; nothing here writes a
model file. (The name ``viz`` rather than ``inspect`` keeps it from shadowing the standard
library's ``inspect`` when a script inside the package folder is run directly.)

Tables are plain data (:func:`layer_table`) plus a text rendering (:func:`format_table`). Plots
are PNG files drawn with matplotlib's object API on the Agg canvas (no global backend switch,
no display needed) and written atomically:

- :func:`plot_keep_ratios`: keep ratio and kept count per layer.
- :func:`plot_kernel_masks`: per layer, the fraction of each ``(out, in)`` kernel's weights kept
  (the structured patterns of the paper: whole kernels kept or dropped together).
- :func:`plot_channel_masks`: per layer, the fraction kept per output and per input channel.
- :func:`plot_training_curves`: the metric log ``metrics.csv`` (column ``epoch`` and
  namespaced columns such as ``train/loss``, ``val/robust_acc``, ``prune/keep_ratio``, ``lr``).
"""
from __future__ import annotations

import csv
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .errors import RobinError
from .formats.codec import encode_mask, mask_entropy_bits
from .io import atomic_write
from .pruning import masked_layers

__all__ = [
    "MetricsFormatError",
    "format_table",
    "inspect_model",
    "layer_table",
    "plot_channel_masks",
    "plot_keep_ratios",
    "plot_kernel_masks",
    "plot_training_curves",
    "read_metrics",
]


class MetricsFormatError(RobinError, ValueError):
    """A metric log is missing, empty, lacks the ``epoch`` column, or has no numeric columns."""


def layer_table(model: nn.Module) -> list[dict[str, Any]]:
    """One row per masked layer of ``model``.

    Keys: ``name``, ``shape``, ``numel``, ``keep_ratio``, ``kept``, ``channels`` (output
    channels), ``pruned_channels`` (output channels whose weights are all pruned), ``coding``
    and ``mask_bits`` (the compact export's coding of the mask and its size in bits),
    ``entropy_bits`` (n * H(k), the information bound).
    """
    rows = []
    for name, m in masked_layers(model):
        mask = m.mask().detach().cpu()
        flat = mask.reshape(-1).bool().numpy()
        coding, _, data = encode_mask(flat)
        per_out = mask.reshape(mask.shape[0], -1)
        rows.append(dict(
            name=name, shape=tuple(mask.shape), numel=mask.numel(), keep_ratio=m.keep_ratio, kept=int(flat.sum()),
            channels=mask.shape[0], pruned_channels=int((per_out == 0).all(dim=1).sum()),
            coding=coding, mask_bits=8 * int(data.size), entropy_bits=mask_entropy_bits(flat.size, int(flat.sum())),
        ))
    return rows


def format_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render :func:`layer_table` rows with a totals line (bits shown as bytes)."""
    w = max([len("layer")] + [len(r["name"]) for r in rows])
    head = f"{'layer':<{w}}  {'shape':<16} {'weights':>11} {'keep_ratio':>10} {'kept':>9} {'pruned ch':>11} {'coding':>10} {'mask B':>9} {'bound B':>9}"
    lines = [head]
    for r in rows:
        shape = "x".join(str(s) for s in r["shape"])
        lines.append(
            f"{r['name']:<{w}}  {shape:<16} {r['numel']:>11,} {r['keep_ratio']:>10.4f} {r['kept']:>9,} "
            f"{str(r['pruned_channels']) + '/' + str(r['channels']):>11} {r['coding']:>10} "
            f"{r['mask_bits'] // 8:>9,} {math.ceil(r['entropy_bits'] / 8):>9,}"
        )
    n, kept = sum(r["numel"] for r in rows), sum(r["kept"] for r in rows)
    pc, ch = sum(r["pruned_channels"] for r in rows), sum(r["channels"] for r in rows)
    lines.append(
        f"{'total':<{w}}  {'':<16} {n:>11,} {kept / max(n, 1):>10.4f} {kept:>9,} {str(pc) + '/' + str(ch):>11} "
        f"{'':>10} {sum(r['mask_bits'] for r in rows) // 8:>9,} {math.ceil(sum(r['entropy_bits'] for r in rows) / 8):>9,}"
    )
    return "\n".join(lines)


def _save(fig: Figure, path: str | os.PathLike, overwrite: bool) -> Path:
    FigureCanvasAgg(fig)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100), overwrite=overwrite)


def plot_keep_ratios(model: nn.Module, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Bar chart of each masked layer's keep ratio (log scale) and kept count; returns ``path``."""
    rows = layer_table(model)
    fig = Figure(figsize=(max(6.0, 0.25 * len(rows) + 2), 6), layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(rows))
    ax1.bar(x, [r["keep_ratio"] for r in rows], color="tab:blue")
    ax1.set_yscale("log")
    ax1.set_ylabel("keep ratio")
    ax1.set_title("per-layer keep ratio (fraction of weights kept)")
    ax2.bar(x, [r["kept"] for r in rows], color="tab:orange")
    ax2.set_yscale("log")
    ax2.set_ylabel("weights kept")
    ax2.set_xticks(x, [r["name"] for r in rows], rotation=90, fontsize=6)
    return _save(fig, path, overwrite)


def _grid(n: int) -> tuple[int, int]:
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def plot_kernel_masks(model: nn.Module, path: str | os.PathLike, *, overwrite: bool = True, max_layers: int = 64) -> Path:
    """Heat maps of the fraction of weights kept in each ``(out, in)`` kernel, one per layer.

    Linear layers show their mask directly (one weight per kernel). Returns ``path``.
    """
    layers = masked_layers(model)[:max_layers]
    rows, cols = _grid(len(layers))
    # a fixed layout: constrained layout over dozens of panels costs seconds
    fig = Figure(figsize=(2.4 * cols + 1.0, 2.3 * rows + 0.6))
    fig.subplots_adjust(left=0.05, right=0.88, bottom=0.05, top=0.93, wspace=0.45, hspace=0.6)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).reshape(-1)
    for ax, (name, m) in zip(axes, layers):
        mask = m.mask().detach().cpu().float()
        frac = mask.reshape(mask.shape[0], mask.shape[1], -1).mean(dim=2).numpy()  # (out, in)
        im = ax.imshow(frac, aspect="auto", interpolation="nearest", cmap="viridis", vmin=0.0, vmax=1.0)
        ax.set_title(name, fontsize=7)
        ax.set_xlabel("in", fontsize=6)
        ax.set_ylabel("out", fontsize=6)
        ax.tick_params(labelsize=5)
    for ax in axes[len(layers):]:
        ax.axis("off")
    if layers:
        fig.colorbar(im, cax=fig.add_axes((0.91, 0.2, 0.015, 0.6)), label="fraction of kernel kept")
    fig.suptitle("mask structure per kernel")
    return _save(fig, path, overwrite)


def plot_channel_masks(model: nn.Module, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Fraction kept per output channel and per input channel, layers as rows; returns ``path``.

    Rows are padded with blanks to the widest layer; a channel with 0 kept is pruned entirely.
    """
    layers = masked_layers(model)
    outs, ins = [], []
    for _, m in layers:
        mask = m.mask().detach().cpu().float()
        outs.append(mask.reshape(mask.shape[0], -1).mean(dim=1).numpy())
        ins.append(mask.transpose(0, 1).reshape(mask.shape[1], -1).mean(dim=1).numpy())
    fig = Figure(figsize=(12, max(3.0, 0.2 * len(layers) + 1.5)), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, data, title in ((axes[0], outs, "output channels"), (axes[1], ins, "input channels")):
        width = max((len(d) for d in data), default=1)
        grid = np.full((max(len(data), 1), width), np.nan)
        for i, d in enumerate(data):
            grid[i, : len(d)] = d
        im = ax.imshow(np.ma.masked_invalid(grid), aspect="auto", interpolation="nearest", cmap="magma", vmin=0.0)
        ax.set_title(f"fraction kept per {title[:-1]}")
        ax.set_xlabel("channel")
        fig.colorbar(im, ax=ax, shrink=0.8)
    axes[0].set_yticks(np.arange(len(layers)), [n for n, _ in layers], fontsize=6)
    return _save(fig, path, overwrite)


def read_metrics(path: str | os.PathLike) -> dict[str, list[tuple[float, float]]]:
    """Read a metric log CSV into ``{column: [(epoch, value), ...]}`` (numeric cells only).

    Raises:
        MetricsFormatError: missing file, no header, no ``epoch`` column, no numeric column.
    """
    path = Path(path)
    if not path.is_file():
        raise MetricsFormatError(f"no metric log at {path}")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            if "epoch" not in fields:
                raise MetricsFormatError(f"{path} has no 'epoch' column (columns: {fields[:8]})")
            series: dict[str, list[tuple[float, float]]] = {k: [] for k in fields if k != "epoch"}
            for row in reader:
                try:
                    epoch = float(row["epoch"])
                except (TypeError, ValueError):
                    continue
                for k in series:
                    try:
                        v = float(row.get(k) or "nan")
                    except ValueError:
                        continue
                    if math.isfinite(v):
                        series[k].append((epoch, v))
    except (UnicodeDecodeError, csv.Error) as e:
        raise MetricsFormatError(f"{path} is not a readable CSV file ({e})") from e
    series = {k: v for k, v in series.items() if v}
    if not series:
        raise MetricsFormatError(f"{path} has no numeric metric columns besides 'epoch'")
    return series


_PANELS = (
    ("loss", lambda k: k.endswith("loss")),
    ("accuracy", lambda k: k.endswith("_acc") or k.endswith("/acc")),
    ("keep ratio", lambda k: k.startswith("prune/")),
    ("learning rate", lambda k: k == "lr" or k.endswith("/lr")),
)


def plot_training_curves(metrics: str | os.PathLike, path: str | os.PathLike, *, overwrite: bool = True) -> Path:
    """Training curves from a metric log CSV: one panel per kind of metric present.

    Panels: loss (``*loss``), accuracy (``*_acc``: clean and robust, train and val), keep ratio
    (``prune/*``), learning rate (``lr``), and one panel with any other numeric column.
    Returns ``path``.
    """
    series = read_metrics(metrics)
    panels: list[tuple[str, list[str]]] = []
    used: set[str] = set()
    for title, pred in _PANELS:
        keys = [k for k in series if pred(k) and k not in used]
        if keys:
            panels.append((title, keys))
            used.update(keys)
    rest = [k for k in series if k not in used]
    if rest:
        panels.append(("other", rest))
    fig = Figure(figsize=(6 * min(len(panels), 2), 4 * math.ceil(len(panels) / 2)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(math.ceil(len(panels) / 2), min(len(panels), 2), squeeze=False)).reshape(-1)
    for ax, (title, keys) in zip(axes, panels):
        for k in keys:
            xs, ys = zip(*series[k])
            ax.plot(xs, ys, marker="o" if len(xs) < 30 else None, markersize=3, label=k)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        if title == "learning rate" or title == "keep ratio":
            positive = all(v > 0 for k in keys for _, v in series[k])
            if positive:
                ax.set_yscale("log")
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels):]:
        ax.axis("off")
    return _save(fig, path, overwrite)


def inspect_model(
    model: nn.Module | None,
    out_dir: str | os.PathLike,
    *,
    metrics: str | os.PathLike | None = None,
    overwrite: bool = True,
) -> list[Path]:
    """Write every plot for ``model`` (and the metric log, if given) into ``out_dir``.

    Files: ``keep_ratios.png``, ``kernel_masks.png``, ``channel_masks.png`` (with a model) and
    ``training_curves.png`` (with ``metrics``). Returns the paths written.
    """
    out = Path(out_dir)
    written = []
    if model is not None:
        with torch.no_grad():
            written.append(plot_keep_ratios(model, out / "keep_ratios.png", overwrite=overwrite))
            written.append(plot_kernel_masks(model, out / "kernel_masks.png", overwrite=overwrite))
            written.append(plot_channel_masks(model, out / "channel_masks.png", overwrite=overwrite))
    if metrics is not None:
        written.append(plot_training_curves(metrics, out / "training_curves.png", overwrite=overwrite))
    return written
