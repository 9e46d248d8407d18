"""The resume file of an evaluation: the robust flags written after every attack batch.

A long AutoAttack run writes its state to a JSON file (atomically) after every batch; a rerun
with the same model, inputs and settings reads it back and skips the attacks already done. The
file is keyed by a hash of the points, the labels and the settings, which hold the model's
fingerprint (:func:`model_fingerprint`), so the state of another evaluation or another model is
refused instead of silently mixed in, and every field is checked before use.

Layout (version 1)::

    {"version": 1, "key": "<sha256>", "robust": [true, false, ...],
     "robust_acc_after": {"apgd-ce": 0.41, ...}, "done": ["apgd-ce", ...], "seconds": {"clean": 0.2, ...}}
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .._checks import is_number
from ..errors import RobinError
from ..formats.compact import checksum  # names, dtypes, shapes and bytes of every tensor
from ..formats.files import parse_json
from ..io import atomic_write_json, read_limited

__all__ = ["STATE_VERSION", "load_state", "model_fingerprint", "save_state", "state_key"]

STATE_VERSION = 1
_MAX_STATE_BYTES = 256 * 2**20  # a state file holds one flag per point: ~10 bytes each


def model_fingerprint(model: torch.nn.Module) -> str:
    """The hex SHA-256 of ``model``'s state dict: every entry's name, dtype, shape and values.

    Two models with equal state dicts (the same checkpoint, on any device) share it; any changed
    score, weight, buffer or keep ratio changes it.
    """
    return bytes(checksum({k: v.detach().cpu() for k, v in model.state_dict().items()}).tolist()).hex()


def state_key(x: torch.Tensor, y: torch.Tensor, settings: Mapping[str, Any]) -> str:
    """The hex SHA-256 of the points ``x`` (N, C, H, W), the labels ``y`` (N,) and the JSON ``settings``."""
    h = hashlib.sha256()
    h.update(x.numpy().tobytes() if x.device.type == "cpu" else x.cpu().numpy().tobytes())
    h.update(y.cpu().numpy().tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def load_state(path: Path, key: str, n: int, attacks: Sequence[str]) -> dict[str, Any] | None:
    """Read and check a resume file: the same evaluation, and every field of the right type.

    Args:
        path: the state file; None is returned when it does not exist.
        key: :func:`state_key` of the evaluation being run.
        n: number of points evaluated.
        attacks: the attacks of this evaluation; the file may name only these.

    Returns:
        The state as written by :func:`save_state`, or None when there is no file.

    Raises:
        RobinError: the file is unreadable, malformed, or holds another evaluation's state.
    """
    if not path.exists():
        return None
    try:
        state = parse_json(read_limited(path, _MAX_STATE_BYTES))
        ok = state.get("version") == STATE_VERSION and state.get("key") == key and len(state["robust"]) == n
    except RecursionError:
        raise RobinError(f"cannot resume from {path}: not a valid evaluation state file (nested too deeply); "
                         "delete it to start over") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # FileContentError, size limit
        raise RobinError(f"cannot resume from {path}: not a valid evaluation state file ({e}); delete it to start over") from e
    if not ok:
        raise RobinError(
            f"{path} holds the state of a different evaluation (other model inputs, points or settings); "
            f"delete it or pass another state path"
        )

    def number(v: Any) -> bool:
        return is_number(v) and 0 <= v < math.inf

    problems = []
    if not all(isinstance(r, bool) for r in state["robust"]):
        problems.append("'robust' must be a list of true/false")
    after = state.get("robust_acc_after")
    if not isinstance(after, dict) or not all(k in attacks and number(v) and v <= 1 for k, v in after.items()):
        problems.append(f"'robust_acc_after' must map attacks among {list(attacks)} to fractions in [0, 1]")
    done = state.get("done")
    if not isinstance(done, list) or not all(isinstance(a, str) and a in attacks for a in done) or len(set(done)) != len(done):
        problems.append(f"'done' must list attacks among {list(attacks)}, each once")
    elif isinstance(after, dict) and set(after) != set(done):
        problems.append("'done' and 'robust_acc_after' must name the same attacks")
    seconds = state.get("seconds", {})
    if not isinstance(seconds, dict) or not all(isinstance(k, str) and number(v) for k, v in seconds.items()):
        problems.append("'seconds' must map stages to times >= 0")
    if problems:
        raise RobinError(f"cannot resume from {path}: not a valid evaluation state file ({'; '.join(problems)}); "
                         "delete it to start over")
    return state


def save_state(path: Path, key: str, robust: torch.Tensor, after: Mapping[str, float], done: Sequence[str],
               seconds: Mapping[str, float]) -> None:
    """Write the state atomically (a crash leaves the previous file, never half of one).

    Args:
        path: the state file.
        key: :func:`state_key` of the evaluation.
        robust: (N,) bool, True for points no attack has fooled yet.
        after: robust accuracy after each finished attack, fractions in [0, 1].
        done: the finished attacks, in run order.
        seconds: wall time per stage.
    """
    atomic_write_json(path, {"version": STATE_VERSION, "key": key, "robust": robust.tolist(),
                             "robust_acc_after": after, "done": done, "seconds": seconds})
