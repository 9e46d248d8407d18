"""Evaluation results as RobustBench model_info JSON (plus robin fields) and as a terminal table.

RobustBench's ``model_info/<dataset>/<threat>/<Name>.json`` files hold percent strings
(``"clean_acc": "88.98"``) and an ``eps`` string (``"8/255"``). :func:`make_model_info` writes
the same fields, so a result can sit next to the leaderboard entries, and adds ours:

- ``keep_ratio``, ``p``, ``kept_weights``, ``total_weights``: the masked model's sparsity;
- ``storage_bytes``: the figures of :func:`robin_plugin.summary.storage_bytes` (``fp32_bytes``,
  ``sign_mask_bytes``, ``seeded_mask_bytes``, ``entropy_bound_bytes``; a dense model: ``fp32_bytes``);
- ``n_points``, ``pgd_acc``, ``pgd_steps``, ``robust_acc_after`` (percent strings per attack),
  ``worst_case_acc``, ``checks``, ``checks_passed``, ``warnings``, ``reference``, ``seconds``;
- the threat model: ``dataset``, ``threat_model`` (the norm, ``"Linf"``), ``eps`` (RobustBench's
  string) and ``eps_value`` (the float);
- ``attack_set``: what the robust accuracy is under (:func:`attack_set_label`). Only the full
  standard AutoAttack ensemble at its original strength is ``"autoattack"`` and writes
  RobustBench's ``autoattack_acc``; any other set (``robin eval --attacks apgd-ce``) is labelled
  with its components (``"apgd-ce"``, ``"apgd-ce+square"``) and writes ``robust_acc`` instead, so
  that nothing ranks it beside AutoAttack entries.

:func:`load_result` also reads RobustBench's own files (``benchmark(..., to_disk=True)`` writes
``model_info/<dataset>/<threat>/<model_name>.json`` with ``null`` name and architecture and a
float eps) and files of robin_plugin 0.2, whose subset evaluations were still called
``autoattack_acc`` (relabelled from their ``attacks`` list). The file itself is written and read
by :mod:`robin_plugin.formats.result`.
"""
from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping, Sequence
from typing import Any

import torch.nn as nn

from ..errors import ConfigError, UnknownNameError, closest
from ..formats.result import RESULT_DATASETS, eps_string, read_result
from ..pruning import is_masked
from ..summary import format_storage, storage_bytes, summarize
from .attacks import STANDARD_ATTACKS, AutoAttackConfig
from .evaluate import EvalResult

__all__ = ["AUTOATTACK", "attack_set_label", "format_report", "is_autoattack", "load_result", "make_model_info",
           "robust_acc", "storage_of"]

AUTOATTACK = "autoattack"
"""The one ``attack_set`` label of the full standard ensemble at its original strength."""


def attack_set_label(attacks: Sequence[str], config: Mapping[str, Any] | None = None) -> str:
    """What a robust accuracy is under: ``"autoattack"`` or the components joined with ``+``.

    Args:
        attacks: the AutoAttack components run, in order.
        config: their settings (``dataclasses.asdict(AutoAttackConfig)``); None: the standard ones.

    Only :data:`STANDARD_ATTACKS` in their order at the standard settings is ``"autoattack"``;
    the same four at other settings are ``"apgd-ce+apgd-t+fab-t+square (custom settings)"``.
    """
    label = "+".join(attacks)
    standard = config is None or dict(config) == dataclasses.asdict(AutoAttackConfig())
    if tuple(attacks) == STANDARD_ATTACKS:
        return AUTOATTACK if standard else f"{label} (custom settings)"
    return label if standard else f"{label} (custom settings)"


def is_autoattack(info: Mapping[str, Any]) -> bool:
    """Whether a result's robust accuracy is under the full standard AutoAttack (RobustBench's ``autoattack_acc``)."""
    return "autoattack_acc" in info and info.get("attack_set", AUTOATTACK) == AUTOATTACK


