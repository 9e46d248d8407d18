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

import torch.nn as nn
import torchattacks

from .errors import ConfigError

__all__ = ["check_eps", "default_pgd_step", "pgd_attack"]


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


def pgd_attack(model: nn.Module, eps: float, steps: int, *, alpha: float | None = None) -> torchattacks.PGD:
    """Linf PGD with a random start (Madry et al., ICLR 2018) through torchattacks.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, classes) logits.
        eps: Linf radius in [0, 1] pixel units.
        steps: gradient steps (>= 1).
        alpha: step size in pixel units; default :func:`default_pgd_step` (``eps / 4``, the
            paper's 2/255 at eps 8/255), the rule ``robin train`` uses for its validation and test
            and ``robin eval`` for its baseline, so both report the same PGD-k accuracy.

    Returns:
        ``torchattacks.PGD``: ``attack(images, labels) -> adversarial images``, all (N, C, H, W).
        The random start is drawn from the global RNG: run it inside
        :func:`robin_plugin.rng.isolated_rng` with a seed.
    """
    eps = check_eps(eps)
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"pgd steps must be an integer >= 1, got {steps!r}")
    alpha = default_pgd_step(eps) if alpha is None else check_eps(alpha, "pgd step size alpha")
    return torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)
