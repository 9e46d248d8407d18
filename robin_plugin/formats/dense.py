"""The dense export file: a plain state dict in safetensors, with the model that reads it.

Safetensors metadata: ``{"format": "robin_dense/1", "shrunk": "true" | "false", "model": <timm
name of the dense twin>, "kwargs": <its keyword arguments as JSON>}`` (``model`` and ``kwargs``
only for robin timm models); tensors: the state dict, unchanged. An unshrunk file loads into
``timm.create_model(model, **kwargs)`` with ``strict=True`` and no robin code.

:func:`read_dense_file` checks the file before it returns its fields and tensors; building the
model from them is :func:`robin_plugin.export.dense.load_dense`'s job (the models sit above
this package).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..io import save_safetensors
from .compact import ExportFormatError
from .files import SafetensorsLimits, parse_json, read_safetensors_checked

__all__ = ["DENSE_FORMAT", "DENSE_LIMITS", "DenseFile", "read_dense_file", "write_dense_file"]

DENSE_FORMAT = "robin_dense/1"
DENSE_LIMITS = SafetensorsLimits(max_metadata_chars=1 << 20)
"""A dense export's metadata (format, model name, kwargs) is short."""


@dataclass
class DenseFile:
    """A checked dense export: the timm name and keyword arguments of its model, whether its
    channels were shrunk, and its state dict (finite)."""

    model: str
    kwargs: Any
    shrunk: bool
    tensors: dict[str, torch.Tensor]


def write_dense_file(state_dict: dict[str, torch.Tensor], path: str | os.PathLike, *,
                     spec: tuple[str, dict[str, Any]] | None, shrunk: bool, overwrite: bool = False) -> Path:
    """Write ``state_dict`` as a dense export, atomically (same model -> same bytes).

    Args:
        state_dict: the plain state dict.
        path: destination file.
        spec: ``(timm name, kwargs)`` of the model that reads it, or None for a model without one.
        shrunk: whether dead channels were removed (the shapes then differ from the model's).
        overwrite: replace an existing file.
    """
    metadata = {"format": DENSE_FORMAT, "shrunk": json.dumps(bool(shrunk))}
    if spec is not None:
        metadata.update(model=spec[0], kwargs=json.dumps(spec[1]))
    tensors = {k: v.contiguous() for k, v in state_dict.items()}
    return save_safetensors(tensors, path, metadata, overwrite=overwrite)


def read_dense_file(path: str | os.PathLike) -> DenseFile:
    """Read and check a file written by :func:`write_dense_file`.

    The metadata is checked before the body is read; ``kwargs`` is parsed JSON, not yet checked
    against the model (the caller's model spec does that).

    Raises:
        ExportFormatError: missing, not a dense export, written for a model without a timm name,
            unreadable, holding NaN / Inf, or a bad ``shrunk`` flag (the message says which).
    """
    path = Path(path)
    if not path.is_file():
        raise ExportFormatError(f"no dense export at {path}")

    kwargs: list[Any] = []  # the parsed kwargs, filled by check

    def check(metadata: dict[str, str]) -> None:
        if metadata.get("format") != DENSE_FORMAT:
            raise ExportFormatError(f"{path} is not a robin dense export (metadata format {metadata.get('format')!r:.60})")
        if "model" not in metadata:
            raise ExportFormatError(f"{path} comes from a model without a timm name; load it into your own architecture")
        kwargs.append(parse_json(metadata.get("kwargs", "{}"), max_bytes=1 << 20))  # before the body is read

    tensors, metadata = read_safetensors_checked(path, ExportFormatError, "{path} is not a readable dense export ({reason})",
                                                 check_metadata=check, limits=DENSE_LIMITS,
                                                 finite="a dense export must hold finite weights and statistics")
    shrunk = metadata.get("shrunk", "false")
    if shrunk not in ("true", "false"):
        raise ExportFormatError(f"{path}: metadata 'shrunk' must be true or false, got {shrunk!r:.40}")
    return DenseFile(metadata["model"], kwargs[0], shrunk == "true", tensors)
