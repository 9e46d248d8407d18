"""Adversarial training of robin models as hooks, a minimal Trainer, presets and the CLI run.

The Trainer knows no algorithm: the learning-rate schedule, progressive pruning, augmentation,
the adversarial attack and loss, best-model tracking, logging, the catastrophic-overfitting
guard and checkpointing are hooks on the events of :class:`Event` (the loop is in its module's
docstring), usable in a plain PyTorch loop as well.
"""
from ..errors import CheckpointError
from .attacks import ATTACKS, AdversarialTraining, PersistentFGSM, trades_loss
from ..formats.checkpoint import save_checkpoint
from .checkpoint import CHECKPOINT, load_checkpoint
from .config import PRESETS, TrainConfig, apply_overrides, get_preset
from .events import Event, Hook, fire
from .guard import CatastrophicOverfittingError, CatastrophicOverfittingGuard, is_collapse
from .hooks import BestModel, Checkpointing, LRSchedule, MetricLogger, ProgressivePruning, RandomCropFlip
from .metrics import clean_and_pgd_accuracy
from .run import load_run, resolve_attack_sizes, train
from .schedules import LR_SCHEDULES, cosine_lr, lr_at, one_cycle_lr, progressive_keep_ratio, step_lr
from .state import TrainState
from .trainer import Trainer, default_hooks, epoch_order, make_optimizer

__all__ = [
    "ATTACKS", "AdversarialTraining", "PersistentFGSM", "trades_loss",
    "CHECKPOINT", "CheckpointError", "load_checkpoint", "save_checkpoint",
    "PRESETS", "TrainConfig", "apply_overrides", "get_preset",
    "Event", "Hook", "fire",
    "BestModel", "Checkpointing", "LRSchedule", "MetricLogger", "ProgressivePruning", "RandomCropFlip",
    "CatastrophicOverfittingError", "CatastrophicOverfittingGuard", "is_collapse",
    "clean_and_pgd_accuracy", "load_run", "resolve_attack_sizes", "train",
    "cosine_lr", "lr_at", "one_cycle_lr", "progressive_keep_ratio", "step_lr", "LR_SCHEDULES",
    "TrainState", "Trainer", "default_hooks", "epoch_order", "make_optimizer",
]
