"""The evaluation result file: RobustBench ``model_info`` JSON plus robin's fields.

RobustBench's ``model_info/<dataset>/<threat>/<Name>.json`` files hold percent strings
(``"clean_acc": "88.98"``) and an ``eps`` string (``"8/255"``, :func:`eps_string`). A result
file must have :data:`REQUIRED_FIELDS` and one of :data:`ROBUST_FIELDS`; robin's own fields
(sparsity, storage, checks, ...) are described in :mod:`robin_plugin.eval.report`, which builds
the dict. :func:`read_result` also reads RobustBench's own files (``benchmark(...,
to_disk=True)`` writes ``null`` name and architecture and a float eps).
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..io import atomic_write_json, read_limited
from .files import FileContentError, parse_json

__all__ = ["MAX_RESULT_BYTES", "REQUIRED_FIELDS", "RESULT_DATASETS", "ROBUST_FIELDS", "eps_string", "parse_eps",
           "read_result", "write_result"]

MAX_RESULT_BYTES = 1024 * 1024
"""Size limit of a result file (RobustBench ``model_info`` JSON: a few hundred bytes)."""

#: Fields every result file must have (RobustBench's model_info core), plus one of :data:`ROBUST_FIELDS`.
REQUIRED_FIELDS: tuple[str, ...] = ("name", "architecture", "eps", "clean_acc")

#: The robust accuracy: ``autoattack_acc`` (full standard AutoAttack) or ``robust_acc`` (another attack set).
ROBUST_FIELDS: tuple[str, ...] = ("autoattack_acc", "robust_acc")

#: The datasets a result may name (RobustBench's folder names and robin's).
RESULT_DATASETS: tuple[str, ...] = ("fashion_mnist", "cifar10", "cifar100", "imagenet", "imagenet100")


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


def read_result(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a result file (RobustBench model_info JSON, see the module docstring).

    The fields RobustBench's own files leave ``null`` are filled: ``name`` from the file name,
    ``architecture`` ``"unknown"``, ``eps`` as a string, ``dataset`` from the folder.

    Raises:
        InputError: the file is missing, is not valid JSON, is not an object, lacks one of
            :data:`REQUIRED_FIELDS`, or has accuracies or eps outside their ranges.
    """
    p = Path(path)
    try:
        text = read_limited(p, MAX_RESULT_BYTES).decode("utf-8")
    except FileNotFoundError:
        raise InputError(f"result file {p} does not exist") from None
    except (OSError, ValueError) as e:  # UnicodeDecodeError, or larger than the limit
        raise InputError(f"cannot read result file {p}: {e}") from None
    try:
        info = parse_json(text, max_bytes=MAX_RESULT_BYTES)
    except FileContentError as e:
        if "nested too deeply" in str(e):
            raise InputError(f"{p} is nested too deeply to be a result file") from None
        raise InputError(f"{p} is not valid JSON: {str(e).removeprefix('not valid JSON ')}") from None
    if not isinstance(info, dict):
        raise InputError(f"{p} must hold a JSON object (RobustBench model_info), got {type(info).__name__}")
    _from_robustbench(info, p)
    missing = [k for k in REQUIRED_FIELDS if k not in info]
    if not any(k in info for k in ROBUST_FIELDS):
        missing.append(" or ".join(ROBUST_FIELDS))
    if missing:
        raise InputError(f"{p} lacks the field(s) {', '.join(missing)}; a result needs {', '.join(REQUIRED_FIELDS)} "
                         f"and {' or '.join(ROBUST_FIELDS)}")
    for key in ("clean_acc", *ROBUST_FIELDS):
        if key in info:
            _percent_field(info, key, p)
    parse_eps(info["eps"])
    if not isinstance(info["name"], str) or not isinstance(info["architecture"], str):
        raise InputError(f"{p}: fields 'name' and 'architecture' must be strings")
    sb = info.get("storage_bytes")
    if sb is not None and (not isinstance(sb, dict) or not all(
            isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sb.values())):
        raise InputError(f"{p}: 'storage_bytes' must map names to positive integers, got {sb!r}")
    return info


def _from_robustbench(info: dict[str, Any], path: Path) -> None:
    """Fill what RobustBench's ``to_disk`` files leave ``null`` (in place): name, architecture, eps.

    ``robustbench.utils.update_json`` writes ``dataclasses.asdict(ModelInfo(...))``: every field,
    ``null`` where unknown, ``eps`` as a float (or ``null``), and the model's name only as the file
    name ``model_info/<dataset>/<threat>/<model_name>.json``.
    """
    if info.get("name") is None and "name" in info:
        info["name"] = path.stem
    if info.get("architecture") is None and "architecture" in info:
        info["architecture"] = "unknown"
    for key in ("additional_data", "unreliable"):
        if key in info and info[key] is None:
            info[key] = False
    eps = info.get("eps")
    if isinstance(eps, (int, float)) and not isinstance(eps, bool):
        info["eps"] = eps_string(parse_eps(eps))
    elif eps is None and "eps" in info:
        raise InputError(f"{path}: eps is null; RobustBench writes it only when benchmark() was given eps, and a "
                         f"result without its radius cannot be compared")
    if info.get("dataset") is None and path.parent.parent.name in RESULT_DATASETS:  # model_info/<dataset>/<threat>/
        info["dataset"] = path.parent.parent.name
