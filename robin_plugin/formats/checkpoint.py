"""The training checkpoint file: nested training state -> safetensors tensors + JSON metadata.

A checkpoint is ONE safetensors file written atomically. Its tensors are the model state dict
(``model/<key>``) and every tensor found in the nested state (optimizer, hooks); the metadata
entry ``robin_checkpoint`` holds the rest as JSON, with tensors replaced by references
(:func:`flatten_state`), and ``format`` is :data:`CHECKPOINT_FORMAT`. Reading never executes
code: safetensors holds raw arrays and JSON holds plain values.

What a :class:`~robin_plugin.training.Trainer` puts into the state, and resuming from it, is
:mod:`robin_plugin.training.checkpoint`; taking the model part out of the tensors is
:func:`robin_plugin.models.timm_loading.training_model_state`. :func:`save_state_dict` writes a
run's plain ``model.safetensors`` / ``model_best.safetensors``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from ..errors import CheckpointError
from ..io import atomic_write, canonicalize_safetensors_header
from .files import parse_json, read_safetensors_checked

__all__ = ["CHECKPOINT_FORMAT", "flatten_state", "read_checkpoint", "save_checkpoint", "save_state_dict",
           "unflatten_state"]

CHECKPOINT_FORMAT = "robin_plugin.checkpoint/1"


def flatten_state(obj: Any, tensors: dict[str, torch.Tensor], prefix: str = "s") -> Any:
    """Return a JSON-able copy of ``obj`` with every tensor moved into ``tensors``.

    Dicts become ``{"__dict__": [[key, value], ...]}`` so non-string keys (the optimizer's
    integer parameter ids) survive; tuples are kept apart from lists.
    """
    if isinstance(obj, torch.Tensor):
        name = f"{prefix}"
        tensors[name] = obj.detach().cpu().contiguous()
        return {"__tensor__": name}
    if isinstance(obj, dict):
        return {"__dict__": [[k, flatten_state(v, tensors, f"{prefix}.{i}")] for i, (k, v) in enumerate(obj.items())]}
    if isinstance(obj, tuple):
        return {"__tuple__": [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [flatten_state(v, tensors, f"{prefix}.{i}") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"cannot store {type(obj).__name__} in a checkpoint (only tensors and plain values)")


def unflatten_state(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(obj, dict):
        if set(obj) == {"__tensor__"}:
            name = obj["__tensor__"]
            if not isinstance(name, str) or name not in tensors:
                raise CheckpointError(f"checkpoint refers to a missing tensor {name!r}")
            return tensors[name]
        if set(obj) == {"__dict__"}:
            items = obj["__dict__"]
            if not isinstance(items, list) or not all(isinstance(kv, list) and len(kv) == 2 for kv in items):
                raise CheckpointError(f"checkpoint metadata: '__dict__' must list [key, value] pairs, got {items!r:.80}")
            return {_key(k): unflatten_state(v, tensors) for k, v in items}
        if set(obj) == {"__tuple__"}:
            if not isinstance(obj["__tuple__"], list):
                raise CheckpointError(f"checkpoint metadata: '__tuple__' must be a list, got {obj['__tuple__']!r:.80}")
            return tuple(unflatten_state(v, tensors) for v in obj["__tuple__"])
        raise CheckpointError(f"unexpected object in checkpoint metadata: keys {sorted(obj)[:5]}")
    if isinstance(obj, list):
        return [unflatten_state(v, tensors) for v in obj]
    return obj


def _key(k: Any) -> Any:
    if isinstance(k, list):  # JSON turned a tuple key into a list
        return tuple(_key(x) for x in k)
    if isinstance(k, dict):
        raise CheckpointError(f"checkpoint metadata: a dict key must be a plain value, got {k!r:.80}")
    return k


def _write(tensors: dict[str, torch.Tensor], tmp: str, metadata: dict[str, str] | None) -> None:
    # robin_plugin.io.save_safetensors, spelled out so tests can fail ``save_file`` here
    save_file(tensors, tmp, metadata=metadata)
    canonicalize_safetensors_header(tmp)  # same state -> same bytes


def save_state_dict(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save a plain model state dict as safetensors, atomically and reproducibly (timm can load it)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return atomic_write(path, lambda tmp: _write(tensors, tmp, metadata))


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write ``model_state`` and the nested training ``state`` to one safetensors file, atomically.

    The same model state and training state give byte-identical files.
    """
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    meta = flatten_state(state, tensors, prefix="state")
    metadata = {"format": CHECKPOINT_FORMAT, "robin_checkpoint": json.dumps(meta)}
    return atomic_write(path, lambda tmp: _write(tensors, tmp, metadata))


def read_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(tensors, state)``.

    ``tensors`` holds every tensor of the file, the model's under ``model/<key>``; ``state`` is
    the nested state with its tensor references resolved. The header is checked before the body
    is read.

    Raises:
        CheckpointError: missing, not a training checkpoint, unreadable, or corrupt metadata.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")

    def check(metadata: dict[str, str]) -> None:
        if metadata.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a robin_plugin training checkpoint (format "
                                  f"{metadata.get('format')!r:.60}, expected {CHECKPOINT_FORMAT!r})")

    tensors, metadata = read_safetensors_checked(path, CheckpointError, "{path} is not a readable safetensors "
                                                 "checkpoint ({reason})", check_metadata=check)
    try:
        meta = parse_json(metadata["robin_checkpoint"])
        state = unflatten_state(meta, tensors)
    except CheckpointError as e:
        raise CheckpointError(f"{path} has corrupt checkpoint metadata ({e})") from e
    except (KeyError, TypeError, ValueError, RecursionError) as e:  # FileContentError is a ValueError
        raise CheckpointError(f"{path} has corrupt checkpoint metadata ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has corrupt checkpoint metadata (the state is a {type(state).__name__}, expected a mapping)")
    return tensors, state