def robust_acc(info: Mapping[str, Any]) -> tuple[str, float]:
    """``(attack_set label, robust accuracy in percent)`` of a result from :func:`load_result`."""
    if is_autoattack(info):
        return AUTOATTACK, float(info["autoattack_acc"])
    return str(info.get("attack_set", "?")), float(info["robust_acc"])

def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def storage_of(model: nn.Module) -> dict[str, Any]:
    """Sparsity and storage of ``model``: the masked-layer summary, or the parameter count of a dense model.

    Returns:
        ``{"keep_ratio", "p", "kept_weights", "total_weights", "storage_bytes": {...}}``;
        keep_ratio, p and kept_weights are None for a model without masked layers, whose
        total_weights is its parameter count. storage_bytes: :func:`robin_plugin.summary.storage_bytes`.
    """
    s = summarize(model)
    if is_masked(model):
        mk = getattr(model, "masked_kwargs", {}) or {}
        return {"keep_ratio": s.keep_ratio, "p": mk.get("p"), "kept_weights": s.kept, "total_weights": s.total,
                "storage_bytes": storage_bytes(model)}
    return {"keep_ratio": None, "p": None, "kept_weights": None,
            "total_weights": sum(t.numel() for t in model.parameters()), "storage_bytes": storage_bytes(model)}


