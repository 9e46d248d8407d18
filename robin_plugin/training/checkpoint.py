"""Resuming a run: what a Trainer checkpoint holds, its checks, and restoring it into a run.

The file format (one safetensors file, tensors + JSON metadata) is
:mod:`robin_plugin.formats.checkpoint`. A :class:`~robin_plugin.training.Trainer` checkpoint
(written by the ``Checkpointing`` hook from :func:`training_state`, read back by
:func:`restore_training_state`) holds the model state and ``epoch`` (the last finished epoch),
``step``, ``best``, ``optimizer``, ``config`` and ``hooks``: one ``{"name", "type", "state"}``
entry per hook, restored into the hook of the same name. Files written before hooks had names
(entries without ``"name"``) are still read: their entries are matched to this run's hooks by
class name, in order.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn as nn

from .._checks import is_int, is_number
from ..errors import CheckpointError, RobinError
from ..formats.checkpoint import read_checkpoint
from ..layers.masked import MaskedLayer
from ..models.timm_loading import training_model_state

if TYPE_CHECKING:  # annotations only
    from .config import TrainConfig
    from .events import Hook
    from .state import TrainState

__all__ = ["CHECKPOINT", "check_train_state", "load_checkpoint", "restore_training_state", "training_state"]

_log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint.safetensors"
"""File name of a run's checkpoint in its ``out_dir``."""


