"""Training-time attacks (through torchattacks) and the ``AdversarialTraining`` hook.

- ``pgd``: PGD-k with a random start (Madry et al., ICLR 2018) (:func:`robin_plugin.pgd.pgd_attack`):
  ``torchattacks.PGD`` returning the last iterate, or :class:`~robin_plugin.pgd.WorstLossPGD`
  returning each example's highest-loss iterate (``pgd_iterate="worst"``, the official code's rule).
- ``ffgsm``: FGSM with a random start ("fast" AT, Wong et al., ICLR 2020), ``torchattacks.FFGSM``.
- ``fgsm``: plain FGSM, one step of ``eps`` from the clean input (Goodfellow et al., ICLR 2015),
  ``torchattacks.FGSM``; the single-step attack most prone to catastrophic overfitting (an
  ablation, and how the guard's test provokes a collapse).
- ``fast``: the paper's fast variant (the official ``FGSM_RS`` of ``code/util/attack.py`` with the
  trainer ``adv_step_fast``): a per-sample perturbation kept across epochs, moved with the
  sample's crop and flip, one signed step from it, and per-sample soft training targets
  (in the spirit of ATTA, Zheng et al., CVPR 2020); :class:`PersistentFGSM`.
- ``trades``: TRADES (Zhang et al., ICML 2019): ``torchattacks.TPGD`` for the inner
  maximisation and :func:`trades_loss`.

**Model mode while crafting** (``attack_mode``): the official code crafts PGD and fast examples
with the model in train mode (BatchNorm uses batch statistics and updates its running
statistics, as in the training forward pass) and TRADES' KL attack in eval mode; that is the
default here (:func:`default_attack_mode`). ``"eval"`` crafts every attack in eval mode
(torchattacks' own default).

Attacks draw their random starts inside an isolated RNG seeded from ``(seed, step)``, so the
training randomness (shuffling, augmentation) never depends on which attack ran, and a resumed
run draws the same starts. (Some torchattacks attacks re-seed the global RNG.) The seeding
helpers are in :mod:`robin_plugin.rng`.
"""
from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from torchattacks.attack import Attack

from ..data.augment import CropFlip, put_crop_flip, take_crop_flip
from ..errors import CheckpointError, ConfigError, UnknownNameError, closest
from ..pgd import check_eps, check_iterate, pgd_attack
from ..rng import derive_seed, isolated_rng
from .distributed import all_gather_cat
from .events import Hook
from .state import TrainState

__all__ = ["ATTACKS", "ATTACK_MODES", "PersistentFGSM", "AdversarialTraining", "check_label_smoothing", "default_attack_mode",
           "trades_loss", "isolated_rng", "soft_cross_entropy"]

ATTACKS = ("pgd", "ffgsm", "fgsm", "fast", "trades", "none")
ATTACK_MODES = ("train", "eval")
"""Model mode while a training attack crafts its examples (see the module docstring)."""


def default_attack_mode(attack: str) -> str:
    """The official code's mode for crafting ``attack``: ``eval`` for TRADES, ``train`` otherwise.

    PGD (``code/trainers/adv_step.py``) and the fast attack (``adv_step_fast.py``) run inside the
    epoch's ``model.train()``; TRADES' KL attack switches to ``model.eval()``
    (``code/util/attack.py``, ``TradesKL.attack``). The single-step ``ffgsm`` / ``fgsm`` follow
    PGD (Wong et al.'s reference code also crafts FGSM in train mode).
    """
    return "eval" if attack == "trades" else "train"


