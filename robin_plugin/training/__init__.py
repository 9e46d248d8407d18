"""Adversarial training of robin models as hooks, a minimal Trainer, presets and the CLI run."""
from .attacks import ATTACKS, AdversarialTraining, PersistentFGSM, trades_loss
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .config import PRESETS, TrainConfig, apply_overrides, get_preset
from .events import Event
from .guard import CatastrophicOverfittingError, CatastrophicOverfittingGuard, is_collapse
from .hooks import Hook, MetricLogger, ProgressivePruning, fire
from .metrics import clean_and_pgd_accuracy
from .run import load_run, resolve_attack_sizes, train
from .schedules import cosine_lr, lr_at, progressive_keep_ratio, step_lr
from .state import TrainState
from .trainer import Trainer, build_model, epoch_order, make_optimizer

__all__ = [
    "ATTACKS", "AdversarialTraining", "PersistentFGSM", "trades_loss",
    "CheckpointError", "load_checkpoint", "save_checkpoint",
    "PRESETS", "TrainConfig", "apply_overrides", "get_preset",
    "Event", "Hook", "MetricLogger", "ProgressivePruning", "fire",
    "CatastrophicOverfittingError", "CatastrophicOverfittingGuard", "is_collapse",
    "clean_and_pgd_accuracy", "load_run", "resolve_attack_sizes", "train",
    "cosine_lr", "lr_at", "progressive_keep_ratio", "step_lr",
    "TrainState", "Trainer", "build_model", "epoch_order", "make_optimizer",
]
