"""Clean and PGD accuracy of a model on a set of images (used for validation and the test)."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..data.base import to_float
from ..pgd import pgd_attack
from ..rng import derive_seed, isolated_rng

__all__ = ["clean_and_pgd_accuracy"]


def clean_and_pgd_accuracy(
    model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, eps: float, step_size: float, steps: int,
    batch_size: int = 256, seed: int = 0, device: torch.device | None = None, iterate: str = "last",
) -> dict[str, float]:
    """Clean accuracy and PGD-``steps`` accuracy (random start, :func:`robin_plugin.pgd.pgd_attack`) in eval mode.

    Each batch's random start is seeded from ``(seed, "eval-pgd", start)`` (start: the batch's
    first index), so the numbers do not depend on the global RNG or on what ran before.

    Args:
        images: (N, C, H, W) floats in [0, 1] or uint8 (divided by 255).
        labels: (N,) class indices.
        eps, step_size: Linf radius and step in pixel units.
        iterate: PGD's returned iterate, ``"last"`` or ``"worst"`` (:data:`robin_plugin.pgd.PGD_ITERATES`).

    Returns:
        ``{"clean_acc": ..., "robust_acc": ...}`` as fractions in [0, 1].
    """
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    attack = pgd_attack(model, eps, steps, alpha=step_size, iterate=iterate)
    clean = robust = 0
    try:
        for start in range(0, len(images), batch_size):
            x = images[start:start + batch_size].to(device)
            x = to_float(x)
            y = labels[start:start + batch_size].to(device)
            with torch.no_grad():
                clean += (model(x).argmax(1) == y).sum().item()
            with isolated_rng(derive_seed(seed, "eval-pgd", start), x.device):
                x_adv = attack(x, y)
            with torch.no_grad():
                robust += (model(x_adv).argmax(1) == y).sum().item()
    finally:
        model.train(was_training)
    n = max(1, len(images))
    return {"clean_acc": clean / n, "robust_acc": robust / n}
