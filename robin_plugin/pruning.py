"""Adaptive per-layer keep ratios (Liu et al., NeurIPS 2022, Sec. 3.2).

Layer i with n_i weights keeps the fraction k_i = c * n_i**(p - 1), with c chosen so that the
model keeps ``keep_ratio`` of all its weights: sum_i k_i * n_i = keep_ratio * sum_i n_i.
p = 1 keeps the same fraction everywhere; p = 0 keeps the same *count* in every layer; in
between, small layers keep a larger fraction than large ones. A layer whose k_i would exceed 1
keeps everything and c is solved again for the others.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import torch.nn as nn

from ._checks import is_number
from .errors import ConfigError
from .layers.masked import MaskedLayer
from .layers.selection import check_keep_ratio

__all__ = ["adaptive_keep_ratios", "check_keep_ratio", "check_p", "is_masked", "masked_layers", "set_keep_ratio"]


def check_p(p: float) -> float:
    """Return ``p`` as a float, or raise :class:`ConfigError` if it is not in [0, 1]."""
    if not is_number(p) or not 0.0 <= p <= 1.0:
        raise ConfigError(f"p must be in [0, 1] (1 = uniform, 0 = equal counts), got {p!r:.80}")
    return float(p)


def adaptive_keep_ratios(layer_sizes: Sequence[int], keep_ratio: float, p: float) -> list[float]:
    """Per-layer keep ratios k_i proportional to n_i**(p-1), clipped at 1.

    Args:
        layer_sizes: number of weights n_i of each layer, each >= 1.
        keep_ratio: fraction of all weights to keep, in (0, 1].
        p: exponent in [0, 1]; 1 is uniform, 0 gives unclipped layers equal counts.

    Returns:
        One ratio per layer, each in (0, 1], with sum(k_i * n_i) == keep_ratio * sum(n_i)
        (up to float rounding).
    """
    keep_ratio = check_keep_ratio(keep_ratio)
    p = check_p(p)
    sizes = [int(n) for n in layer_sizes]
    if not sizes:
        return []
    if any(n < 1 for n in sizes):
        raise ConfigError(f"every layer size must be >= 1, got {sizes}")

    ratios = [1.0] * len(sizes)
    if keep_ratio == 1.0:
        return ratios
    budget = keep_ratio * sum(sizes)  # weights still to distribute
    # For p < 1 the ratio falls with size, so the layers that clip are always the smallest:
    # visit layers from the smallest, clip while the current c would give them more than 1.
    order = sorted(range(len(sizes)), key=lambda i: sizes[i])
    for pos, i in enumerate(order):
        rest = order[pos:]
        c = budget / math.fsum(sizes[j] ** p for j in rest)
        if c * sizes[i] ** (p - 1.0) >= 1.0 - 1e-12:  # tolerance: float rounding of c
            budget -= sizes[i]  # this layer keeps everything
            continue
        for j in rest:
            ratios[j] = min(1.0, c * sizes[j] ** (p - 1.0))
        break
    return ratios


def masked_layers(model: nn.Module) -> list[tuple[str, MaskedLayer]]:
    """The masked layers of ``model`` as ``(name, module)`` pairs in registration order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, MaskedLayer)]


def is_masked(model: nn.Module) -> bool:
    """Whether ``model`` has at least one masked layer: the package's one answer to "is this model masked?".

    True for masked robin models and ``robinify``-ed models; False for the dense twins and any
    plain model. (A robin model's ``masked`` attribute records how it was built and agrees.)
    """
    return any(isinstance(m, MaskedLayer) for m in model.modules())


def set_keep_ratio(model: nn.Module, keep_ratio: float, p: float) -> list[float]:
    """Give every masked layer of ``model`` its adaptive keep ratio; return the ratios.

    Args:
        model: any module containing masked layers.
        keep_ratio: fraction of all masked weights to keep, in (0, 1].
        p: adaptive exponent in [0, 1] (see :func:`adaptive_keep_ratios`).
    """
    layers = masked_layers(model)
    if not layers:
        raise ConfigError(f"{type(model).__name__} has no masked layers; use robin_plugin.robinify first")
    ratios = adaptive_keep_ratios([m.weight.numel() for _, m in layers], keep_ratio, p)
    for (_, m), k in zip(layers, ratios):
        m.keep_ratio = k
    return ratios
