"""The mutable state that the training loop and its hooks share."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn as nn

__all__ = ["TrainState"]


@dataclass
class TrainState:
    """What hooks read and (for modifiers) change.

    A plain PyTorch loop creates one, updates ``epoch`` / the batch fields as it goes and fires
    the events; :class:`robin_plugin.training.Trainer` does the same (and fills ``net``,
    ``hooks`` and ``best``).

    Attributes:
        model: the model being trained (inputs in [0, 1]).
        optimizer: optimizer over the scores (or weights for a dense twin).
        epochs: total number of epochs.
        steps_per_epoch: optimizer steps in one epoch.
        epoch: current epoch, 0-based.
        batch_idx: batch within the epoch, 0-based.
        step: optimizer steps done so far in the whole run.
        x, y, index: clean (augmented) batch (N, C, H, W) in [0, 1], labels (N,), dataset indices (N,).
        crop_flip: augmentation parameters of the batch, when the loop augments (else None).
        x_adv: adversarial batch made at BATCH_START (same shape as x).
        loss: training loss of the batch (a scalar tensor), set by a hook at ``Event.LOSS``.
        batch_metrics: per-batch numbers, e.g. ``train/loss``, ``train/robust_acc``.
        metrics: per-epoch numbers, namespaced: ``train/*``, ``val/*``, ``prune/*``, ``lr``.
        net: the module the training forward pass goes through: ``model`` itself (a None given
            here becomes ``model``), or its DistributedDataParallel wrapper under ``torchrun`` so
            that gradients are all-reduced. Loss hooks call ``state.net``; attacks, checks and
            evaluation call ``state.model``.
        hooks: the loop's hooks in firing order (the Trainer fills it; ``Checkpointing`` saves
            each one's state by name).
        best: the best validation record so far, e.g. ``{"val/robust_acc": 0.7,
            "val/clean_acc": 0.8, "epoch": 3}`` (``BestModel`` keeps it; ``{}`` before any).
    """

    model: nn.Module
    optimizer: torch.optim.Optimizer | None = None
    epochs: int = 1
    steps_per_epoch: int = 1
    epoch: int = 0
    batch_idx: int = 0
    step: int = 0
    x: torch.Tensor | None = None
    y: torch.Tensor | None = None
    index: torch.Tensor | None = None
    crop_flip: Any = None
    x_adv: torch.Tensor | None = None
    loss: torch.Tensor | None = None
    batch_metrics: dict[str, float] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    net: nn.Module | None = None
    hooks: list[Any] = field(default_factory=list)
    best: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.net is None:
            self.net = self.model

    @property
    def progress(self) -> float:
        """Fraction of training done, in [0, 1]: (epoch + batch_idx / steps_per_epoch) / epochs."""
        return min(1.0, (self.epoch + self.batch_idx / max(1, self.steps_per_epoch)) / max(1, self.epochs))

    def set_batch(self, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor | None = None, crop_flip: Any = None) -> None:
        """Start a new batch: store it and clear what the previous batch left."""
        self.x, self.y, self.index, self.crop_flip = x, y, index, crop_flip
        self.x_adv = None
        self.loss = None
        self.batch_metrics = {}
