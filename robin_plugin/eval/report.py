"""Evaluation results as RobustBench model_info JSON (plus robin fields) and as a terminal table.

RobustBench's ``model_info/<dataset>/<threat>/<Name>.json`` files hold percent strings
(``"clean_acc": "88.98"``) and an ``eps`` string (``"8/255"``). :func:`make_model_info` writes
the same fields, so a result can sit next to the leaderboard entries, and adds ours:

- ``keep_ratio``, ``p``, ``kept_weights``, ``total_weights``: the masked model's sparsity;
- ``storage_bytes``: the figures of :func:`robin_plugin.summary.storage_bytes` (``fp32_bytes``,
  ``sign_mask_bytes``, ``seeded_mask_bytes``, ``entropy_bound_bytes``; a dense model: ``fp32_bytes``);
- ``n_points``, ``pgd_acc``, ``pgd_steps``, ``robust_acc_after`` (percent strings per attack),
  ``worst_case_acc``, ``checks``, ``checks_passed``, ``warnings``, ``reference``, ``seconds``.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch.nn as nn

from ..errors import ConfigError, InputError, UnknownNameError, closest
from ..io import atomic_write_json
from ..pruning import is_masked
from ..summary import format_storage, storage_bytes, summarize
from .evaluate import EvalResult

__all__ = ["REQUIRED_FIELDS", "eps_string", "format_report", "load_result", "make_model_info", "parse_eps",
           "storage_of", "write_result"]

#: Fields every result file must have (RobustBench's model_info core).
REQUIRED_FIELDS: tuple[str, ...] = ("name", "architecture", "eps", "clean_acc", "autoattack_acc")

_DATASETS = ("fashion_mnist", "cifar10", "cifar100", "imagenet", "imagenet100")


def eps_string(eps: float) -> str:
    """RobustBench's eps notation: ``"8/255"`` when eps is a whole number of 1/255, else ``"0.1"``."""
    k = eps * 255
    if abs(k - round(k)) < 1e-6 and 1 <= round(k) < 128 and not abs(eps * 10 - round(eps * 10)) < 1e-9:
        return f"{round(k)}/255"
    return f"{eps:g}"


def parse_eps(text: str | float) -> float:
    """Inverse of :func:`eps_string`: ``"8/255"`` -> 0.0314, ``"0.1"`` -> 0.1."""
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        try:
            value = float(text)
        except OverflowError:
            raise InputError(f"eps must be in (0, 1] pixel units, got a number too large for a float") from None
    elif isinstance(text, str):
        try:
            if "/" in text:
                num, den = text.split("/", 1)
                value = float(num) / float(den)
            else:
                value = float(text)
        except (ValueError, ZeroDivisionError, OverflowError):
            raise InputError(f"eps must look like '8/255' or '0.1', got {text!r:.80}") from None
    else:
        raise InputError(f"eps must be a string like '8/255' or a number, got {text!r}")
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise InputError(f"eps must be in (0, 1] pixel units, got {text!r}")
    return value


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
    if dataset not in _DATASETS:
        raise UnknownNameError(f"unknown dataset {dataset!r}{closest(dataset, _DATASETS)}; valid: {', '.join(_DATASETS)}")
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
        "autoattack_acc": _pct(result.autoattack_acc),
        "unreliable": not result.checks_passed,
    }
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


def write_result(path: str | os.PathLike, info: Mapping[str, Any], *, overwrite: bool = True) -> Path:
    """Write a model_info dict as JSON, atomically (see :mod:`robin_plugin.io`)."""
    return atomic_write_json(path, dict(info), overwrite=overwrite)


def _percent_field(info: Mapping[str, Any], key: str, path: Any) -> float:
    value = info[key]
    try:
        v = float(value)
    except (TypeError, ValueError, OverflowError):
        raise InputError(f"{path}: field {key!r} must be a percent like \"45.06\", got {value!r:.80}") from None
    if isinstance(value, bool) or not math.isfinite(v) or not 0.0 <= v <= 100.0:
        raise InputError(f"{path}: field {key!r} must be a percent in [0, 100], got {value!r}")
    return v


def load_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a result file (RobustBench model_info JSON).

    Raises:
        InputError: the file is missing, is not valid JSON, is not an object, lacks one of
            :data:`REQUIRED_FIELDS`, or has accuracies or eps outside their ranges.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"result file {p} does not exist") from None
    except (OSError, UnicodeDecodeError) as e:
        raise InputError(f"cannot read result file {p}: {e}") from None
    try:
        info = json.loads(text)
    except json.JSONDecodeError as e:
        raise InputError(f"{p} is not valid JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise InputError(f"{p} is nested too deeply to be a result file") from None
    if not isinstance(info, dict):
        raise InputError(f"{p} must hold a JSON object (RobustBench model_info), got {type(info).__name__}")
    missing = [k for k in REQUIRED_FIELDS if k not in info]
    if missing:
        raise InputError(f"{p} lacks the field(s) {', '.join(missing)}; a result needs {', '.join(REQUIRED_FIELDS)}")
    for key in ("clean_acc", "autoattack_acc"):
        _percent_field(info, key, p)
    parse_eps(info["eps"])
    if not isinstance(info["name"], str) or not isinstance(info["architecture"], str):
        raise InputError(f"{p}: fields 'name' and 'architecture' must be strings")
    sb = info.get("storage_bytes")
    if sb is not None and (not isinstance(sb, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sb.values())):
        raise InputError(f"{p}: 'storage_bytes' must map names to positive integers, got {sb!r}")
    return info


def format_report(info: Mapping[str, Any]) -> str:
    """A readable table of a model_info dict from :func:`make_model_info`."""
    lines = [f"== {info.get('name', '?')} ({info.get('architecture', '?')}) ==",
             f"dataset {info.get('dataset', '?')}, Linf eps {info.get('eps')}, {info.get('n_points', '?')} points"]
    rows: list[tuple[str, str]] = [("clean", info["clean_acc"])]
    if "pgd_acc" in info:
        rows.append((f"PGD-{info.get('pgd_steps')}", info["pgd_acc"]))
    for k, v in (info.get("robust_acc_after") or {}).items():
        rows.append((f"after {k}", v))
    rows.append(("AutoAttack", info["autoattack_acc"]))
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
