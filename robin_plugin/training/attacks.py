"""Training-time attacks (through torchattacks) and the ``AdversarialTraining`` hook.

- ``pgd``: PGD-k with a random start (Madry et al., ICLR 2018), ``torchattacks.PGD`` (:func:`robin_plugin.pgd.pgd_attack`).
- ``ffgsm``: FGSM with a random start ("fast" AT, Wong et al., ICLR 2020), ``torchattacks.FFGSM``.
- ``fgsm``: plain FGSM, one step of ``eps`` from the clean input (Goodfellow et al., ICLR 2015),
  ``torchattacks.FGSM``; the single-step attack most prone to catastrophic overfitting (an
  ablation, and how the guard's test provokes a collapse).
- ``fast``: the paper's fast variant: a per-sample perturbation kept across epochs, moved with
  the sample's crop and flip, one signed step from it (in the spirit of ATTA, Zheng et al.,
  CVPR 2020); :class:`PersistentFGSM`, built on ``torchattacks.Attack``.
- ``trades``: TRADES (Zhang et al., ICML 2019): ``torchattacks.TPGD`` for the inner
  maximisation and :func:`trades_loss`.

Attacks draw their random starts inside an isolated RNG seeded from ``(seed, step)``, so the
training randomness (shuffling, augmentation) never depends on which attack ran, and a resumed
run draws the same starts. (Some torchattacks attacks re-seed the global RNG.) ``pgd`` is the
package's one PGD, :func:`robin_plugin.pgd.pgd_attack`; the seeding helpers are in
:mod:`robin_plugin.rng`.
"""
from __future__ import annotations

import warnings
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from torchattacks.attack import Attack

from ..data.augment import apply_crop_flip, invert_crop_flip
from ..errors import ConfigError, UnknownNameError, closest
from ..pgd import check_eps as _check_eps
from ..pgd import pgd_attack
from ..rng import derive_seed, isolated_rng
from ..errors import CheckpointError
from .distributed import all_gather_cat
from .events import Hook
from .state import TrainState

__all__ = ["ATTACKS", "PersistentFGSM", "AdversarialTraining", "trades_loss", "isolated_rng", "check_eps"]

ATTACKS = ("pgd", "ffgsm", "fgsm", "fast", "trades", "none")


def check_eps(name: str, value: float, upper: float = 1.0) -> float:
    """Deprecated: :func:`robin_plugin.pgd.check_eps` ``(value, name, upper)`` (the arguments in that order)."""
    warnings.warn("robin_plugin.training.attacks.check_eps(name, value) is now robin_plugin.pgd.check_eps(value, name); "
                  "the old one goes in the next release", DeprecationWarning, stacklevel=2)
    return _check_eps(value, name, upper)


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, labels: torch.Tensor, beta: float = 6.0) -> torch.Tensor:
    """TRADES objective: CE(clean) + beta * KL(p_clean || p_adv), averaged over the batch.

    Args:
        logits_clean, logits_adv: (N, C) logits on clean and adversarial inputs.
        labels: (N,) class indices.
        beta: robustness weight (6 in the TRADES paper and here).
    """
    natural = F.cross_entropy(logits_clean, labels)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return natural + beta * robust


