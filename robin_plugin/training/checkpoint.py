"""Checkpoints without pickle: nested state -> safetensors tensors + JSON metadata.

A checkpoint is ONE safetensors file written atomically. Its tensors are the model state dict
(``model/<key>``) and every tensor found in the optimizer, scheduler and hook states; the
metadata entry ``robin_checkpoint`` holds the rest as JSON, with tensors replaced by references.
Loading never executes code: safetensors holds raw arrays and JSON holds plain values.
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ..errors import RobinError
from ..io import atomic_write, canonicalize_safetensors_header

__all__ = ["CheckpointError", "flatten_state", "unflatten_state", "save_checkpoint", "load_checkpoint", "save_state_dict",
           "check_train_state"]

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
    metadata = {"format": FORMAT, "robin_checkpoint": json.dumps(meta)}
    return atomic_write(path, lambda tmp: _write(tensors, tmp, metadata))


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


def check_train_state(path: str | Path, state: dict[str, Any], steps_per_epoch: int) -> None:
    """Check the training state of a :class:`~robin_plugin.training.Trainer` checkpoint before it is used.

    A checkpoint is a file, so its metadata may have been edited or made elsewhere. This checks
    the fields the trainer reads: ``epoch`` (the last finished epoch, an integer >= 0), ``step``
    (optimizer steps so far: exactly ``(epoch + 1) * steps_per_epoch``), ``best`` (the best
    epoch's validation metrics), ``optimizer`` (an optimizer state dict), ``hooks`` and ``config``.

    Args:
        path: the checkpoint (for messages).
        state: the training state :func:`load_checkpoint` returned.
        steps_per_epoch: optimizer steps per epoch of the run that resumes.

    Raises:
        CheckpointError: naming the first bad field and what would be valid.
    """
    def bad(field: str, value: Any, valid: str) -> CheckpointError:
        return CheckpointError(f"{path}: checkpoint field {field!r} must be {valid}, got {_show(value)}")

    for key in ("epoch", "step", "best", "optimizer", "config"):
        if key not in state:
            raise CheckpointError(f"{path}: checkpoint lacks the field {key!r}; a training checkpoint has "
                                  "epoch, step, best, optimizer, hooks and config")
    epoch, step = state["epoch"], state["step"]
    if not _is_int(epoch) or epoch < 0:
        raise bad("epoch", epoch, "an integer >= 0 (the last finished epoch)")
    expected = (epoch + 1) * steps_per_epoch
    if not _is_int(step) or step != expected:
        raise bad("step", step, f"{expected} (optimizer steps after epoch {epoch} at {steps_per_epoch} steps per epoch; "
                                "a different training-set size or batch size gives another count)")
    best = state["best"]
    if not isinstance(best, dict) or not all(isinstance(k, str) for k in best):
        raise bad("best", best, "a mapping of metric names to numbers")
    for k, v in best.items():
        if not _is_number(v) or not _finite(v):
            raise bad(f"best.{k}", v, "a finite number")
    if "val/robust_acc" not in best or not -1.0 <= best["val/robust_acc"] <= 1.0:
        raise bad("best.val/robust_acc", best.get("val/robust_acc"), "a fraction in [0, 1] (or -1 before any validation)")
    best_epoch = best.get("epoch", -1)
    if not _is_int(best_epoch) or not -1 <= best_epoch <= epoch:
        raise bad("best.epoch", best_epoch, f"an integer in [-1, {epoch}]")
    opt = state["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list) \
            or not all(isinstance(g, dict) for g in opt["param_groups"]):
        raise bad("optimizer", opt, "an optimizer state dict {'state': {...}, 'param_groups': [{...}, ...]}")
    hooks = state.get("hooks", [])
    if not isinstance(hooks, list) or not all(isinstance(h, dict) and isinstance(h.get("type"), str)
                                              and isinstance(h.get("state"), dict) for h in hooks):
        raise bad("hooks", hooks, "a list of {'type': name, 'state': {...}}")
    if not isinstance(state["config"], dict):
        raise bad("config", state["config"], "the run's config as a mapping")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _show(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 80 else text[:77] + '...'}"
