"""The original AutoAttack (PyPI ``pyautoattack``) as a cross-check of robin's own.

:func:`reference_autoattack` runs Croce & Hein's implementation, version "standard", on the
same points. pyautoattack reports the accuracy after each attack only in its log, so the run's
``auto-attack`` log records are captured (and kept out of the user's log) and
:func:`parse_autoattack_log` reads the figures back. ``pyautoattack`` is an optional
dependency (``pip install "robin_plugin[reference]"``), imported only when the check runs.
"""
from __future__ import annotations

import contextlib
import logging
import re
import time
from collections.abc import Iterable, Iterator
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import torch
import torch.nn as nn

from ..errors import RobinError
from ..pgd import check_eps
from ..rng import isolated_rng
from .attacks import STANDARD_ATTACKS
from .measure import accuracy

__all__ = ["parse_autoattack_log", "reference_autoattack", "stage_seconds"]

logger = logging.getLogger(__name__)

_AFTER_RE = re.compile(r"robust accuracy after ([A-Z\-]+): ([0-9.]+)%")
_TOTAL_RE = re.compile(r"robust accuracy after ([A-Z\-]+): [0-9.]+% \(total time ([0-9.]+) s\)")


def stage_seconds(records: Iterable[tuple[int, str]]) -> dict[str, float]:
    """Seconds of each attack stage from pyautoattack's log (its cumulative "total time", 0.1 s
    resolution; the first stage includes the clean-accuracy pass)."""
    out: dict[str, float] = {}
    last = 0.0
    for _, msg in records:
        m = _TOTAL_RE.search(msg)
        if m:
            total = float(m.group(2))
            out[m.group(1).lower()] = total - last
            last = total
    return out


def _dist_version(dist: str) -> str:
    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


@contextlib.contextmanager
def _captured_log(name: str) -> Iterator[list[tuple[int, str]]]:
    """Collect the ``(level, message)`` records of logger ``name`` in the block, and keep them out of the root log."""
    records: list[tuple[int, str]] = []

    class _Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelno, record.getMessage()))

    target = logging.getLogger(name)
    handler, old_level, old_propagate = _Capture(level=logging.DEBUG), target.level, target.propagate
    target.addHandler(handler)
    target.setLevel(logging.DEBUG)
    target.propagate = False
    try:
        yield records
    finally:
        target.removeHandler(handler)
        target.setLevel(old_level)
        target.propagate = old_propagate


def parse_autoattack_log(records: Iterable[tuple[int, str]]) -> tuple[dict[str, float], list[str]]:
    """Read pyautoattack's log: the robust accuracy after each attack, and its warnings.

    Args:
        records: ``(level, message)`` pairs, as logged by the ``auto-attack`` logger.

    Returns:
        ``({attack: robust accuracy as a fraction}, [warning messages])``; attack names are
        lower-case (``"apgd-ce"``), as in :data:`~robin_plugin.eval.attacks.STANDARD_ATTACKS`.
    """
    after: dict[str, float] = {}
    warnings: list[str] = []
    for level, msg in records:
        m = _AFTER_RE.search(msg)
        if m:
            after[m.group(1).lower()] = float(m.group(2)) / 100.0
        if level >= logging.WARNING:
            warnings.append(msg)
    return after, warnings


def reference_autoattack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    batch_size: int = 250,
    seed: int = 0,
    attacks: tuple[str, ...] = STANDARD_ATTACKS,
) -> dict[str, Any]:
    """Run the original AutoAttack (PyPI ``pyautoattack``, version "standard") on the same points.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to logits; must be in eval mode.
        images: (N, C, H, W) floats in [0, 1]; labels: (N,) int64.
        eps: Linf radius in [0, 1] pixel units.
        attacks: the components; anything but the standard four in order runs as "custom".

    Returns:
        ``{"clean_acc", "robust_acc_after": {attack: acc}, "autoattack_acc", "robust": [per-point
        verdict], "seconds", "stage_seconds": {attack: s}, "warnings", "version"}``.

    Raises:
        RobinError: ``pyautoattack`` is not installed (``pip install pyautoattack``).
    """
    try:
        import pyautoattack  # optional: only this cross-check needs it
    except ImportError as e:
        raise RobinError("the reference cross-check needs the original AutoAttack: pip install pyautoattack==0.2.0") from e
    eps = check_eps(eps)
    device = next(model.parameters()).device
    standard = tuple(attacks) == STANDARD_ATTACKS
    aa = pyautoattack.AutoAttack(model, device=device, eps=eps, norm="Linf", seed=seed,
                                 version="standard" if standard else "custom", **({} if standard else {"attacks": list(attacks)}))
    if not standard:  # apply the standard strengths to the custom list
        aa._set_version("standard")
        aa.attacks_to_run = list(attacks)
    t = time.perf_counter()
    with _captured_log("auto-attack") as records, isolated_rng():
        _, y_adv = aa.run_standard_evaluation(images, labels, batch_size=batch_size)
    seconds = time.perf_counter() - t
    after, warnings = parse_autoattack_log(records)
    for msg in warnings:
        logger.warning("pyautoattack: %s", msg)
    robust = y_adv.to(labels.device) == labels
    return {
        "clean_acc": accuracy(model, images, labels, batch_size=batch_size),
        "robust_acc_after": after,
        "autoattack_acc": robust.float().mean().item(),
        "robust": robust.tolist(),
        "seconds": seconds,
        "stage_seconds": stage_seconds(records),
        "warnings": warnings,
        "version": _dist_version("pyautoattack"),
    }
