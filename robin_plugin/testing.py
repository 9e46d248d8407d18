"""Tiny models and data for tests and benchmarks: small enough to run full AutoAttack on a CPU.

Used by the evaluation tests and ``benchmarks/bench_autoattack.py``; nothing is downloaded (the
images come from the Debian ``dataset-fashion-mnist`` files through :func:`robin_plugin.data.get_dataset`).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import get_dataset, to_float
from .models import robinify

__all__ = ["fashion_mnist_subset", "pgd_train", "tiny_robin_mlp"]


def fashion_mnist_subset(split: str, n: int, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` Fashion-MNIST images of ``split`` as floats in [0, 1], (n, 1, 28, 28), and labels (n,)."""
    ds = get_dataset("fashion_mnist", root, split=split)
    return to_float(ds.images[:n]), ds.labels[:n].long()


def tiny_robin_mlp(hidden: int = 64, keep_ratio: float = 0.3) -> nn.Module:
    """A masked binary MLP on 14x14 average-pooled inputs (global seed 0 for its weights and scores)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(196, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                        nn.Linear(hidden, 10), nn.BatchNorm1d(10))
    return robinify(net, keep_ratio=keep_ratio, p=0.1)


def pgd_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, eps: float, pgd_steps: int = 3) -> nn.Module:
    """PGD adversarial training (random start, step eps/2), SGD lr 0.1 one-cycle, momentum 0.9, batch 128.

    Returns ``model`` in eval mode. Deterministic: batches and random starts come from a generator seeded 0.
    """
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        xb, yb = x[idx], y[idx]
        d = (torch.rand(xb.shape, generator=g) * 2 - 1) * eps
        for _ in range(pgd_steps):
            d.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model((xb + d).clamp(0, 1)), yb), d)
            d = (d + eps / 2 * grad.sign()).clamp(-eps, eps).detach()
        loss = F.cross_entropy(model((xb + d).clamp(0, 1)), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()
