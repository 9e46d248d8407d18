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
a timm checkpoint           a ``torch.save`` zip file as timm's ``CheckpointSaver`` writes it
                            (``state_dict``, ``args`` as an ``argparse.Namespace``, maybe
                            ``state_dict_ema``), or a state dict saved with ``torch.save``:
                            read with ``torch.load(weights_only=True)`` (:func:`read_torch_checkpoint`)
==========================  ==================================================================

Nothing here runs pickle's general loader: a ``torch.save`` file is read only by PyTorch's
restricted ``weights_only`` unpickler, with :data:`TORCH_CHECKPOINT_GLOBALS` as the one
allow-list of extra classes; a bare pickle is refused by its content. The ``robin eval``,
``robin export`` and ``robin inspect`` commands load their models through this module.

This module sits on the top floor with the CLI: it uses training (run folders) and export (the
file formats); nothing in the package below the CLI imports it.
"""
from __future__ import annotations

import argparse
import os
import pickle
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from .errors import ConfigError
from .export.compact import load_compact
from .export.dense import load_dense
from .formats.checkpoint import CHECKPOINT_FORMAT
from .formats.compact import FORMAT_NAME, ModelFileError, _looks_like_safetensors
from .formats.dense import DENSE_FORMAT
from .formats.files import FileContentError, describe_foreign_file, nonfinite_tensor, read_safetensors, read_safetensors_header
from .formats.hub import read_hub_config
from .models.spec import ModelSpec, build_model
from .models.timm_loading import training_model_state
from .training.run import load_run

__all__ = ["TORCH_CHECKPOINT_GLOBALS", "ModelFileError", "load_model", "load_state_file", "read_state_dict",
           "read_torch_checkpoint"]

#: Classes a ``torch.save`` checkpoint may hold besides tensors and plain Python values: timm's
#: ``CheckpointSaver`` stores the training script's ``args`` as an ``argparse.Namespace``.
TORCH_CHECKPOINT_GLOBALS: tuple[type, ...] = (argparse.Namespace,)


def read_torch_checkpoint(path: str | os.PathLike, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in a ``torch.save`` file: a timm ``CheckpointSaver`` checkpoint or a bare state dict.

    Read with ``torch.load(weights_only=True)`` under ``torch.serialization.safe_globals``
    (:data:`TORCH_CHECKPOINT_GLOBALS`): PyTorch's restricted unpickler, which builds tensors and
    plain containers only and refuses every other class. A ``module.`` prefix (a DataParallel
    model saved without unwrapping) is removed.

    Args:
        path: the file.
        ema: take ``state_dict_ema`` (the EMA weights timm saves with ``--model-ema``) instead
            of ``state_dict``.

    The safetensors header is checked against limits before the body is read
    (:func:`robin_plugin.formats.files.read_safetensors`).

    Raises:
        ModelFileError: unreadable, a class outside the allow-list, no state dict in it, or NaN / Inf.
    """
    path = Path(path)
    try:
        with torch.serialization.safe_globals(list(TORCH_CHECKPOINT_GLOBALS)):
            ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, OSError, EOFError, zipfile.BadZipFile, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"cannot read {path} as a torch.save checkpoint with weights_only=True: {first[:300]}") from None
    key = "state_dict_ema" if ema else "state_dict"
    if isinstance(ckpt, dict) and key in ckpt:
        state = ckpt[key]
    elif ema:
        raise ModelFileError(f"{path} has no state_dict_ema (timm saves it with --model-ema); keys: {sorted(ckpt)[:8]}"
                             if isinstance(ckpt, dict) else f"{path} holds a {type(ckpt).__name__}, not a checkpoint")
    else:
        state = ckpt
    if not isinstance(state, dict) or not state or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                                            for k, v in state.items()):
        raise ModelFileError(f"{path} holds no state dict (a dict of tensors, or a timm checkpoint with {key!r})")
    if all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    bad = nonfinite_tensor(state)
    if bad is not None:
        raise ModelFileError(f"{path}: tensor {bad!r} holds NaN or Inf; a model's weights, scores and statistics are finite")
    return state