def make_model_info(
    result: EvalResult,
    *,
    name: str,
    architecture: str,
    dataset: str,
    model: nn.Module | None = None,
    additional_data: bool = False,
    venue: str = "",
    link: str = "",
    authors: str = "",
    footnote: str = "",
) -> dict[str, Any]:
    """RobustBench model_info dict for ``result``, with robin's extra fields.

    Args:
        result: from :func:`robin_plugin.eval.evaluate`.
        name: model name shown on the leaderboard.
        architecture: e.g. ``"ResNet-18 (binary, 1% kept)"``.
        dataset: ``fashion_mnist``, ``cifar10``, ``cifar100``, ``imagenet`` or ``imagenet100``.
        model: the evaluated model, for keep ratio, p, kept weights and storage bytes.
        additional_data: trained with data beyond the training set.
    """
    if dataset not in RESULT_DATASETS:
        raise UnknownNameError(f"unknown dataset {dataset!r}{closest(dataset, RESULT_DATASETS)}; "
                               f"valid: {', '.join(RESULT_DATASETS)}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"name must be a non-empty string, got {name!r}")
    info: dict[str, Any] = {
        "link": link,
        "name": name,
        "authors": authors,
        "additional_data": bool(additional_data),
        "number_forward_passes": 1,
        "dataset": dataset,
        "venue": venue,
        "architecture": architecture,
        "eps": eps_string(result.eps),
        "clean_acc": _pct(result.clean_acc),
        "reported": "",
        "footnote": footnote,
        "unreliable": not result.checks_passed,
    }
    attack_set = attack_set_label(result.attacks, result.settings.get("autoattack"))
    info["attack_set"] = attack_set
    info["autoattack_acc" if attack_set == AUTOATTACK else "robust_acc"] = _pct(result.autoattack_acc)
    info.update(storage_of(model) if model is not None else
                {"keep_ratio": None, "p": None, "kept_weights": None, "total_weights": None, "storage_bytes": {}})
    info.update({
        "threat_model": "Linf",
        "eps_value": result.eps,
        "n_points": result.n,
        "pgd_steps": result.pgd_steps,
        "pgd_acc": _pct(result.pgd_acc),
        "attacks": list(result.attacks),
        "robust_acc_after": {k: _pct(v) for k, v in result.robust_acc_after.items()},
        "worst_case_acc": _pct(result.worst_case_acc),
        "checks_passed": result.checks_passed,
        "checks": [c.to_dict() for c in result.checks],
        "warnings": result.warnings,
        "reference": _reference_info(result.reference),
        "seconds": {k: round(v, 3) for k, v in result.seconds.items()},
        "settings": result.settings,
    })
    return info


def _reference_info(ref: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if ref is None:
        return None
    out = dict(ref)
    for k in ("clean_acc", "autoattack_acc"):
        out[k] = _pct(ref[k])
    out["robust_acc_after"] = {k: _pct(v) for k, v in ref.get("robust_acc_after", {}).items()}
    out["difference"] = f"{100.0 * ref['difference']:+.2f}"
    out["tolerance"] = _pct(ref["tolerance"])
    return out


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a result file (:func:`robin_plugin.formats.result.read_result`).

    An attack set's accuracy that robin_plugin 0.2 called ``autoattack_acc`` is relabelled by its
    ``attacks`` list (:func:`attack_set_label`).

    Raises:
        InputError: the file is missing, is not valid JSON, is not an object, lacks one of
            :data:`~robin_plugin.formats.result.REQUIRED_FIELDS`, or has accuracies or eps
            outside their ranges.
    """
    info = read_result(path)
    _relabel_subset(info)
    return info


def _relabel_subset(info: dict[str, Any]) -> None:
    """robin_plugin 0.2 called any attack set's accuracy ``autoattack_acc``: name it by its ``attacks`` (in place)."""
    if "attack_set" in info or "autoattack_acc" not in info or not isinstance(info.get("attacks"), list):
        return
    settings = info.get("settings") if isinstance(info.get("settings"), dict) else {}
    label = attack_set_label([str(a) for a in info["attacks"]], settings.get("autoattack"))
    info["attack_set"] = label
    if label != AUTOATTACK:
        info["robust_acc"] = info.pop("autoattack_acc")


def format_report(info: Mapping[str, Any]) -> str:
    """A readable table of a model_info dict from :func:`make_model_info`."""
    lines = [f"== {info.get('name', '?')} ({info.get('architecture', '?')}) ==",
             f"dataset {info.get('dataset', '?')}, {info.get('threat_model', 'Linf')} eps {info.get('eps')}, "
             f"{info.get('n_points', '?')} points"]
    rows: list[tuple[str, str]] = [("clean", info["clean_acc"])]
    if "pgd_acc" in info:
        rows.append((f"PGD-{info.get('pgd_steps')}", info["pgd_acc"]))
    for k, v in (info.get("robust_acc_after") or {}).items():
        rows.append((f"after {k}", v))
    label, _ = robust_acc(info)
    rows.append(("AutoAttack" if label == AUTOATTACK else f"robust under {label}",
                 info["autoattack_acc" if label == AUTOATTACK else "robust_acc"]))
    if "worst_case_acc" in info:
        rows.append(("worst case (all attacks)", info["worst_case_acc"]))
    ref = info.get("reference")
    if ref:
        rows.append(("reference AutoAttack", f"{ref['autoattack_acc']}  (diff {ref['difference']}, "
                                             f"{'agrees' if ref.get('agrees') else 'DISAGREES'})"))
    w = max(len(r[0]) for r in rows)
    lines.append(f"{'accuracy':<{w}}  %")
    lines += [f"{label:<{w}}  {value}" for label, value in rows]
    sb = info.get("storage_bytes") or {}
    if info.get("kept_weights") is not None:
        lines.append(f"weights kept {info['kept_weights']:,} of {info['total_weights']:,} "
                     f"(keep_ratio {info['keep_ratio']:.4f}, p {info.get('p')})")
    if sb:
        lines.append(f"storage: {format_storage(sb)}")
    checks = info.get("checks") or []
    if checks:
        lines.append("gradient-masking checks:")
        for c in checks:
            lines.append(f"  [{'pass' if c['passed'] else 'FAIL'}] {c['name']}: {c['message']}")
    if info.get("unreliable"):
        lines.append("WARNING: at least one check failed: treat the robust accuracy as an upper bound")
    return "\n".join(lines)