def trades_loss(logits_clean: torch.Tensor, logits_adv: torch.Tensor, labels: torch.Tensor, beta: float = 6.0,
                label_smoothing: float = 0.0) -> torch.Tensor:
    """TRADES objective: CE(clean) + beta * KL(p_clean || p_adv), averaged over the batch.

    Args:
        logits_clean, logits_adv: (N, C) logits on clean and adversarial inputs.
        labels: (N,) class indices.
        beta: robustness weight (6 in the TRADES paper and here).
        label_smoothing: smoothing of the natural cross-entropy, in [0, 1).
    """
    natural = F.cross_entropy(logits_clean, labels, label_smoothing=label_smoothing)
    robust = F.kl_div(F.log_softmax(logits_adv, dim=1), F.softmax(logits_clean, dim=1), reduction="batchmean")
    return natural + beta * robust


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ``-sum_c targets[n, c] * log_softmax(logits)[n, c]``; (N, C), (N, C) -> scalar."""
    return -(F.log_softmax(logits, dim=1) * targets).sum(dim=1).mean()


class PersistentFGSM(Attack):
    r"""The paper's fast attack: one signed step from a per-sample perturbation kept across epochs.

    Distance: Linf. The official ``FGSM_RS`` (``code/util/attack.py``, with the trainer
    ``code/trainers/adv_step_fast.py``):

    - Each training sample i owns a perturbation ``delta_i`` in the coordinates of its padded
      image (H + 2 pad, W + 2 pad), drawn U(-eps, eps) the first time the sample is seen. For
      images larger than 160 px it is stored at 1/8 resolution (block means, repeated back), as
      in the official code, so an ImageNet-size bank fits in memory.
    - For a batch, the window the sample's crop and flip see is read, the gradient of the
      cross-entropy is taken at ``x + delta`` (not clipped), one step ``alpha * sign(grad)`` is
      taken and clipped to the eps-ball and the [0, 1] box, and the window is written back.
    - Each sample also owns a soft target ``t_i`` (one-hot at first): ``t_i <- rho t_i + (1 - rho)
      softmax(f(x + delta))``; the training loss is the cross-entropy of the adversarial logits
      with ``beta * onehot + (1 - beta) * t_i`` (:attr:`targets` of the last call).

    Arguments:
        model (nn.Module): model to attack (inputs in [0, 1]).
        num_samples (int): size of the training set (number of perturbations kept).
        num_classes (int): classes of the soft targets. (Default: None, the width of the first logits)
        eps (float): maximum perturbation. (Default: 8/255)
        alpha (float): step size. (Default: 4/255)
        target_beta (float): weight of the one-hot label in the training target. (Default: 0.1)
        target_rho (float): momentum of the per-sample soft targets. (Default: 0.9)

    Shape:
        - images: (N, C, H, W) in [0, 1], already cropped and flipped with ``crop_flip``;
          labels: (N,); index: (N,) dataset indices; crop_flip: the batch's
          :class:`~robin_plugin.data.CropFlip` or None (no augmentation).
        - output: (N, C, H, W) adversarial images; :attr:`targets`: (N, num_classes).

    Examples::
        >>> attack = PersistentFGSM(model, num_samples=len(train_set), num_classes=10, eps=8/255, alpha=4/255)
        >>> adv_images = attack(images, labels, index, crop_flip)
        >>> loss = soft_cross_entropy(model(adv_images), attack.targets)
    """

    COMPRESS_ABOVE = 160
    """Images taller than this many pixels keep their perturbations at 1/:attr:`COMPRESS_RATE` resolution."""
    COMPRESS_RATE = 8

    def __init__(self, model: nn.Module, num_samples: int, num_classes: int | None = None, eps: float = 8 / 255, alpha: float = 4 / 255,
                 target_beta: float = 0.1, target_rho: float = 0.9):
        super().__init__("PersistentFGSM", model)
        self.eps, self.alpha, self.num_samples, self.num_classes = eps, alpha, num_samples, num_classes
        self.target_beta, self.target_rho = target_beta, target_rho
        self.bank: torch.Tensor | None = None  # (num_samples, C, Hb, Wb), created on first use
        self.soft: torch.Tensor | None = None  # (num_samples, num_classes); rows never seen are all zero
        self.targets: torch.Tensor | None = None  # training targets of the last batch
        self.supported_mode = ["default"]

    @classmethod
    def bank_shape(cls, image_shape: tuple[int, int, int], pad: int) -> tuple[int, int, int]:
        """(C, Hb, Wb) of one stored perturbation for (C, H, W) images cropped with padding ``pad``."""
        c, h, w = image_shape
        r = cls.COMPRESS_RATE if h > cls.COMPRESS_ABOVE else 1
        return c, math.ceil((h + 2 * pad) / r), math.ceil((w + 2 * pad) / r)

    def _unzip(self, stored: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if stored.shape[2:] == size:
            return stored
        r = self.COMPRESS_RATE
        return stored.repeat_interleave(r, 2).repeat_interleave(r, 3)[:, :, :size[0], :size[1]]

    def _zip(self, delta: torch.Tensor, stored_size: tuple[int, int]) -> torch.Tensor:
        if delta.shape[2:] == stored_size:
            return delta
        # block means over the pixels inside the image (the official zip_tensor)
        return F.avg_pool2d(delta, self.COMPRESS_RATE, ceil_mode=True)

    def forward(self, images: torch.Tensor, labels: torch.Tensor, index: torch.Tensor | None = None,
                crop_flip: CropFlip | None = None) -> torch.Tensor:
        if index is None:
            raise ConfigError("PersistentFGSM needs the dataset index of every sample in the batch")
        images = images.clone().detach().to(self.device)  # (N, C, H, W)
        labels = labels.clone().detach().to(self.device)  # (N,)
        index = index.to(self.device)
        n, c, h, w = images.shape
        pad = crop_flip.pad if crop_flip is not None else 0
        padded = (h + 2 * pad, w + 2 * pad)
        stored = self.bank_shape((c, h, w), pad)
        if self.bank is None:
            # the official draw: uniform in the eps-ball (from the isolated attack RNG)
            self.bank = (torch.rand((self.num_samples, *stored), device=self.device) * 2 - 1) * self.eps
        elif tuple(self.bank.shape[1:]) != stored:
            raise ConfigError(f"the perturbation bank holds {tuple(self.bank.shape[1:])} per sample, but ({c}, {h}, {w}) "
                              f"images cropped with padding {pad} need {stored}: every batch must come at one size "
                              "with the same augmentation")
        full = self._unzip(self.bank[index], padded)  # (N, C, H + 2p, W + 2p)
        delta = take_crop_flip(full, crop_flip, h, w) if crop_flip is not None else full
        delta = delta.detach().requires_grad_(True)
        logits = self.get_logits(images + delta)  # (N, classes)
        if self.soft is None:
            self.num_classes = self.num_classes or logits.shape[1]
            self.soft = torch.zeros(self.num_samples, self.num_classes, device=self.device)
        grad = torch.autograd.grad(F.cross_entropy(logits, labels), delta)[0]
        onehot = F.one_hot(labels, self.num_classes).to(logits.dtype)  # (N, classes)
        seen = self.soft[index].sum(dim=1, keepdim=True) > 0
        previous = torch.where(seen, self.soft[index], onehot)
        self.soft[index] = (previous * self.target_rho + F.softmax(logits.detach(), dim=1) * (1 - self.target_rho)).float()
        self.targets = (onehot * self.target_beta + self.soft[index] * (1 - self.target_beta)).detach()
        delta = torch.clamp(delta.detach() + self.alpha * grad.sign(), -self.eps, self.eps)
        delta = torch.clamp(images + delta, 0, 1) - images
        if crop_flip is not None:
            full = put_crop_flip(full, crop_flip, delta)
        else:
            full = delta
        self.bank[index] = self._zip(full, tuple(self.bank.shape[2:]))
        return (images + delta).detach()


class AdversarialTraining(Hook):
    """Modifier: make ``state.x_adv`` at BATCH_START and set the training loss at LOSS.

    Args:
        attack: one of :data:`ATTACKS` (``none`` trains on clean inputs).
        eps: Linf radius in pixel units (e.g. 8/255 on CIFAR-10, 0.1 on Fashion-MNIST).
        step_size: attack step (PGD / TPGD step, FGSM / fast step).
        steps: PGD / TPGD iterations (default 10).
        trades_beta: TRADES weight (default 6).
        num_samples: training-set size (needed by ``fast`` only).
        num_classes: classes of the model (``fast``'s soft targets; None: the width of the logits).
        seed: seed of the attack's random starts (an isolated RNG per step).
        sample_shape: (C, H, W) of the training images, if known: a restored ``fast``
            perturbation bank is checked against it.
        crop_pad: padding of the batches' crops (0 without augmentation); sizes the ``fast`` bank.
        attack_mode: ``"train"`` or ``"eval"``: the model's mode while the attack crafts
            (:data:`ATTACK_MODES`); None: :func:`default_attack_mode` (the official code's).
        pgd_iterate: ``"last"`` or ``"worst"``: which PGD iterate ``pgd`` returns
            (:data:`robin_plugin.pgd.PGD_ITERATES`). Default ``"last"``.
        label_smoothing: smoothing of the cross-entropy of ``pgd`` / ``ffgsm`` / ``fgsm`` /
            ``none`` and of TRADES' natural term, in [0, 1). ``fast`` trains on its own soft
            targets and refuses it (the official ``adv_step_fast`` never applies it either).

    Attributes:
        attack_name: the training attack now (the catastrophic-overfitting guard may change it).
        attack: the torchattacks attack made from it (None before FIT_START and for ``none``).

    At LOSS it sets ``state.loss``: cross-entropy of ``state.net(state.x_adv)`` (with the fast
    attack's soft targets for ``fast``), or the TRADES objective, and fills
    ``state.batch_metrics`` (``train/loss``, ``train/robust_acc`` or, for ``none``,
    ``train/clean_acc``). In a plain loop fire the events, or call it directly::

        adv.on_batch_start(state)   # state.x_adv
        loss = adv.loss(state)      # CE on x_adv, or TRADES (also state.loss)
    """

    def __init__(self, attack: str = "pgd", eps: float = 8 / 255, step_size: float = 2 / 255, steps: int = 10,
                 trades_beta: float = 6.0, num_samples: int | None = None, num_classes: int | None = None, seed: int = 0,
                 sample_shape: tuple[int, ...] | None = None, crop_pad: int = 0, attack_mode: str | None = None,
                 pgd_iterate: str = "last", label_smoothing: float = 0.0):
        if attack not in ATTACKS:
            raise UnknownNameError(f"unknown attack {attack!r}{closest(attack, ATTACKS)}; valid: {', '.join(ATTACKS)}")
        check_eps(eps, "eps")
        check_eps(step_size, "step_size")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ConfigError(f"attack steps must be an integer >= 1, got {steps!r}")
        if attack == "fast" and not num_samples:
            raise ConfigError("attack='fast' needs num_samples (the training-set size)")
        if attack_mode is not None and attack_mode not in ATTACK_MODES:
            raise UnknownNameError(f"unknown attack_mode {attack_mode!r}{closest(str(attack_mode), ATTACK_MODES)}; "
                                   f"valid: {', '.join(ATTACK_MODES)}")
        check_label_smoothing(label_smoothing, attack)
        self.attack_name, self.eps, self.step_size, self.steps = attack, float(eps), float(step_size), steps
        self.trades_beta, self.num_samples, self.num_classes, self.seed = float(trades_beta), num_samples, num_classes, seed
        self.sample_shape = tuple(sample_shape) if sample_shape is not None else None
        self.crop_pad = crop_pad
        self.attack_mode = attack_mode
        self.pgd_iterate = check_iterate(pgd_iterate)
        self.label_smoothing = float(label_smoothing)
        self.attack: Attack | None = None
        self._pending: dict[str, torch.Tensor] = {}

    @property
    def mode(self) -> str:
        """The model's mode while the current attack crafts: ``attack_mode`` or the official default."""
        return self.attack_mode or default_attack_mode(self.attack_name)

    def build(self, model: nn.Module) -> None:
        """Create the torchattacks attack for ``model`` (called at FIT_START)."""
        if self.attack_name == "pgd":
            self.attack = pgd_attack(model, self.eps, self.steps, alpha=self.step_size, iterate=self.pgd_iterate)
        elif self.attack_name == "ffgsm":
            self.attack = torchattacks.FFGSM(model, eps=self.eps, alpha=self.step_size)
        elif self.attack_name == "fgsm":
            self.attack = torchattacks.FGSM(model, eps=self.eps)
        elif self.attack_name == "fast":
            self.attack = PersistentFGSM(model, self.num_samples, self.num_classes, eps=self.eps, alpha=self.step_size)
            if self._pending:
                self.attack.bank = self._pending["bank"].to(self.attack.device)
                self.attack.soft = self._pending["soft"].to(self.attack.device)
                self._pending = {}
        elif self.attack_name == "trades":
            self.attack = torchattacks.TPGD(model, eps=self.eps, alpha=self.step_size, steps=self.steps)
        else:
            self.attack = None
        if self.attack is not None:
            train = self.mode == "train"  # the whole model in train mode, as the official code's model.train()
            self.attack.set_model_training_mode(model_training=train, batchnorm_training=train, dropout_training=train)

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
        """Under DDP, give every rank the perturbations and soft targets the other ranks just updated."""
        if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
            return
        index = index.to(self.attack.bank.device)
        all_index = all_gather_cat(index)
        self.attack.bank[all_index] = all_gather_cat(self.attack.bank[index])
        self.attack.soft[all_index] = all_gather_cat(self.attack.soft[index])

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
            loss = trades_loss(logits_clean, logits_adv, y, self.trades_beta, self.label_smoothing)
            state.batch_metrics["train/clean_acc"] = (logits_clean.argmax(1) == y).float().mean().item()
        elif self.attack_name == "fast":
            logits_adv = net(state.x_adv)
            loss = soft_cross_entropy(logits_adv, self.attack.targets)
        else:
            logits_adv = net(state.x_adv)
            loss = F.cross_entropy(logits_adv, y, label_smoothing=self.label_smoothing)
        key = "train/clean_acc" if self.attack_name == "none" else "train/robust_acc"
        state.batch_metrics[key] = (logits_adv.argmax(1) == y).float().mean().item()
        state.batch_metrics["train/loss"] = loss.item()
        state.loss = loss
        return loss

    def state_dict(self) -> dict[str, Any]:
        bank = getattr(self.attack, "bank", None) if self.attack_name == "fast" else None
        if bank is None:
            return {}
        return {"bank": bank.detach().cpu(), "soft_targets": self.attack.soft.detach().cpu()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the fast attack's perturbations and soft targets, after checking types, shapes and ranges."""
        if "bank" not in state:
            return
        bank, soft = state["bank"], state.get("soft_targets")
        if self.attack_name != "fast":
            raise CheckpointError(f"a perturbation 'bank' belongs to attack 'fast', this run's attack is {self.attack_name!r}")
        per_sample = PersistentFGSM.bank_shape(self.sample_shape, self.crop_pad) if len(self.sample_shape or ()) == 3 else ()
        shape = (self.num_samples, *per_sample)
        if not isinstance(bank, torch.Tensor) or not bank.is_floating_point() or bank.dim() != 4 \
                or tuple(bank.shape[:len(shape)]) != shape:
            got = f"{bank.dtype} tensor of shape {tuple(bank.shape)}" if isinstance(bank, torch.Tensor) else type(bank).__name__
            raise CheckpointError(f"'bank' must be a float tensor of shape (num_samples, C, H + 2 pad, W + 2 pad) = "
                                  f"{shape}{'' if len(shape) == 4 else ' + (C, H, W)'}, got {got}")
        if not torch.isfinite(bank).all() or bank.abs().max() > self.eps + 1e-5:
            raise CheckpointError(f"'bank' perturbations must be finite and within eps = {self.eps} "
                                  f"(Linf), got max |delta| {bank.abs().max().item():.4g}")
        soft_ok = isinstance(soft, torch.Tensor) and soft.is_floating_point() and soft.dim() == 2 \
            and soft.shape[0] == self.num_samples and (self.num_classes is None or soft.shape[1] == self.num_classes)
        if not soft_ok:
            got = f"{soft.dtype} tensor of shape {tuple(soft.shape)}" if isinstance(soft, torch.Tensor) else type(soft).__name__
            raise CheckpointError(f"'soft_targets' must be a float tensor of shape (num_samples, num_classes) = "
                                  f"({self.num_samples}, {self.num_classes or 'classes'}), got {got}")
        if not torch.isfinite(soft).all() or soft.min() < 0 or soft.max() > 1 + 1e-5:
            raise CheckpointError("'soft_targets' must be finite probabilities in [0, 1]")
        if self.attack is not None:
            self.attack.bank, self.attack.soft = bank.to(self.attack.device), soft.to(self.attack.device)
        else:
            self._pending = {"bank": bank, "soft": soft}


def check_label_smoothing(value: float, attack: str) -> float:
    """``value`` as a float in [0, 1); ``fast`` takes only 0 (it trains on its own soft targets)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or not 0 <= value < 1:
        raise ConfigError(f"label_smoothing must be a number in [0, 1), got {value!r}")
    if value and attack == "fast":
        raise ConfigError("label_smoothing must be 0 with attack 'fast': it trains on its own per-sample soft targets "
                          "(as the official adv_step_fast, whose loss never applies the configured criterion)")
    return float(value)