def read_state_dict(path: str | os.PathLike, *, ema: bool = False) -> dict[str, torch.Tensor]:
    """The state dict in a file: safetensors (of a robin training checkpoint, its model part) or
    a ``torch.save`` checkpoint (:func:`read_torch_checkpoint`; ``ema`` picks timm's EMA weights).

    Raises:
        ModelFileError: the file is missing, is a bare pickle (never unpickled), is not a
            readable safetensors or ``torch.save`` file, or holds NaN / Inf (naming the tensor).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"checkpoint {path} does not exist")
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(b"PK\x03\x04") and path.suffix != ".safetensors":  # torch.save's zip format
        return read_torch_checkpoint(path, ema=ema)
    if path.suffix != ".safetensors" and not _looks_like_safetensors(head + b"\0" * 8):
        what = describe_foreign_file(head, path.stat().st_size).removeprefix("it is ")
        raise ModelFileError(f"checkpoint {path} must be a .safetensors state dict or a torch.save (zip) checkpoint; "
                             f"it is {what}")
    try:
        tensors, metadata = read_safetensors(path)
    except (OSError, FileContentError) as e:
        raise ModelFileError(f"cannot read checkpoint {path}: {e}") from None
    if metadata.get("format") == CHECKPOINT_FORMAT:
        tensors = training_model_state(tensors)
    _check_finite(tensors, f"checkpoint {path}")
    return tensors


def _check_finite(tensors: Mapping[str, torch.Tensor], what: str) -> None:
    bad = nonfinite_tensor(tensors)
    if bad is not None:
        raise ModelFileError(f"{what}: tensor {bad!r} holds NaN or Inf; a model must have finite weights, scores "
                             "and statistics")


def load_state_file(model: nn.Module, source: str | os.PathLike | Mapping[str, torch.Tensor]) -> nn.Module:
    """Load a state dict (a file, see :func:`read_state_dict`, or a mapping) into ``model``, every key matched.

    Raises:
        ModelFileError: unreadable file, or the state dict does not match the model (shape,
            missing or unexpected keys: the wrong architecture or model kwargs).
    """
    what = "the state dict" if isinstance(source, Mapping) else f"checkpoint {source}"
    state = dict(source) if isinstance(source, Mapping) else read_state_dict(source)
    _check_finite(state, what)
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


def _file_format(path: Path) -> tuple[str | None, str | None]:
    """``(format, None)``: the ``format`` of a safetensors file's metadata (None without one);
    ``(None, reason)`` when it is not a readable safetensors file (empty, truncated, a pickle ...)."""
    try:
        return read_safetensors_header(path).metadata.get("format"), None
    except (OSError, FileContentError) as e:
        return None, str(e)


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
        if read_hub_config(path) is not None:  # bounded here, before timm parses it again
            return timm.create_model(f"local-dir:{path}", pretrained=True).eval()
        return load_run(path, which)[0]
    if not path.is_file():
        raise ModelFileError(f"{path} does not exist" if not path.exists() else f"{path} is not a regular file")
    fmt, unreadable = _file_format(path)  # what the file is, by its content, never by its name
    if unreadable is not None and model is None:
        raise ModelFileError(f"{path} is not a model file robin reads ({unreadable}); robin reads safetensors files: "
                             "compact and dense exports, checkpoints and state dicts")
    if fmt in (FORMAT_NAME, DENSE_FORMAT):
        if model is not None or kwargs:
            raise ConfigError(f"{path} is a {fmt} file that names its own architecture; do not pass model / model_kwargs")
        return load_compact(path) if fmt == FORMAT_NAME else load_dense(path)
    if model is None:
        raise ConfigError(f"{path} holds a plain state dict: pass model=<timm name> (and its model_kwargs) "
                          "to say which architecture it belongs to")
    built = build_model(ModelSpec.parse(model, kwargs, source="model_kwargs"))
    return load_state_file(built, path).eval()
