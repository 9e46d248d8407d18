"""The RobustBench leaderboard snapshot: rank a result, show its neighbours, plot accuracy vs size.

The snapshot in ``leaderboard_data/<dataset>_<threat>.json`` (CIFAR-10 Linf, CIFAR-100 Linf,
ImageNet Linf) is built by :func:`build_snapshot` from RobustBench's ``model_info`` files:

    python -m robin_plugin.eval.leaderboard --rebuild ../shared/data/robustbench-model-info

Please cite RobustBench when you use it: Croce, Andriushchenko, Sehwag, Debenedetti,
Flammarion, Chiang, Mittal, Hein, "RobustBench: a standardized adversarial robustness
benchmark", NeurIPS 2021 Datasets and Benchmarks Track.

Parameter counts (:data:`ARCH_PARAMS`) are counted, not taken from the papers: the CIFAR
WideResNet-d-k, ResNet-18 and ResNet-50 with robin's dense twins (``robin_wrn34_dense`` with
``depth``/``widen_factor``, ``robin_resnet18_dense``, ``robin_resnet50_dense``: the same layouts as
RobustBench's CIFAR models), the ImageNet architectures with timm's models of that name, at the
dataset's class count. Approximations, marked ``"approx"`` in the snapshot: PreActResNet-18 is
counted as ResNet-18 (they differ by a few hundred BatchNorm parameters), MeanSparse and
PSSiLU variants and "+ ConvStem" models as their base network, "A + B" ensembles as the sum of
their members. Unknown (``null``, left out of the plot): XCiT-M12 and XCiT-L12 (12-layer
variants that timm does not define), WideResNet-34-R, WideResNet-A4, RaWideResNet, ResNeSt-152,
the Neural-ODE and mixing-network models and the 5-layer CNN.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import logging
import math
import os
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError, InputError, UnknownNameError, closest
from ..formats.files import parse_json
from ..io import atomic_write, atomic_write_json, read_limited
from ..formats.result import MAX_RESULT_BYTES, parse_eps
from .report import AUTOATTACK, is_autoattack, robust_acc

__all__ = [
    "ARCH_PARAMS", "LEADERBOARDS", "CITATION", "Ranking", "arch_params", "build_snapshot", "comparability",
    "load_leaderboard", "plot_size_vs_accuracy", "rank", "format_ranking", "result_threat", "same_entry",
]

logger = logging.getLogger(__name__)

#: Leaderboards in the snapshot: name -> (RobustBench dataset folder, threat model, classes, eps).
LEADERBOARDS: dict[str, tuple[str, str, int, str]] = {
    "cifar10_linf": ("cifar10", "Linf", 10, "8/255"),
    "cifar100_linf": ("cifar100", "Linf", 100, "8/255"),
    "imagenet_linf": ("imagenet", "Linf", 1000, "4/255"),
}

CITATION = (
    "Croce, Andriushchenko, Sehwag, Debenedetti, Flammarion, Chiang, Mittal, Hein. RobustBench: a standardized "
    "adversarial robustness benchmark. NeurIPS 2021 Datasets and Benchmarks Track. https://robustbench.github.io"
)

#: Parameter counts by architecture and class count (see the module docstring for how).
ARCH_PARAMS: dict[str, dict[int, int]] = {
    "WideResNet-28-10": {10: 36479194, 100: 36536884},
    "WideResNet-34-10": {10: 46160474, 100: 46218164},
    "WideResNet-70-16": {10: 266796506, 100: 266888756},
    "WideResNet-34-20": {10: 184531674, 100: 184646964},
    "WideResNet-34-15": {10: 103819674, 100: 103906164},
    "WideResNet-40-8": {10: 35748314, 100: 35794484},
    "WideResNet-28-4": {10: 5849050, 100: 5872180},
    "WideResNet-106-16": {10: 415475162, 100: 415567412},
    "WideResNet-94-16": {10: 365915610, 100: 366007860},
    "WideResNet-82-8": {10: 79125466, 100: 79171636},
    "ResNet-18": {10: 11181642, 100: 11227812, 1000: 11689512},
    "ResNet-50": {10: 23528522, 100: 23712932, 1000: 25557032},
    "ResNet-20": {10: 272474},  # He et al. CIFAR ResNet (16-32-64 channels)
    "ResNet-32": {10: 466906},
    "ResNet-110": {10: 1730714},
    "WideResNet-50-2": {1000: 68883240},
    "WideResNet-101-2": {1000: 126886696},
    "ResNet-152": {10: 58164298, 100: 58348708, 1000: 60192808},
    "DenseNet-121": {10: 6964106, 100: 7056356, 1000: 7978856},
    "Swin-B": {1000: 87768224},
    "Swin-L": {1000: 196532476},
    "ViT-B": {1000: 86567656},
    "ViT-S": {1000: 22050664},
    "ConvNeXt-L": {1000: 197767336},
    "ConvNeXt-B": {1000: 88591464},
    "ConvNeXt-S": {1000: 50223688},
    "ConvNeXt-T": {1000: 28589128},
    "ConvNeXtV2-L": {1000: 197956840},
    "XCiT-S12": {10: 25872154, 100: 25906804, 1000: 26253304},
}

_APPROX_ALIASES = {"PreActResNet-18": "ResNet-18", "WideResNet-28-10-PSSiLU": "WideResNet-28-10"}


def arch_params(architecture: str, num_classes: int) -> tuple[int | None, str | None]:
    """Parameter count of a RobustBench architecture string.

    Returns:
        ``(count, "computed" | "approx")``, or ``(None, None)`` when unknown.
    """
    arch = architecture.strip()
    table = ARCH_PARAMS.get(arch)
    if table and num_classes in table:
        return table[num_classes], "computed"
    if arch in _APPROX_ALIASES:
        n, _ = arch_params(_APPROX_ALIASES[arch], num_classes)
        return (n, "approx") if n else (None, None)
    if arch.startswith("MeanSparse "):
        n, _ = arch_params(arch[len("MeanSparse "):], num_classes)
        return (n, "approx") if n else (None, None)
    if arch.endswith(" + ConvStem"):
        n, _ = arch_params(arch[: -len(" + ConvStem")], num_classes)
        return (n, "approx") if n else (None, None)
    if " + " in arch and "mixing" not in arch:
        parts = [arch_params(a, num_classes)[0] for a in arch.split(" + ")]
        if all(parts):
            return sum(parts), "approx"
    return None, None


def _percent(value: Any, where: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise InputError(f"{where}: expected a percent string like \"57.14\", got {value!r}") from None
    if not math.isfinite(v) or not 0.0 <= v <= 100.0:
        raise InputError(f"{where}: percent out of [0, 100]: {value!r}")
    return v


def build_snapshot(src: str | os.PathLike, out_dir: str | os.PathLike | None = None, *, date: str | None = None) -> dict[str, Path]:
    """Build the compact leaderboard files from RobustBench ``model_info`` folders.

    Args:
        src: folder holding ``cifar10/Linf``, ``cifar100/Linf`` and ``imagenet/Linf`` with one
            JSON per model (RobustBench's ``model_info`` layout).
        out_dir: where to write ``<leaderboard>.json`` (default: the package's ``leaderboard_data``).
        date: snapshot date written into the files (ISO, default: today).

    Returns:
        ``{leaderboard name: path written}``.
    """
    src = Path(src)
    out = Path(out_dir) if out_dir is not None else Path(__file__).with_name("leaderboard_data")
    date = date or _dt.date.today().isoformat()
    written = {}
    for board, (dataset, threat, classes, eps) in LEADERBOARDS.items():
        folder = src / dataset / threat
        if not folder.is_dir():
            raise InputError(f"{folder} does not exist: expected RobustBench model_info/{dataset}/{threat}/*.json under {src}")
        entries = []
        for f in sorted(folder.glob("*.json")):
            try:
                info = parse_json(read_limited(f, MAX_RESULT_BYTES))
            except (OSError, ValueError) as e:  # FileContentError is a ValueError
                raise InputError(f"{f} is not valid JSON: {e}") from None
            if not isinstance(info, dict) or any(k not in info for k in ("architecture", "clean_acc", "autoattack_acc")):
                raise InputError(f"{f} lacks architecture, clean_acc or autoattack_acc")
            n, how = arch_params(str(info["architecture"]), classes)
            entries.append({
                "id": f.stem,
                "dataset": dataset,
                "threat_model": threat,
                "name": info.get("name", f.stem),
                "architecture": info["architecture"],
                "clean_acc": _percent(info["clean_acc"], f"{f}: clean_acc"),
                "autoattack_acc": _percent(info["autoattack_acc"], f"{f}: autoattack_acc"),
                "additional_data": bool(info.get("additional_data", False)),
                "venue": info.get("venue", ""),
                "eps": info.get("eps", eps),
                "params": n,
                "params_source": how,
                "footnote": info.get("footnote") or "",
                "unreliable": bool(info.get("unreliable", False)),
            })
        entries.sort(key=lambda e: (-e["autoattack_acc"], -e["clean_acc"], e["id"]))
        doc = {
            "leaderboard": board, "dataset": dataset, "threat_model": threat, "eps": eps, "num_classes": classes,
            "snapshot_date": date,
            "source": "RobustBench model_info files (github.com/RobustBench/robustbench, model_info/"
                      f"{dataset}/{threat}); copy in ../shared/data/robustbench-model-info",
            "citation": CITATION,
            "params_note": "parameter counts of the architecture at fp32 (see robin_plugin.eval.leaderboard); "
                           "params_source 'approx' = base network or ensemble sum, null = unknown",
            "entries": entries,
        }
        written[board] = atomic_write_json(out / f"{board}.json", doc)
        os.chmod(written[board], 0o644)  # package data: readable by everyone (mkstemp made it 0600)
        logger.info("leaderboard/%s: %d entries (%d without a parameter count)", board, len(entries),
                    sum(e["params"] is None for e in entries))
    return written


def load_leaderboard(board: str) -> dict[str, Any]:
    """The shipped snapshot of one leaderboard (``cifar10_linf``, ``cifar100_linf``, ``imagenet_linf``)."""
    if board not in LEADERBOARDS:
        raise UnknownNameError(f"unknown leaderboard {board!r}{closest(board, LEADERBOARDS)}; valid: {', '.join(LEADERBOARDS)}")
    text = resources.files(__package__).joinpath("leaderboard_data", f"{board}.json").read_text(encoding="utf-8")
    doc = json.loads(text)
    for e in doc["entries"]:  # every row says its threat model (snapshots before 0.3 said it once, in the header)
        e.setdefault("dataset", doc["dataset"])
        e.setdefault("threat_model", doc["threat_model"])
        e.setdefault("eps", doc["eps"])
    return doc


def leaderboard_for(dataset: str) -> str:
    """The leaderboard of a result's dataset (``cifar10`` -> ``cifar10_linf``)."""
    board = f"{dataset}_linf"
    if board not in LEADERBOARDS:
        raise UnknownNameError(
            f"RobustBench has no Linf leaderboard for dataset {dataset!r}; valid datasets: "
            f"{', '.join(b[0] for b in LEADERBOARDS.values())}; a result is ranked only among entries of its own "
            f"dataset and threat model"
        )
    return board


_THREATS = {"linf": "Linf", "l2": "L2", "corruptions": "corruptions"}


def result_threat(result: Mapping[str, Any], path: str | os.PathLike | None = None) -> tuple[str, str]:
    """The threat model of a result and how it was found: ``("Linf", "field" | "folder" | "eps")``.

    robin results say it (``threat_model``); RobustBench's own model_info files do not, but sit in
    a ``<threat>/`` folder (``model_info/cifar10/L2/X.json``); failing both, an eps written as a
    fraction of 255 (``8/255``) is Linf and a plain number of at least 0.25 is L2 (RobustBench's L2
    radii are 0.5 on CIFAR and 3.0 on ImageNet).
    """
    given = result.get("threat_model")
    if isinstance(given, str) and given.lower() in _THREATS:
        return _THREATS[given.lower()], "field"
    if path is not None and Path(path).parent.name.lower() in _THREATS:
        return _THREATS[Path(path).parent.name.lower()], "folder"
    eps = str(result.get("eps", ""))
    if "/255" in eps:
        return "Linf", "eps"
    try:
        if float(eps) >= 0.25:
            return "L2", "eps"
    except ValueError:
        pass
    return "Linf", "eps"


def comparability(result: Mapping[str, Any], board: Mapping[str, Any], path: str | os.PathLike | None = None) -> list[str]:
    """Check that ``result`` may be ranked on ``board``; return notes on what still differs.

    A result is ranked only among entries of its own dataset and threat model (norm and eps)
    and only when its robust accuracy is under the full standard AutoAttack, as theirs is.

    Raises:
        InputError, saying why: the result's norm is not the board's (an L2 result on a Linf
            board); its dataset is not the board's (CIFAR-100 on CIFAR-10, Fashion-MNIST on
            any); its eps is not the board's (the paper's CIFAR-100 runs at 4/255 against
            RobustBench's 8/255); its attack set is not the full standard AutoAttack
            (``robin eval --attacks apgd-ce``).
    """
    threat, how = result_threat(result, path)
    if threat != board["threat_model"]:
        raise InputError(f"the result is a {threat} result (from its {how}), the {board['leaderboard']} board ranks "
                         f"{board['threat_model']} robustness: refusing to rank it there")
    dataset = str(result.get("dataset") or "")
    if dataset and dataset != board["dataset"]:
        own = f"{dataset}_{board['threat_model'].lower()}"
        hint = f": use --board {own}" if own in LEADERBOARDS else f" (RobustBench has no {dataset} leaderboard)"
        raise InputError(f"the result is on {dataset}, the {board['leaderboard']} board ranks {board['dataset']}: "
                         f"refusing to rank it among other data{hint}")
    if not same_eps(result.get("eps"), board["eps"]):
        raise InputError(f"the result is at {threat} eps {result.get('eps')}, the {board['leaderboard']} board ranks "
                         f"eps {board['eps']}: refusing to rank another threat model (evaluate at eps {board['eps']} "
                         f"to compare)")
    if not is_autoattack(result):
        label, _ = robust_acc(result)
        raise InputError(f"the result's robust accuracy is under {label}, not the full standard AutoAttack "
                         f"({AUTOATTACK}) that every {board['leaderboard']} entry is ranked by: refusing to rank it "
                         f"(run robin eval with the default --attacks)")
    notes = []
    n = result.get("n_points")
    if n is not None and int(n) < 10000 and board["dataset"] != "imagenet":
        notes.append(f"NOTE: evaluated on {n} points; RobustBench uses the full 10,000-point test set")
    return notes


def same_eps(a: Any, b: Any) -> bool:
    """Whether two eps (strings like ``"8/255"`` or numbers) are the same radius.

    Within 2%: RobustBench's older files write 8/255 as ``"0.031"``; 4/255 and 8/255 differ.
    """
    try:
        x, y = parse_eps(a), parse_eps(b)
    except InputError:
        return False
    return abs(x - y) <= 0.02 * max(x, y)


def same_entry(result: Mapping[str, Any], board: Mapping[str, Any], path: str | os.PathLike | None = None) -> dict[str, Any] | None:
    """The board entry that ``result`` is (a RobustBench file already in the snapshot), or None.

    The same entry: the same file name (RobustBench's model id, ``Sehwag2020Hydra.json``), or the
    same name with the same clean and AutoAttack accuracies.
    """
    stem = Path(path).stem if path is not None else None
    for e in board["entries"]:
        if stem is not None and e["id"] == stem:
            return e
        try:
            same_accs = (abs(float(result["clean_acc"]) - e["clean_acc"]) < 1e-9
                         and abs(float(result["autoattack_acc"]) - e["autoattack_acc"]) < 1e-9)
        except (KeyError, TypeError, ValueError):
            same_accs = False
        if same_accs and str(result.get("name")) == e["name"]:
            return e
    return None


@dataclass(frozen=True)
class Ranking:
    """Where a result would rank: 1-based ``rank`` among ``total`` entries (ours included, counted once)."""

    board: str
    rank: int
    total: int
    above: list[dict[str, Any]]  # the entries just above ours, best first
    below: list[dict[str, Any]]  # the entries just below ours
    smaller_and_better: list[dict[str, Any]]  # entries that beat us with fewer fp32 bytes than ours
    duplicate: str | None = None  # id of the board entry that is this result (left out of the ranking)


def rank(result: Mapping[str, Any], board: Mapping[str, Any], *, neighbours: int = 3, size_key: str = "sign_mask_bytes",
         path: str | os.PathLike | None = None) -> Ranking:
    """Rank a result (model_info dict) by AutoAttack accuracy on a leaderboard snapshot.

    Ties rank the result below the existing entries. ``neighbours`` entries are listed above
    and below. A result that is already on the board (:func:`same_entry`; ``path`` is its file)
    is counted once: the board's copy is left out.
    """
    if not is_autoattack(result):
        label, _ = robust_acc(result)
        raise InputError(f"the result's robust accuracy is under {label}, not AutoAttack: it cannot be ranked "
                         "among AutoAttack entries")
    acc = float(result["autoattack_acc"])
    dup = same_entry(result, board, path)
    entries = [e for e in board["entries"] if e is not dup]
    better = [e for e in entries if e["autoattack_acc"] >= acc]
    worse = [e for e in entries if e["autoattack_acc"] < acc]
    ours = model_bytes(result, size_key)
    smaller = [e for e in better if e.get("params") and ours is not None and 4 * e["params"] <= ours]
    return Ranking(board.get("leaderboard", "?"), len(better) + 1, len(entries) + 1, better[-neighbours:] if neighbours else [],
                   worse[:neighbours], smaller, dup["id"] if dup is not None else None)


def model_bytes(result: Mapping[str, Any], size_key: str = "sign_mask_bytes") -> int | None:
    """A result's storage in bytes: ``storage_bytes[size_key]``, else its fp32 size, else the fp32
    size of its architecture (a RobustBench file: ``"ResNet-18"`` -> 4 bytes x parameters), else None."""
    sb = result.get("storage_bytes") or {}
    found = sb.get(size_key) or sb.get("fp32_bytes")
    if found:
        return found
    classes = {"cifar10": 10, "cifar100": 100, "imagenet": 1000}.get(str(result.get("dataset")), 10)
    params, _ = arch_params(str(result.get("architecture", "")), classes)
    return 4 * params if params else None


def _size_label(result: Mapping[str, Any], size_key: str) -> str:
    sb = result.get("storage_bytes") or {}
    if sb.get(size_key):
        return size_key.replace("_bytes", "")
    return "fp32" if sb.get("fp32_bytes") or model_bytes(result, size_key) else "size unknown"


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


def rebuild_leaderboard_main(argv: Sequence[str] | None = None) -> int:
    """``python -m robin_plugin.eval.leaderboard --rebuild SRC [--out DIR] [--date YYYY-MM-DD]``."""
    parser = argparse.ArgumentParser(prog="python -m robin_plugin.eval.leaderboard",
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
    sys.exit(rebuild_leaderboard_main())