class PersistentFGSM(Attack):
    r"""The paper's fast attack: one signed step from a per-sample perturbation kept across epochs.

    Distance: Linf. Each training sample i owns a perturbation ``delta_i`` (in the coordinates of
    the un-augmented image). For a batch, ``delta_i`` is moved through the sample's crop and flip,
    one step ``alpha * sign(grad)`` is taken, the result is projected to the eps-ball and the
    [0, 1] box, and stored back (pixels the crop did not see keep their old value).

    Arguments:
        model (nn.Module): model to attack (inputs in [0, 1]).
        num_samples (int): size of the training set (number of perturbations kept).
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): step size. (Default: 4/255)

    Shape:
        - images: (N, C, H, W) in [0, 1]; labels: (N,); index: (N,) dataset indices;
          crop_flip: the batch's augmentation parameters or None.
        - output: (N, C, H, W) adversarial images.

    Examples::
        >>> attack = PersistentFGSM(model, num_samples=len(train_set), eps=8/255, alpha=4/255)
        >>> adv_images = attack(images, labels, index, crop_flip)
    """

    def __init__(self, model: nn.Module, num_samples: int, eps: float = 8 / 255, alpha: float = 4 / 255):
        super().__init__("PersistentFGSM", model)
        self.eps, self.alpha, self.num_samples = eps, alpha, num_samples
        self.bank: torch.Tensor | None = None  # (num_samples, C, H, W), created on first use
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None, crop_flip: Any = None) -> torch.Tensor:
        if index is None:
            raise ConfigError("PersistentFGSM needs the dataset index of every sample in the batch")
        images = images.clone().detach().to(self.device)
        labels = labels.clone().detach().to(self.device)
        index = index.to(self.device)
        if self.bank is None:
            # start like FGSM-RS: uniform in the eps-ball (drawn from the isolated attack RNG)
            shape = (self.num_samples, *images.shape[1:])
            self.bank = (torch.rand(shape, device=self.device) * 2 - 1) * self.eps
        stored = self.bank[index]
        delta = stored if crop_flip is None else apply_crop_flip(stored, crop_flip)
        adv = torch.clamp(images + delta, 0, 1).detach().requires_grad_(True)
        cost = F.cross_entropy(self.get_logits(adv), labels)
        grad = torch.autograd.grad(cost, adv)[0]
        delta = torch.clamp(adv.detach() + self.alpha * grad.sign() - images, -self.eps, self.eps)
        adv = torch.clamp(images + delta, 0, 1).detach()
        moved = adv - images
        self.bank[index] = moved if crop_flip is None else invert_crop_flip(moved, crop_flip, stored)
        return adv