def load_checkpoint(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`~robin_plugin.formats.checkpoint.save_checkpoint`:
    ``(model_state, state)``, the model's state dict and the nested training state.

    Raises:
        CheckpointError: missing, not a training checkpoint, unreadable, or corrupt metadata.
    """
    tensors, state = read_checkpoint(path)
    return training_model_state(tensors), state


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
    if not is_int(epoch) or epoch < 0:
        raise bad("epoch", epoch, "an integer >= 0 (the last finished epoch)")
    expected = (epoch + 1) * steps_per_epoch
    if not is_int(step) or step != expected:
        raise bad("step", step, f"{expected} (optimizer steps after epoch {epoch} at {steps_per_epoch} steps per epoch; "
                                "a different training-set size or batch size gives another count)")
    best = state["best"]
    if not isinstance(best, dict) or not all(isinstance(k, str) for k in best):
        raise bad("best", best, "a mapping of metric names to numbers")
    for k, v in best.items():
        if not is_number(v) or not _finite(v):
            raise bad(f"best.{k}", v, "a finite number")
    if "val/robust_acc" not in best or not -1.0 <= best["val/robust_acc"] <= 1.0:
        raise bad("best.val/robust_acc", best.get("val/robust_acc"), "a fraction in [0, 1] (or -1 before any validation)")
    best_epoch = best.get("epoch", -1)
    if not is_int(best_epoch) or not -1 <= best_epoch <= epoch:
        raise bad("best.epoch", best_epoch, f"an integer in [-1, {epoch}]")
    opt = state["optimizer"]
    if not isinstance(opt, dict) or not isinstance(opt.get("state"), dict) or not isinstance(opt.get("param_groups"), list) \
            or not all(isinstance(g, dict) for g in opt["param_groups"]):
        raise bad("optimizer", opt, "an optimizer state dict {'state': {...}, 'param_groups': [{...}, ...]}")
    hooks = state.get("hooks", [])
    if not isinstance(hooks, list) or not all(isinstance(h, dict) and isinstance(h.get("type"), str)
                                              and isinstance(h.get("name", ""), str) and isinstance(h.get("state"), dict)
                                              for h in hooks):
        raise bad("hooks", hooks, "a list of {'name': hook name, 'type': class name, 'state': {...}}")
    names = [h["name"] for h in hooks if "name" in h]
    if len(set(names)) != len(names):
        raise bad("hooks", names, "entries with distinct names")
    if not isinstance(state["config"], dict):
        raise bad("config", state["config"], "the run's config as a mapping")


def training_state(state: TrainState, config: dict[str, Any]) -> dict[str, Any]:
    """The training state a Trainer checkpoint holds besides the model (see the module docstring).

    Args:
        state: the loop's state after an epoch: ``epoch`` (finished), ``step``, ``best``,
            ``optimizer`` and ``hooks``.
        config: the run's config as a mapping.
    """
    if state.optimizer is None:
        raise RobinError("a training checkpoint needs state.optimizer")
    return {
        "epoch": state.epoch,
        "step": state.step,
        "best": state.best,
        "optimizer": state.optimizer.state_dict(),
        "hooks": [{"name": h.name, "type": type(h).__name__, "state": h.state_dict()} for h in state.hooks],
        "config": config,
    }


def restore_training_state(path: str | Path, state: TrainState, config: TrainConfig) -> int:
    """Load a Trainer checkpoint into ``state``; every field is checked before it is used.

    Restores the model, the optimizer, every hook's state (by name; each hook checks its own),
    ``state.best`` and ``state.step``. The config must equal ``config`` except for ``out_dir``,
    ``progress``, ``device`` and ``epochs`` (keys added since the file was written count as their
    default); the fixed weights must be the ones ``config.seed`` regenerates.

    Args:
        path: the checkpoint file.
        state: the state of the run that resumes (``model``, ``optimizer``, ``hooks``,
            ``steps_per_epoch`` set).
        config: that run's config.

    Returns:
        The last finished epoch of the checkpoint (the run continues with the next one).

    Raises:
        CheckpointError: naming the file and the first field that does not fit.
    """
    path = Path(path)
    model_state, saved = load_checkpoint(path)
    _check_config(path, saved.get("config", {}), config)
    check_train_state(path, saved, state.steps_per_epoch)
    _check_model_state(path, state.model, model_state, config.seed)
    try:
        state.model.load_state_dict(model_state)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit this model: {str(e)[:300]}") from e
    _load_optimizer(path, state.optimizer, saved["optimizer"])
    _restore_hooks(path, state.hooks, saved.get("hooks", []))
    state.best = saved["best"]
    state.step = saved["step"]
    return saved["epoch"]


def _check_config(path: Path, saved: Any, config: TrainConfig) -> None:
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: checkpoint field 'config' must be the run's config as a mapping, "
                              f"got {type(saved).__name__}")
    mine = config.to_dict()
    ignore = {"out_dir", "progress", "device", "epochs"}
    defaults = type(config)().to_dict()  # keys added since the checkpoint was written count as their default
    diff = sorted(k for k in set(saved) | set(mine) if k not in ignore and saved.get(k, defaults.get(k)) != mine.get(k))
    if diff:
        raise CheckpointError(
            f"{path} was written by a run with a different config ({', '.join(f'{k}: {saved.get(k)!r} != {mine.get(k)!r}' for k in diff[:5])}); "
            "resume with the same config or start a new out_dir"
        )


def _check_model_state(path: Path, model: nn.Module, model_state: dict[str, torch.Tensor], seed: int) -> None:
    """Finite values everywhere, and the fixed weights the seed regenerates (never trained)."""
    for key, t in model_state.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise CheckpointError(f"{path}: model tensor {key!r} holds NaN or Inf; a checkpoint to resume from "
                                  "must hold finite scores, weights and statistics")
    current = model.state_dict()
    for name, module in model.named_modules():
        if not isinstance(module, MaskedLayer):
            continue
        key = f"{name}.weight" if name else "weight"
        saved, fresh = model_state.get(key), current.get(key)
        if saved is None or fresh is None or saved.shape != fresh.shape:
            continue  # load_state_dict names missing keys and shape mismatches
        fresh = fresh.detach().cpu()
        if saved.dtype != fresh.dtype or not torch.equal(saved, fresh):
            raise CheckpointError(
                f"{path}: the fixed weights {key!r} differ from the ones seed {seed} regenerates for "
                "this model; fixed weights are never trained, so the checkpoint was altered or made for another "
                "model or seed"
            )


def _load_optimizer(path: Path, optimizer: torch.optim.Optimizer, saved: dict[str, Any]) -> None:
    """Load the optimizer state; its settings and buffers must fit this run."""
    fixed = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")
    want = [{k: g.get(k) for k in fixed} for g in optimizer.param_groups]
    try:
        optimizer.load_state_dict(saved)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
        raise CheckpointError(f"{path}: the optimizer state does not fit this run's optimizer "
                              f"({type(e).__name__}: {str(e)[:200]})") from e
    for g, w in zip(optimizer.param_groups, want):
        for k, v in w.items():
            if g.get(k) != v:
                raise CheckpointError(f"{path}: optimizer setting {k!r} is {g.get(k)!r}, but the run's config gives {v!r}")
        lr = g.get("lr")
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not 0 <= lr < math.inf:
            raise CheckpointError(f"{path}: optimizer setting 'lr' must be a finite number >= 0, got {lr!r}")
        for prm in g["params"]:
            for k, v in optimizer.state.get(prm, {}).items():
                if v is None:
                    continue
                if not isinstance(v, torch.Tensor) or v.shape != prm.shape:
                    got = f"shape {tuple(v.shape)}" if isinstance(v, torch.Tensor) else type(v).__name__
                    raise CheckpointError(f"{path}: optimizer buffer {k!r} must be a tensor of the parameter's "
                                          f"shape {tuple(prm.shape)}, got {got}")
                if v.is_floating_point() and not torch.isfinite(v).all():
                    raise CheckpointError(f"{path}: optimizer buffer {k!r} holds NaN or Inf")


def _restore_hooks(path: Path, hooks: Sequence[Hook], entries: list[dict[str, Any]]) -> None:
    """Give each hook the saved state of its name; each hook checks what it gets in ``load_state_dict``.

    Files written before hooks had names hold ``{"type", "state"}`` entries in the old trainer's
    hook order: the i-th entry of a class goes to the i-th hook of that class here.
    """
    if all("name" in e for e in entries):
        saved: dict[Any, dict[str, Any]] = {e["name"]: e for e in entries}
        keyed = [(h.name, h) for h in hooks]
    else:
        saved = dict(zip(_by_class([e["type"] for e in entries]), entries))
        keyed = list(zip(_by_class([type(h).__name__ for h in hooks]), hooks))
    for key, hook in keyed:
        entry = saved.pop(key, None)
        if entry is None:
            continue  # a hook the checkpoint's run did not have starts fresh
        where = f"{path}: hook {hook.name}"
        if entry["type"] != type(hook).__name__:
            raise CheckpointError(f"{where}: the checkpoint holds the state of a {entry['type']} under this name, "
                                  f"but this run's hook is a {type(hook).__name__}")
        try:
            hook.load_state_dict(entry["state"])
        except CheckpointError as e:
            raise CheckpointError(f"{where}: {e}") from e
        except (KeyError, TypeError, ValueError, IndexError, AttributeError, RuntimeError) as e:
            raise CheckpointError(f"{path}: the state of hook {hook.name} cannot be restored "
                                  f"({type(e).__name__}: {str(e)[:200]})") from e
    dropped = sorted(str(e.get("name", e["type"])) for e in saved.values() if e["state"])
    if dropped:
        _log.warning("%s holds the state of hooks this run does not have (%s); it is ignored", path, ", ".join(dropped))


def _by_class(types: list[str]) -> list[tuple[str, int]]:
    """``["A", "B", "A"]`` -> ``[("A", 1), ("B", 1), ("A", 2)]``: each class name with its occurrence."""
    seen: dict[str, int] = {}
    keys = []
    for t in types:
        seen[t] = seen.get(t, 0) + 1
        keys.append((t, seen[t]))
    return keys


def _finite(v: float) -> bool:
    try:
        return math.isfinite(v)
    except OverflowError:  # an int too large for a float
        return False


def _show(v: Any) -> str:
    text = repr(v)
    return f"{type(v).__name__} {text if len(text) <= 80 else text[:77] + '...'}"
