"""Checkpoints without pickle: nested state -> safetensors tensors + JSON metadata.

A checkpoint is ONE safetensors file written atomically. Its tensors are the model state dict
(``model/<key>``) and every tensor found in the optimizer, scheduler and hook states; the
metadata entry ``robin_checkpoint`` holds the rest as JSON, with tensors replaced by references.
Loading never executes code: safetensors holds raw arrays and JSON holds plain values.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import RobinError
from ..io import atomic_write

__all__ = ["CheckpointError", "flatten_state", "unflatten_state", "save_checkpoint", "load_checkpoint", "save_state_dict"]

FORMAT = "robin_plugin.checkpoint/1"


class CheckpointError(RobinError, ValueError):
    """A checkpoint file is missing, truncated, corrupt, foreign, or does not match the run."""


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


def save_state_dict(path: str | Path, state_dict: dict[str, torch.Tensor], metadata: dict[str, str] | None = None) -> Path:
    """Save a plain model state dict as safetensors, atomically (timm can load it)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def save_checkpoint(path: str | Path, model_state: dict[str, torch.Tensor], state: dict[str, Any]) -> Path:
    """Write ``model_state`` and the nested training ``state`` to one safetensors file, atomically."""
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v.detach().cpu().contiguous() for k, v in model_state.items()}
    meta = flatten_state(state, tensors, prefix="state")
    metadata = {"format": FORMAT, "robin_checkpoint": json.dumps(meta)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`: ``(model_state, state)``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path} is not a readable safetensors checkpoint ({e})") from e
    if metadata.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robin_plugin training checkpoint (format {metadata.get('format')!r}, expected {FORMAT!r})")
    try:
        meta = json.loads(metadata["robin_checkpoint"])
        state = unflatten_state(meta, tensors)
    except CheckpointError as e:
        raise CheckpointError(f"{path} has corrupt checkpoint metadata ({e})") from e
    except (KeyError, TypeError, ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        raise CheckpointError(f"{path} has corrupt checkpoint metadata ({type(e).__name__}: {e})") from e
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} has corrupt checkpoint metadata (the state is a {type(state).__name__}, expected a mapping)")
    model_state = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    return model_state, state
