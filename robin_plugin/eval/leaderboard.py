"""The RobustBench leaderboard snapshot: load it, check a result is comparable, rank it.

The snapshot in ``leaderboard_data/<dataset>_<threat>.json`` (CIFAR-10 Linf, CIFAR-100 Linf,
ImageNet Linf) is built by :func:`build_snapshot` from RobustBench's ``model_info`` files
(``python -m robin_plugin.cli.leaderboard_snapshot --rebuild SRC``). The table, the plot and the
``robin leaderboard`` command are in :mod:`robin_plugin.cli.leaderboard`.

Please cite RobustBench when you use it: Croce, Andriushchenko, Sehwag, Debenedetti,
Flammarion, Chiang, Mittal, Hein, "RobustBench: a standardized adversarial robustness
benchmark", NeurIPS 2021 Datasets and Benchmarks Track.

Parameter counts (:func:`arch_params`) are counted on the models, not taken from the papers:
each RobustBench architecture string is built on the meta device (no memory, no weights) and
its parameters are summed, at the dataset's class count. CIFAR WideResNet-d-k is robin's dense
twin ``robin_wrn34_dense`` with ``depth``/``widen_factor`` (the layout of RobustBench's CIFAR
WideResNets); the other named architectures are timm's models of that name
(:data:`TIMM_ARCHITECTURES`; ResNet-18 and ResNet-50 with timm's 7x7 stem at every class count,
as the ``architecture`` field does not say which stem a CIFAR entry used); He et al.'s CIFAR
ResNet-20/32/44/56/110/1202, which neither robin nor timm ships, by their layout
(:func:`he_cifar_resnet_params`). Approximations, marked ``"approx"`` in the snapshot:
PreActResNet-18 is counted as ResNet-18, MeanSparse and PSSiLU variants and "+ ConvStem" models
as their base network, "A + B" ensembles as the sum of their members. Unknown (``null``, left out
of the plot): XCiT-M12 and XCiT-L12 (12-layer variants that timm does not define),
WideResNet-34-R, WideResNet-A4, RaWideResNet, ResNeSt-152, the Neural-ODE and mixing-network
models and the 5-layer CNN.
"""
from __future__ import annotations

import datetime as _dt
import functools
import json
import logging
import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import timm
import torch

from .. import models  # noqa: F401  (registers robin_wrn34_dense with timm)
from ..errors import InputError, UnknownNameError, closest
from ..formats.files import parse_json
from ..formats.result import MAX_RESULT_BYTES, parse_eps
from ..io import atomic_write_json, read_limited
from .report import AUTOATTACK, is_autoattack, robust_acc

__all__ = [
    "CITATION", "LEADERBOARDS", "TIMM_ARCHITECTURES", "Ranking", "arch_params", "build_snapshot", "comparability",
    "he_cifar_resnet_params", "leaderboard_for", "load_leaderboard", "model_bytes", "rank", "result_threat",
    "same_entry", "same_eps",
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

#: RobustBench architecture strings counted on timm's model of the same architecture.
TIMM_ARCHITECTURES: dict[str, str] = {
    "ResNet-18": "resnet18",
    "ResNet-50": "resnet50",
    "ResNet-152": "resnet152",
    "WideResNet-50-2": "wide_resnet50_2",
    "WideResNet-101-2": "wide_resnet101_2",
    "DenseNet-121": "densenet121",
    "Swin-B": "swin_base_patch4_window7_224",
    "Swin-L": "swin_large_patch4_window7_224",
    "ViT-B": "vit_base_patch16_224",
    "ViT-S": "vit_small_patch16_224",
    "ConvNeXt-L": "convnext_large",
    "ConvNeXt-B": "convnext_base",
    "ConvNeXt-S": "convnext_small",
    "ConvNeXt-T": "convnext_tiny",
    "ConvNeXtV2-L": "convnextv2_large",
    "XCiT-S12": "xcit_small_12_p16_224",
}

_WIDE_RESNET = re.compile(r"WideResNet-(\d+)-(\d+)")  # CIFAR WideResNet-depth-width (Zagoruyko & Komodakis 2016)
_HE_RESNET = re.compile(r"ResNet-(20|32|44|56|110|1202)")  # the CIFAR ResNets of He et al. 2016, section 4.2

_APPROX_ALIASES = {"PreActResNet-18": "ResNet-18", "WideResNet-28-10-PSSiLU": "WideResNet-28-10"}


@functools.lru_cache(maxsize=None)
def _timm_params(name: str, num_classes: int, **kwargs: Any) -> int:
    """Parameters of ``timm.create_model(name, num_classes=num_classes, **kwargs)``, built on the meta device."""
    with torch.device("meta"):  # shapes only: a 400M-parameter WideResNet costs no memory
        model = timm.create_model(name, num_classes=num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())


def he_cifar_resnet_params(depth: int, num_classes: int) -> int:
    """Parameters of He et al.'s CIFAR ResNet-``depth`` (2016, section 4.2), with projection shortcuts.

    A 3x3 convolution to 16 channels, three stages of ``(depth - 2) / 6`` basic blocks at 16, 32
    and 64 channels (two 3x3 convolutions without bias, each followed by a BatchNorm), a 1x1
    convolution with a BatchNorm on the two shortcuts that change the width, and a linear head.
    ResNet-20 at 10 classes has 272,474.
    """
    blocks, width_in = (depth - 2) // 6, 16
    total = 3 * 16 * 9 + 2 * 16  # stem convolution and its BatchNorm
    for width in (16, 32, 64):
        block = 2 * width * width * 9 + 2 * 2 * width
        total += blocks * block + (width_in - width) * width * 9  # the first block starts from width_in channels
        if width_in != width:
            total += width_in * width + 2 * width  # projection shortcut
        width_in = width
    return total + 64 * num_classes + num_classes


def arch_params(architecture: str, num_classes: int) -> tuple[int | None, str | None]:
    """Parameter count of a RobustBench architecture string at ``num_classes`` outputs (see the module docstring).

    Returns:
        ``(count, "computed" | "approx")``, or ``(None, None)`` when unknown.
    """
    arch = architecture.strip()
    if arch in TIMM_ARCHITECTURES:
        return _timm_params(TIMM_ARCHITECTURES[arch], num_classes), "computed"
    wrn = _WIDE_RESNET.fullmatch(arch)
    if wrn and (int(wrn[1]) - 4) % 6 == 0:
        return _timm_params("robin_wrn34_dense", num_classes, depth=int(wrn[1]), widen_factor=int(wrn[2])), "computed"
    he = _HE_RESNET.fullmatch(arch)
    if he:
        return he_cifar_resnet_params(int(he[1]), num_classes), "computed"
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
