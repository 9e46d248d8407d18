"""Catastrophic-overfitting guard for single-step adversarial training.

Single-step adversarial training (FGSM with or without a random start, the paper's fast attack)
can suddenly "catastrophically overfit" (Wong, Rice and Kolter, ICLR 2020; Andriushchenko and
Flammarion, NeurIPS 2020): within a few hundred steps the model learns to defeat its own
single-step attack while its accuracy under a multi-step attack collapses to about zero. The
training metric then looks fine (it even rises); only a multi-step attack shows the collapse.

:class:`CatastrophicOverfittingGuard` measures PGD accuracy on a small fixed held-out batch every
``every`` optimizer steps and compares it with the training attack's accuracy over the same steps.
The rule (:func:`is_collapse`), stated before any run: a check is a **collapse** when the training
attack's accuracy is more than ``gap`` (default 0.3) above the PGD accuracy **and** the PGD
accuracy is either more than ``drop`` (default 0.2) below the best PGD accuracy of the run so far
or, after the first epoch, under ``floor`` (default 0.05). Then it does
what the user chose: ``warn`` (log it, count it), ``stop`` (raise
:class:`CatastrophicOverfittingError`), or ``rollback`` (restore the model and optimizer of the
last good check and continue with half the attack step, at most ``max_rollbacks`` times, then
stop).
"""
from __future__ import annotations

import copy
import logging
from typing import Any

import torch
import torch.nn as nn

from .._checks import is_int
from ..data.base import to_float
from ..errors import ConfigError, RobinError
from ..pgd import pgd_attack
from ..rng import derive_seed, isolated_rng
from .attacks import AdversarialTraining
from .events import Hook
from .state import TrainState

__all__ = ["ACTIONS", "SINGLE_STEP_ATTACKS", "CatastrophicOverfittingError", "CatastrophicOverfittingGuard", "is_collapse"]

_log = logging.getLogger(__name__)

ACTIONS = ("warn", "stop", "rollback")
SINGLE_STEP_ATTACKS = ("ffgsm", "fgsm", "fast")
"""Training attacks the Trainer guards by default (``TrainConfig.co_guard``)."""


class CatastrophicOverfittingError(RobinError, RuntimeError):
    """Training stopped: the guard saw PGD accuracy collapse while the training attack's rose."""


def is_collapse(pgd_acc: float, best_pgd_acc: float, train_acc: float, *, drop: float = 0.2, gap: float = 0.3,
                floor: float = 0.05, warm: bool = True) -> bool:
    """The guard's rule (accuracies in [0, 1]): the training attack's accuracy is more than ``gap``
    above the PGD accuracy, and the PGD accuracy either fell more than ``drop`` below the best so
    far or, once ``warm`` (after the first epoch), is under ``floor`` (a run that collapsed before
    it was ever robust)."""
    return train_acc - pgd_acc > gap and (pgd_acc < best_pgd_acc - drop or (warm and pgd_acc < floor))


