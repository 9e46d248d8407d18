"""The standard AutoAttack ensemble at its original strength, built from torchattacks components.

Croce and Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse
parameter-free attacks" (ICML 2020). RobustBench (Croce et al., NeurIPS 2021 Datasets and
Benchmarks) ranks models by this ensemble's "standard" version, Linf:

============  =====================================================================
``apgd-ce``   APGD on cross-entropy, 100 iterations, 1 restart, rho 0.75
``apgd-t``    APGD on the targeted DLR loss, 100 iterations, 1 restart, 9 target classes
``fab-t``     targeted FAB, 100 iterations, 1 restart, 9 target classes,
              alpha_max 0.1, eta 1.05, beta 0.9
``square``    Square attack, 5000 queries, 1 restart, p_init 0.8, the un-rescaled p schedule
============  =====================================================================

These are the settings of ``AutoAttack(version='standard')`` in the original code (PyPI
``pyautoattack`` 0.2.0, ``autoattack.py``: ``_set_version``). ``torchattacks.AutoAttack`` uses
the same four components but leaves APGD, APGD-T and FAB at torchattacks' default of 10
iterations and rescales Square's p schedule (``resc_schedule=True``), so its numbers are not
comparable with RobustBench's. :func:`standard_attacks` builds the components with the
original settings; ``docs/evaluation.md`` lists the differences.

torchattacks' APGD, APGD-T, FAB and Square call ``torch.manual_seed`` on every call; every attack
here runs inside :func:`robin_plugin.rng.isolated_rng`, so an evaluation leaves the caller's random
state as it was. The PGD baseline is the package's one PGD, :func:`robin_plugin.pgd.pgd_attack`.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
import torchattacks

from .._checks import is_int
from ..errors import ConfigError, UnknownNameError, closest
from ..pgd import check_eps

__all__ = [
    "STANDARD_ATTACKS",
    "AutoAttackConfig",
    "build_attack",
    "standard_attacks",
]

#: The attacks of AutoAttack "standard", in the order they run.
STANDARD_ATTACKS: tuple[str, ...] = ("apgd-ce", "apgd-t", "fab-t", "square")


@dataclass(frozen=True)
class AutoAttackConfig:
    """Settings of the AutoAttack components; the defaults are the original "standard" version."""

    apgd_iter: int = 100  # APGD-CE iterations (torchattacks default: 10)
    apgd_restarts: int = 1  # APGD-CE restarts
    apgd_rho: float = 0.75  # APGD step-size halving threshold
    apgdt_iter: int = 100  # APGD-T iterations per target class (torchattacks default: 10)
    apgdt_restarts: int = 1
    apgdt_target_classes: int = 9  # runner-up classes tried as targets
    fab_iter: int = 100  # FAB-T iterations per target class (torchattacks default: 10)
    fab_restarts: int = 1
    fab_target_classes: int = 9
    fab_alpha_max: float = 0.1
    fab_eta: float = 1.05
    fab_beta: float = 0.9
    square_queries: int = 5000  # model queries per point
    square_restarts: int = 1
    square_p_init: float = 0.8  # initial fraction of pixels changed per square
    square_rescale_schedule: bool = False  # original: False; torchattacks' default: True

    def __post_init__(self) -> None:
        for name in ("apgd_iter", "apgd_restarts", "apgdt_iter", "apgdt_restarts", "apgdt_target_classes",
                     "fab_iter", "fab_restarts", "fab_target_classes", "square_queries", "square_restarts"):
            value = getattr(self, name)
            if not is_int(value) or value < 1:
                raise ConfigError(f"AutoAttackConfig.{name} must be an integer >= 1, got {value!r}")
        if not 0.0 < self.square_p_init <= 1.0:
            raise ConfigError(f"AutoAttackConfig.square_p_init must be in (0, 1], got {self.square_p_init!r}")


def build_attack(
    name: str,
    model: nn.Module,
    eps: float,
    *,
    num_classes: int,
    seed: int = 0,
    config: AutoAttackConfig = AutoAttackConfig(),
) -> torchattacks.Attack:
    """One AutoAttack component as a torchattacks attack, with the original settings.

    Args:
        name: one of :data:`STANDARD_ATTACKS` (``apgd-ce``, ``apgd-t``, ``fab-t``, ``square``).
        model: maps (N, C, H, W) images in [0, 1] to (N, num_classes) logits.
        eps: Linf radius in [0, 1] pixel units.
        num_classes: number of classes; targeted attacks use ``min(9, num_classes - 1)`` targets.
        seed: seed each attack sets before it runs (torchattacks re-seeds the global RNG; run
            the attack inside :func:`~robin_plugin.rng.isolated_rng` to keep the caller's random state).
        config: iteration counts, restarts and schedules (default: AutoAttack "standard").

    Returns:
        A torchattacks attack: ``attack(images, labels) -> adversarial images``, all (N, C, H, W).
    """
    eps = check_eps(eps)
    if name not in STANDARD_ATTACKS:
        raise UnknownNameError(f"unknown attack {name!r}{closest(name, STANDARD_ATTACKS)}; valid: {', '.join(STANDARD_ATTACKS)}")
    if not is_int(num_classes) or num_classes < 2:
        raise ConfigError(f"num_classes must be an integer >= 2, got {num_classes!r}")
    c = config
    if name == "apgd-ce":
        return torchattacks.APGD(model, norm="Linf", eps=eps, steps=c.apgd_iter, n_restarts=c.apgd_restarts,
                                 seed=seed, loss="ce", eot_iter=1, rho=c.apgd_rho)
    if name == "apgd-t":
        if num_classes < 4:  # the targeted DLR loss reads the 3rd and 4th largest logits
            raise ConfigError(f"apgd-t needs at least 4 classes (targeted DLR loss), the model has {num_classes}")
        attack = torchattacks.APGDT(model, norm="Linf", eps=eps, steps=c.apgdt_iter, n_restarts=c.apgdt_restarts,
                                    seed=seed, eot_iter=1, rho=c.apgd_rho, n_classes=num_classes)
        attack.n_target_classes = min(c.apgdt_target_classes, num_classes - 1)
        return attack
    if name == "fab-t":
        attack = torchattacks.FAB(model, norm="Linf", eps=eps, steps=c.fab_iter, n_restarts=c.fab_restarts,
                                  alpha_max=c.fab_alpha_max, eta=c.fab_eta, beta=c.fab_beta, seed=seed,
                                  multi_targeted=True, n_classes=num_classes)
        attack.n_target_classes = min(c.fab_target_classes, num_classes - 1)
        return attack
    return torchattacks.Square(model, norm="Linf", eps=eps, n_queries=c.square_queries, n_restarts=c.square_restarts,
                               p_init=c.square_p_init, loss="margin", resc_schedule=c.square_rescale_schedule, seed=seed)


def standard_attacks(
    model: nn.Module,
    eps: float,
    *,
    num_classes: int,
    seed: int = 0,
    attacks: tuple[str, ...] = STANDARD_ATTACKS,
    config: AutoAttackConfig = AutoAttackConfig(),
) -> dict[str, torchattacks.Attack]:
    """The AutoAttack ensemble as ``{name: attack}`` in run order (see :func:`build_attack`)."""
    return {name: build_attack(name, model, eps, num_classes=num_classes, seed=seed, config=config) for name in attacks}
