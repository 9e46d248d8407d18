"""The package's one PGD: Linf PGD with a random start through ``torchattacks.PGD``, and its settings' checks.

Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks" (ICLR 2018).
Training (the ``pgd`` attack of :class:`~robin_plugin.training.AdversarialTraining`), validation
and the test of ``robin train`` (:func:`~robin_plugin.training.clean_and_pgd_accuracy`), the
catastrophic-overfitting guard and the PGD baseline of ``robin eval``
(:func:`~robin_plugin.eval.measure.pgd_robust`) all build their attack with :func:`pgd_attack`.

What differs between those callers is only how the random starts are seeded, and that is part
of each one's recorded numbers, so it stays with the caller: training seeds each step from
``(seed, "attack", step)``, validation and the test each batch from ``(seed, "eval-pgd",
start)``, the guard each check from ``(seed, "guard", step)`` (all through
:func:`robin_plugin.rng.isolated_rng`), and ``robin eval`` seeds once per evaluation, so that
its numbers and its resume files stay those of earlier releases.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torchattacks
from torchattacks.attack import Attack

from .errors import ConfigError, UnknownNameError, closest

__all__ = ["PGD_ITERATES", "WorstLossPGD", "check_eps", "check_iterate", "default_pgd_step", "pgd_attack"]

PGD_ITERATES = ("last", "worst")
"""What a PGD run returns per example: ``last``, the final iterate (torchattacks, Madry et al.);
``worst``, the evaluated iterate with the highest loss (the official code of Liu et al., 2022:
``code/util/attack.py``, class ``PGD``)."""


def check_eps(value: float, name: str = "eps", upper: float = 1.0) -> float:
    """Return ``value`` as a float, or raise :class:`ConfigError` unless it is a number in (0, upper].

    Args:
        value: an Linf radius or attack step in [0, 1] pixel units (8/255 = 0.0314 for CIFAR).
        name: what the value is (``eps``, ``step_size``), for the message.
        upper: the largest valid value.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not 0.0 < value <= upper:
        raise ConfigError(f"{name} must be a number in (0, {upper:g}] (Linf, in [0, 1] pixel units, "
                          f"e.g. 8/255 = 0.0314), got {value!r}")
    return float(value)


def default_pgd_step(eps: float) -> float:
    """The PGD step size used when none is given: ``eps / 4`` (2/255 at eps 8/255, 0.025 at 0.1)."""
    return eps / 4


class WorstLossPGD(Attack):
    r"""Linf PGD with a random start that returns, per example, the iterate with the highest loss.

    The training and validation PGD of the official code of Liu et al. (NeurIPS 2022,
    ``code/util/attack.py``, class ``PGD``): the loss is evaluated at the random start and at
    each of the following iterates before its step, and each example keeps the point where its
    cross-entropy was highest. As in that code, the point reached by the last step is not
    evaluated, so with ``steps = k`` the candidates are the start and the first k - 1 steps.

    Distance: Linf. Arguments:
        model (nn.Module): maps (N, C, H, W) images in [0, 1] to (N, classes) logits.
        eps (float): maximum perturbation in [0, 1] pixel units.
        alpha (float): step size in pixel units.
        steps (int): gradient steps (>= 1).

    Shape:
        - images: (N, C, H, W) in [0, 1]; labels: (N,) class indices.
        - output: (N, C, H, W) adversarial images.

    Examples::
        >>> attack = WorstLossPGD(model, eps=8/255, alpha=2/255, steps=10)
        >>> adv_images = attack(images, labels)
    """

    def __init__(self, model: nn.Module, eps: float = 8 / 255, alpha: float = 2 / 255, steps: int = 10):
        super().__init__("WorstLossPGD", model)
        self.eps, self.alpha, self.steps = eps, alpha, steps
        self.supported_mode = ["default"]

    def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        images = images.clone().detach().to(self.device)  # (N, C, H, W)
        labels = labels.clone().detach().to(self.device)  # (N,)
        adv = torch.clamp(images + torch.empty_like(images).uniform_(-self.eps, self.eps), 0, 1).detach()
        best = adv.clone()
        best_loss = torch.zeros(len(images), device=self.device)  # (N,); CE >= 0, so the start always counts
        for _ in range(self.steps):
            adv.requires_grad_(True)
            loss = F.cross_entropy(self.get_logits(adv), labels, reduction="none")  # (N,)
            grad = torch.autograd.grad(loss.sum(), adv)[0]
            loss = loss.detach()
            better = (loss > best_loss).view(-1, 1, 1, 1)
            best = torch.where(better, adv.detach(), best)
            best_loss = torch.maximum(best_loss, loss)
            delta = torch.clamp(adv.detach() + self.alpha * grad.sign() - images, -self.eps, self.eps)
            adv = torch.clamp(images + delta, 0, 1).detach()
        return best


def check_iterate(iterate: str) -> str:
    """``iterate`` if it is one of :data:`PGD_ITERATES`; :class:`UnknownNameError` otherwise."""
    if iterate not in PGD_ITERATES:
        raise UnknownNameError(f"unknown PGD iterate rule {iterate!r}{closest(str(iterate), PGD_ITERATES)}; "
                               f"valid: {', '.join(PGD_ITERATES)}")
    return iterate


def pgd_attack(model: nn.Module, eps: float, steps: int, *, alpha: float | None = None,
               iterate: str = "last") -> Attack:
    """Linf PGD with a random start (Madry et al., ICLR 2018) through torchattacks.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, classes) logits.
        eps: Linf radius in [0, 1] pixel units.
        steps: gradient steps (>= 1).
        alpha: step size in pixel units; default :func:`default_pgd_step` (``eps / 4``, the
            paper's 2/255 at eps 8/255), the rule ``robin train`` uses for its validation and test
            and ``robin eval`` for its baseline, so both report the same PGD-k accuracy.
        iterate: ``"last"`` (``torchattacks.PGD``) or ``"worst"`` (:class:`WorstLossPGD`, the
            official code's rule); see :data:`PGD_ITERATES`.

    Returns:
        A torchattacks attack: ``attack(images, labels) -> adversarial images``, all (N, C, H, W).
        The random start is drawn from the global RNG: run it inside
        :func:`robin_plugin.rng.isolated_rng` with a seed.
    """
    eps = check_eps(eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"pgd steps must be an integer >= 1, got {steps!r}")
    alpha = default_pgd_step(eps) if alpha is None else check_eps(alpha, "pgd step size alpha")
    if check_iterate(iterate) == "worst":
        return WorstLossPGD(model, eps=eps, alpha=alpha, steps=steps)
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
