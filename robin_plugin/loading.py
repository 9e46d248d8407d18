"""One way to get a model back from anything robin writes: :func:`load_model`.

Sources, told apart by what they are, not by their names:

==========================  ==================================================================
a ``robin train`` folder    ``config.json`` (a :class:`~robin_plugin.training.TrainConfig`) and
                            ``model_best.safetensors`` / ``model.safetensors``:
                            :func:`robin_plugin.training.load_run`
a hub folder                ``config.json`` with an ``architecture`` (``robin export --format
                            hub``): ``timm.create_model('local-dir:FOLDER', pretrained=True)``
a compact file              safetensors metadata ``format: robin_compact``:
                            :func:`robin_plugin.export.load_compact`
a dense export              metadata ``format: robin_dense/1``: :func:`robin_plugin.export.dense.load_dense`
a state dict                any other safetensors file (a plain state dict, or a robin training
                            checkpoint, whose model part is taken), or a dict of tensors in
                            memory; needs ``model`` (the timm name) and its ``model_kwargs``
==========================  ==================================================================

Nothing here unpickles: a pickle / ``torch.save`` file is refused by its content. The ``robin
eval``, ``robin export`` and ``robin inspect`` commands load their models through this module.

This module sits on the top floor with the CLI: it uses training (run folders) and export (the
file formats); nothing in the package below the CLI imports it.
"""
from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import timm
import torch
import torch.nn as nn

from .errors import ConfigError
from .export.compact import load_compact
from .export.dense import DENSE_FORMAT, load_dense
from .formats.compact import FORMAT_NAME, ModelFileError, _looks_like_pickle, _looks_like_safetensors
from .io import read_limited
from .models.spec import ModelSpec, build_model
from .models.timm_loading import training_model_state
from .training.checkpoint import FORMAT as TRAINING_CHECKPOINT_FORMAT
from .training.config import MAX_CONFIG_BYTES
from .training.run import load_run

__all__ = ["ModelFileError", "load_model", "load_state_file", "read_state_dict"]


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The state dict in a safetensors file; of a robin training checkpoint, its model part.

    Raises:
        ModelFileError: the file is missing, is a pickle / ``torch.save`` file (never
            unpickled), or is not a readable safetensors file.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    if path.suffix != ".safetensors" and not _looks_like_safetensors(head + b"\0" * 8):
        what = "a pickle / torch.save file, which robin never unpickles" if _looks_like_pickle(head) else "not safetensors"
        raise ModelFileError(f"checkpoint {path} must be a .safetensors state dict; it is {what}")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = safetensors.torch.load_file(str(path))
    except Exception as e:  # noqa: BLE001  (safetensors raises several types for a foreign file)
        raise ModelFileError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from None
    if metadata.get("format") == TRAINING_CHECKPOINT_FORMAT:
        tensors = training_model_state(tensors)
    return tensors


def load_state_file(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state dict (a file, see :func:`read_state_dict`, or a mapping) into ``model``, every key matched.

    Raises:
        ModelFileError: unreadable file, or the state dict does not match the model (shape,
            missing or unexpected keys: the wrong architecture or model kwargs).
    """
    what = "the state dict" if isinstance(source, Mapping) else f"checkpoint {source}"
    state = dict(source) if isinstance(source, Mapping) else read_state_dict(source)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e)[:200])
        raise ModelFileError(f"{what} does not match the model ({first}; wrong architecture or model kwargs?)") from None
    if result.missing_keys or result.unexpected_keys:
        raise ModelFileError(
            f"{what} does not match the model: missing {result.missing_keys[:5]}"
            f"{'...' if len(result.missing_keys) > 5 else ''}, unexpected {result.unexpected_keys[:5]}"
            f"{'...' if len(result.unexpected_keys) > 5 else ''} (wrong architecture or model kwargs?)"
        )
    return model


def _is_hub_folder(folder: Path) -> bool:
    """A folder whose config.json names an ``architecture`` (what ``robin export --format hub`` writes)."""
    try:
        config = json.loads(read_limited(folder / "config.json", MAX_CONFIG_BYTES).decode("utf-8"))
    except (OSError, ValueError, RecursionError):  # no / unreadable config: load_run says what is wrong
        return False
    return isinstance(config, dict) and "architecture" in config and "model_args" in config


def _file_format(path: Path) -> str | None:
    """The ``format`` of a safetensors file's metadata, or None (no metadata, or not safetensors)."""
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            return (f.metadata() or {}).get("format")
    except Exception:  # noqa: BLE001  (not safetensors: read_state_dict refuses it with the reason)
        return None


def load_model(
    source: str | os.PathLike | Mapping[str, torch.Tensor] | None = None,
    *,
    model: str | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    which: str = "best",
) -> nn.Module:
    """The model stored in ``source`` (see the module docstring for what it may be), in eval mode.

    Args:
        source: a run folder, a hub folder, a compact file, a dense export, a state-dict file
            or a state dict; None builds ``model`` freshly (random scores, the seed's weights).
        model: timm name of the architecture, for a state dict (or None) only.
        model_kwargs: its keyword arguments (``keep_ratio``, ``p``, ``num_classes``, ...); use
            those it was trained with.
        which: of a run folder, the ``"best"`` epoch (``model_best.safetensors``) or the ``"last"``.

    Returns:
        The model, in eval mode (on the CPU).

    Raises:
        ConfigError: a model name is given for a source that names its own architecture, or
            none for a state dict.
        ModelFileError / ExportFormatError / CheckpointError: the source cannot be read or does
            not fit (each loader's error, naming the file).
    """
    kwargs = dict(model_kwargs or {})
    if source is None or isinstance(source, Mapping):
        if model is None:
            raise ConfigError("a state dict (or no source) needs model=<timm name>: the architecture it belongs to")
        built = build_model(ModelSpec.parse(model, kwargs, source="model_kwargs"))
        return (built if source is None else load_state_file(built, source)).eval()
    path = Path(source)
    if path.is_dir():
        if model is not None or kwargs:
            raise ConfigError(f"{path} is a folder that names its own architecture; do not pass model / model_kwargs")
        if _is_hub_folder(path):
            return timm.create_model(f"local-dir:{path}", pretrained=True).eval()
        return load_run(path, which)[0]
    fmt = _file_format(path) if path.is_file() else None
    if fmt in (FORMAT_NAME, DENSE_FORMAT):
        if model is not None or kwargs:
            raise ConfigError(f"{path} is a {fmt} file that names its own architecture; do not pass model / model_kwargs")
        return load_compact(path) if fmt == FORMAT_NAME else load_dense(path)
    if model is None:
        raise ConfigError(f"{path} holds a plain state dict: pass model=<timm name> (and its model_kwargs) "
                          "to say which architecture it belongs to")
    built = build_model(ModelSpec.parse(model, kwargs, source="model_kwargs"))
    return load_state_file(built, path).eval()