class CatastrophicOverfittingGuard(Hook):
    """Watch single-step adversarial training for catastrophic overfitting (see the module docstring).

    Args:
        adversarial: the run's :class:`AdversarialTraining` hook (its attack is made safer on rollback).
        images, labels: the fixed held-out check batch, (N, C, H, W) in [0, 1] (or uint8) and (N,).
        eps: Linf radius of the check's PGD (the training eps).
        pgd_steps: iterations of the check's PGD (step eps / 4, random start). Default 5.
        every: optimizer steps between checks. Default 50.
        action: ``"warn"``, ``"stop"`` or ``"rollback"``. Default ``"warn"``.
        drop, gap: the thresholds of :func:`is_collapse`. Defaults 0.2 and 0.3.
        max_rollbacks: rollbacks before the guard stops the run. Default 3.
        seed: seed of the check's random starts (an isolated RNG: training randomness is untouched).

    Logs ``guard/pgd_acc`` and ``guard/train_acc`` (batch metrics at each check, so the progress
    line shows them), and per epoch ``guard/pgd_acc``, ``guard/train_acc`` (the last check) and
    ``guard/collapses`` (checks that were collapses so far) in ``state.metrics`` (metrics.csv).
    """

    def __init__(self, adversarial: AdversarialTraining, images: torch.Tensor, labels: torch.Tensor, *, eps: float,
                 pgd_steps: int = 5, every: int = 50, action: str = "warn", drop: float = 0.2, gap: float = 0.3,
                 max_rollbacks: int = 3, seed: int = 0):
        if action not in ACTIONS:
            raise ConfigError(f"guard action must be one of {', '.join(ACTIONS)}, got {action!r}")
        for name, v in (("pgd_steps", pgd_steps), ("every", every), ("max_rollbacks", max_rollbacks)):
            if not is_int(v) or v < (0 if name == "max_rollbacks" else 1):
                raise ConfigError(f"guard {name} must be a positive integer, got {v!r}")
        if not (isinstance(images, torch.Tensor) and images.dim() == 4 and len(images) == len(labels) and len(images) > 0):
            raise ConfigError("the guard needs a non-empty check batch: images (N, C, H, W) and labels (N,)")
        self.adversarial, self.eps, self.pgd_steps, self.every = adversarial, float(eps), pgd_steps, every
        self.action, self.drop, self.gap, self.max_rollbacks, self.seed = action, drop, gap, max_rollbacks, seed
        self.images = to_float(images)  # uint8 -> [0, 1]; float16 / 64 -> float32
        self.labels = labels.long()
        self.best = -1.0
        self.collapses = 0
        self.rollbacks = 0
        self.last: dict[str, float] = {}
        self._train_accs: list[float] = []
        self._snapshot: dict[str, Any] | None = None

    # --- measurement ------------------------------------------------------------------------
    def measure(self, model: nn.Module, step: int) -> float:
        """PGD accuracy of ``model`` on the check batch (eval mode, isolated RNG)."""
        device = next(model.parameters()).device
        x, y = self.images.to(device), self.labels.to(device)
        was_training = model.training
        attack = pgd_attack(model, self.eps, self.pgd_steps)  # step eps / 4
        try:
            with isolated_rng(derive_seed(self.seed, "guard", step), device):
                x_adv = attack(x, y)
            model.eval()
            with torch.no_grad():
                return (model(x_adv).argmax(1) == y).float().mean().item()
        finally:
            model.train(was_training)

    # --- events -----------------------------------------------------------------------------
    def on_batch_end(self, state: TrainState) -> None:
        acc = state.batch_metrics.get("train/robust_acc")
        if acc is not None:
            self._train_accs.append(acc)
        if state.step % self.every:
            return
        pgd_acc = self.measure(state.model, state.step)
        train_acc = sum(self._train_accs) / len(self._train_accs) if self._train_accs else float("nan")
        self._train_accs = []
        self.last = {"guard/pgd_acc": pgd_acc, "guard/train_acc": train_acc}
        state.batch_metrics.update(self.last)
        warm = state.step > state.steps_per_epoch  # the floor applies from the second epoch on
        if is_collapse(pgd_acc, self.best, train_acc, drop=self.drop, gap=self.gap, warm=warm):
            self.collapses += 1
            self._act(state, pgd_acc, train_acc)
            return
        self.best = max(self.best, pgd_acc)
        if self.action == "rollback":
            self._snapshot = {"model": copy.deepcopy(state.model.state_dict()),
                              "optimizer": copy.deepcopy(state.optimizer.state_dict()) if state.optimizer else None}

    def _act(self, state: TrainState, pgd_acc: float, train_acc: float) -> None:
        what = (f"catastrophic overfitting at step {state.step}: PGD-{self.pgd_steps} accuracy {pgd_acc:.3f} on the "
                f"check batch (best {self.best:.3f}) while the training attack's accuracy is {train_acc:.3f}")
        if self.action == "warn":
            _log.warning("guard: %s", what)
            return
        if self.action == "stop" or self.rollbacks >= self.max_rollbacks or self._snapshot is None:
            why = "" if self.action == "stop" else (" (no good state to roll back to)" if self._snapshot is None
                                                    else f" ({self.rollbacks} rollbacks already)")
            raise CatastrophicOverfittingError(f"{what}; training stopped{why}")
        state.model.load_state_dict(self._snapshot["model"])
        if state.optimizer is not None and self._snapshot["optimizer"] is not None:
            state.optimizer.load_state_dict(self._snapshot["optimizer"])
        adv = self.adversarial
        if adv.attack_name in SINGLE_STEP_ATTACKS:  # PGD-2 with step eps / 2 does not overfit catastrophically (Wong et al.)
            adv.attack_name, adv.steps, adv.step_size = "pgd", 2, adv.eps / 2
        else:
            adv.step_size = adv.step_size / 2
        adv.build(state.model)
        self.rollbacks += 1
        _log.warning("guard: %s; rolled back to the last good check, training continues with PGD-%d, step %.4g "
                     "(rollback %d of %d)", what, adv.steps, adv.step_size, self.rollbacks, self.max_rollbacks)

    def on_epoch_end(self, state: TrainState) -> None:
        state.metrics.update(self.last)
        state.metrics["guard/collapses"] = float(self.collapses)

    # --- resume -----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        adv = self.adversarial
        return {"best": self.best, "collapses": self.collapses, "rollbacks": self.rollbacks, "last": dict(self.last),
                "attack": adv.attack_name, "attack_steps": adv.steps, "step_size": adv.step_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = float(state["best"])
        self.collapses, self.rollbacks = int(state["collapses"]), int(state["rollbacks"])
        self.last = {str(k): float(v) for k, v in dict(state.get("last", {})).items()}
        adv = self.adversarial
        attack = (str(state.get("attack", adv.attack_name)), int(state.get("attack_steps", adv.steps)), float(state["step_size"]))
        if attack != (adv.attack_name, adv.steps, adv.step_size):  # a rollback changed the training attack
            adv.attack_name, adv.steps, adv.step_size = attack
            adv.attack = None  # rebuilt at the next batch
