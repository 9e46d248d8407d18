"""Schedules as pure functions of training progress (a float in [0, 1])."""
from __future__ import annotations

import math
from collections.abc import Sequence

from ..errors import ConfigError
from ..pruning import check_keep_ratio

__all__ = ["progressive_keep_ratio", "cosine_lr", "one_cycle_lr", "step_lr", "lr_at", "lr_at_epoch", "LR_SCHEDULES"]

LR_SCHEDULES = ("cosine", "onecycle", "step", "constant")
"""Names :func:`lr_at` (and ``TrainConfig.lr_schedule``) accepts."""


def progressive_keep_ratio(progress: float, target: float, stages: int) -> float:
    """Keep ratio at ``progress`` for a geometric schedule from 1 down to ``target``.

    Training is cut into ``stages`` equal stages; stage j (0-based) keeps
    ``target ** ((j + 1) / stages)``, so the last stage keeps ``target`` and ``stages = 1``
    keeps ``target`` from the start.

    Args:
        progress: fraction of training done, in [0, 1].
        target: final keep ratio, in (0, 1].
        stages: number of stages, >= 1 (``TrainConfig.prune_steps``).
    """
    target = check_keep_ratio(target)
    if isinstance(stages, bool) or not isinstance(stages, int) or stages < 1:
        raise ConfigError(f"prune_steps (the number of pruning stages) must be an integer >= 1, got {stages!r}")
    if not 0.0 <= progress <= 1.0:
        raise ConfigError(f"progress must be in [0, 1], got {progress!r}")
    stage = min(int(progress * stages), stages - 1)
    return target ** ((stage + 1) / stages)


def cosine_lr(progress: float, base_lr: float) -> float:
    """Cosine decay from ``base_lr`` at progress 0 to 0 at progress 1."""
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * progress))


def one_cycle_lr(progress: float, base_lr: float, peak: float = 0.4) -> float:
    """One cycle: linear from 0 up to ``base_lr`` at ``peak`` (fraction of training), then linear
    down to 0 at progress 1; the cyclic schedule of fast FGSM training (Wong et al. 2020)."""
    if progress < peak:
        return base_lr * progress / peak
    return base_lr * max(0.0, 1.0 - progress) / (1.0 - peak)


def step_lr(progress: float, base_lr: float, milestones: Sequence[float] = (0.5, 0.75), gamma: float = 0.1) -> float:
    """``base_lr`` times ``gamma`` for every milestone (fraction of training) already passed."""
    return base_lr * gamma ** sum(progress >= m for m in milestones)


def lr_at(schedule: str, progress: float, base_lr: float, milestones: Sequence[float] = (0.5, 0.75)) -> float:
    """Learning rate of the named schedule (one of :data:`LR_SCHEDULES`) at ``progress``."""
    if schedule == "cosine":
        return cosine_lr(progress, base_lr)
    if schedule == "onecycle":
        return one_cycle_lr(progress, base_lr)
    if schedule == "step":
        return step_lr(progress, base_lr, milestones)
    if schedule == "constant":
        return base_lr
    raise ConfigError(f"unknown lr_schedule {schedule!r}; valid: {', '.join(LR_SCHEDULES)}")


def lr_at_epoch(schedule: str, epoch: float, epochs: int, base_lr: float, milestones: Sequence[float] = (0.5, 0.75),
                warmup_epochs: int = 0, steps_per_epoch: int = 1) -> float:
    """Learning rate ``epoch`` epochs into training: a linear warm-up, then the named schedule.

    During the first ``warmup_epochs`` the rate rises linearly and reaches ``base_lr`` at the
    end of the warm-up: ``base_lr * (epoch + 1 / steps_per_epoch) / warmup_epochs``. With whole
    epochs and ``steps_per_epoch = 1`` that is the official code's ``lr * (e + 1) / W``
    (``code/util/schedulers.py``, ``_warmup_lr``). After it, :func:`lr_at` of the progress through
    the remaining ``epochs - warmup_epochs`` epochs (the official cosine runs over them too).

    Args:
        schedule: one of :data:`LR_SCHEDULES`.
        epoch: epochs done, in [0, epochs]: an integer for a rate set once per epoch, fractional
            (``epoch + batch / steps_per_epoch``) for one set every step.
        epochs: length of training in epochs (> ``warmup_epochs``).
        base_lr: the peak rate.
        milestones: for ``step``.
        warmup_epochs: epochs of warm-up (>= 0).
        steps_per_epoch: how many times per epoch the rate is set (1: once per epoch).
    """
    if warmup_epochs and epoch < warmup_epochs:
        return base_lr * (epoch + 1 / steps_per_epoch) / warmup_epochs
    progress = (epoch - warmup_epochs) / max(1e-12, epochs - warmup_epochs)
    return lr_at(schedule, min(1.0, max(0.0, progress)), base_lr, milestones)

