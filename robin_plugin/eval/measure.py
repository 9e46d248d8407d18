"""The batched measurements the evaluation protocol and its checks take.

Predictions, accuracy, robustness to PGD, zero input gradients and the spread of repeated
forward passes, each over ``(N, C, H, W)`` images in [0, 1] a batch at a time. They judge
nothing: :mod:`.evaluate` runs them and :mod:`.checks` judges what they measured.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..pgd import pgd_attack
from ..rng import isolated_rng

__all__ = ["accuracy", "batches", "max_logit_diff", "pgd_robust", "predict", "project", "zero_gradient_count"]


def batches(n: int, batch_size: int) -> list[slice]:
    """Slices that cover ``range(n)`` in order, ``batch_size`` points each (the last may be shorter)."""
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """The predicted class (N,) of each image in ``x`` (N, C, H, W), ``batch_size`` at a time."""
    return torch.cat([model(x[s]).argmax(1) for s in batches(x.shape[0], batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 250) -> float:
    """Fraction of ``images`` (N, C, H, W) in [0, 1] that ``model`` classifies as ``labels`` (N,)."""
    return (predict(model, images, batch_size) == labels).float().mean().item()


def zero_gradient_count(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 250) -> int:
    """Points whose margin-loss gradient with respect to the input is exactly zero.

    The margin loss ``max_{j != y} z_j - z_y`` is used rather than cross-entropy because its
    gradient does not vanish on confidently classified points, so a zero here means the
    model itself blocks the gradient.
    """
    count = 0
    for s in batches(images.shape[0], batch_size):
        x = images[s].clone().requires_grad_(True)
        y = labels[s]
        with torch.enable_grad():
            z = model(x)  # (B, K)
            true = z.gather(1, y[:, None]).squeeze(1)
            other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -math.inf).amax(1)
            (g,) = torch.autograd.grad((other - true).sum(), x)
        count += int((g.reshape(g.shape[0], -1).abs().sum(1) == 0).sum())
    return count


def max_logit_diff(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    """Largest distance between the unit-normalised logits of ``repeats`` forward passes on ``x``.

    Zero for a deterministic model; what :func:`~robin_plugin.eval.checks.check_deterministic` judges.
    """
    with torch.no_grad():
        outs = [model(x) for _ in range(repeats)]
    outs = [o / (o.norm(dim=1, keepdim=True) + 1e-10) for o in outs]
    return max(((a - b).norm(dim=1).max().item() for a, b in zip(outs, outs[1:])), default=0.0)


def project(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip an attack's output into the eps ball and [0, 1], so no attack can overstep."""
    return torch.min(torch.max(adv.detach(), x - eps), x + eps).clamp(0.0, 1.0)


def pgd_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int,
               batch_size: int, *, judge: nn.Module | None = None) -> torch.Tensor:
    """Per point (N,): True if PGD-``steps`` at ``eps`` does not change the prediction away from ``y``.

    The attack runs on ``model``; its adversarial examples are judged on ``judge`` (default:
    ``model``), e.g. the masked model when ``model`` is its fast copy
    (:func:`~robin_plugin.eval.fast.attack_model`). The attack (:func:`robin_plugin.pgd.pgd_attack`)
    is seeded once with ``seed`` inside :func:`robin_plugin.rng.isolated_rng`, so the global
    random state is left as it was.
    """
    judge = model if judge is None else judge
    attack = pgd_attack(model, eps, steps)
    out = []
    with isolated_rng(seed):
        for s in batches(x.shape[0], batch_size):
            adv = project(attack(x[s], y[s]), x[s], eps)
            out.append(predict(judge, adv, batch_size) == y[s])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)