class AdversarialTraining(Hook):
    """Modifier: make ``state.x_adv`` at BATCH_START and set the training loss at LOSS.

    Args:
        attack: one of :data:`ATTACKS` (``none`` trains on clean inputs).
        eps: Linf radius in pixel units (e.g. 8/255 on CIFAR, 0.1 on Fashion-MNIST).
        step_size: attack step (PGD / TPGD step, FGSM / fast step).
        steps: PGD / TPGD iterations (default 10).
        trades_beta: TRADES weight (default 6).
        num_samples: training-set size (needed by ``fast`` only).
        seed: seed of the attack's random starts (an isolated RNG per step).
        sample_shape: (C, H, W) of the training images, if known: a restored ``fast``
            perturbation bank is checked against it.

    Attributes:
        attack_name: the training attack now (the catastrophic-overfitting guard may change it).
        attack: the torchattacks attack made from it (None before FIT_START and for ``none``).

    At LOSS it sets ``state.loss``: cross-entropy of ``state.net(state.x_adv)``, or the TRADES
    objective, and fills ``state.batch_metrics`` (``train/loss``, ``train/robust_acc`` or, for
    ``none``, ``train/clean_acc``). In a plain loop fire the events, or call it directly::

        adv.on_batch_start(state)   # state.x_adv
        loss = adv.loss(state)      # CE on x_adv, or TRADES (also state.loss)
    """

    def __init__(self, attack: str = "pgd", eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 trades_beta: float = 6.0, num_samples: int | None = None, seed: int = 0,
                 sample_shape: tuple[int, ...] | None = None):
        if attack not in ATTACKS:
            raise UnknownNameError(f"unknown attack {attack!r}{closest(attack, ATTACKS)}; valid: {', '.join(ATTACKS)}")
        _check_eps(eps, "eps")
        _check_eps(step_size, "step_size")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"attack steps must be an integer >= 1, got {steps!r}")
        if attack == "fast" and not num_samples:
            raise ConfigError("attack='fast' needs num_samples (the training-set size)")
        self.attack_name, self.eps, self.step_size, self.steps = attack, float(eps), float(step_size), steps
        self.trades_beta, self.num_samples, self.seed = float(trades_beta), num_samples, seed
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else None
        self.attack: Attack | None = None
        self._pending_bank: torch.Tensor | None = None

    def build(self, model: nn.Module) -> None:
        """Create the torchattacks attack for ``model`` (called at FIT_START)."""
        if self.attack_name == "pgd":
            self.attack = pgd_attack(model, self.eps, self.steps, alpha=self.step_size)
        elif self.attack_name == "ffgsm":
            self.attack = torchattacks.FFGSM(model, eps=self.eps, alpha=self.step_size)
        elif self.attack_name == "fgsm":
            self.attack = torchattacks.FGSM(model, eps=self.eps)
        elif self.attack_name == "fast":
            self.attack = PersistentFGSM(model, self.num_samples, eps=self.eps, alpha=self.step_size)
            if self._pending_bank is not None:
                self.attack.bank = self._pending_bank.to(self.attack.device)
                self._pending_bank = None
        elif self.attack_name == "trades":
            self.attack = torchattacks.TPGD(model, eps=self.eps, alpha=self.step_size, steps=self.steps)
        else:
            self.attack = None

    def on_fit_start(self, state: TrainState) -> None:
        self.build(state.model)

    def on_batch_start(self, state: TrainState) -> None:
        if self.attack is None and self.attack_name != "none":
            self.build(state.model)
        if self.attack_name == "none":
            state.x_adv = state.x
            return
        with isolated_rng(derive_seed(self.seed, "attack", state.step), state.x.device):
            if self.attack_name == "fast":
                state.x_adv = self.attack(state.x, state.y, state.index, state.crop_flip)
                self._share_bank(state.index)
            elif self.attack_name == "trades":
                state.x_adv = self.attack(state.x)  # TPGD needs no labels
            else:
                state.x_adv = self.attack(state.x, state.y)

    def _share_bank(self, index: torch.Tensor) -> None:
        """Under DDP, give every rank the perturbations the other ranks just updated."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        bank = self.attack.bank
        index = index.to(bank.device)
        all_index = all_gather_cat(index)
        self.attack.bank[all_index] = all_gather_cat(bank[index])

    def on_loss(self, state: TrainState) -> None:
        self.loss(state)

    def loss(self, state: TrainState) -> torch.Tensor:
        """Training loss of the batch (model in train mode); sets ``state.loss`` and fills ``state.batch_metrics``.

        The forward passes go through ``state.net`` (the model, or its DDP wrapper).
        """
        y, net = state.y, (state.net if state.net is not None else state.model)
        if self.attack_name == "trades":
            logits_clean = net(state.x)  # two passes, as in the TRADES reference code
            logits_adv = net(state.x_adv)
            loss = trades_loss(logits_clean, logits_adv, y, self.trades_beta)
            state.batch_metrics["train/clean_acc"] = (logits_clean.argmax(1) == y).float().mean().item()
        else:
            logits_adv = net(state.x_adv)
            loss = F.cross_entropy(logits_adv, y)
        key = "train/clean_acc" if self.attack_name == "none" else "train/robust_acc"
        state.batch_metrics[key] = (logits_adv.argmax(1) == y).float().mean().item()
        state.batch_metrics["train/loss"] = loss.item()
        state.loss = loss
        return loss

    def state_dict(self) -> dict[str, Any]:
        bank = getattr(self.attack, "bank", None) if self.attack_name == "fast" else None
        return {"bank": bank.detach().cpu()} if bank is not None else {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the fast attack's perturbation bank, after checking its type, shape and range."""
        if "bank" not in state:
            return
        bank = state["bank"]
        if self.attack_name != "fast":
            raise CheckpointError(f"a perturbation 'bank' belongs to attack 'fast', this run's attack is {self.attack_name!r}")
        shape = (self.num_samples, *(self.sample_shape or ()))
        if not isinstance(bank, torch.Tensor) or not bank.is_floating_point() or bank.dim() != 4 \
                or tuple(bank.shape[:len(shape)]) != shape:
            got = f"{bank.dtype} tensor of shape {tuple(bank.shape)}" if isinstance(bank, torch.Tensor) else type(bank).__name__
            raise CheckpointError(f"'bank' must be a float tensor of shape (num_samples, C, H, W) = "
                                  f"{shape}{'' if len(shape) == 4 else ' + (C, H, W)'}, got {got}")
        if not torch.isfinite(bank).all() or bank.abs().max() > self.eps + 1e-5:
            raise CheckpointError(f"'bank' perturbations must be finite and within eps = {self.eps} "
                                  f"(Linf), got max |delta| {bank.abs().max().item():.4g}")
        if self.attack is not None:
            self.attack.bank = bank.to(self.attack.device)
        else:
            self._pending_bank = bank
