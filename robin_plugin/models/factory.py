"""The layer factory: the constructors a robin model family builds itself from, masked or dense."""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch
import torch.nn as nn

from ..layers.masked import MaskedConv2d, MaskedLinear
from .args import ModelArgs

__all__ = ["LayerFactory", "make_layer_factory", "masked_layer_kwargs"]


@dataclass(frozen=True)
class LayerFactory:
    """Constructors a model family builds itself from: masked binary or dense full precision.

    ``conv(in, out, kernel_size, stride, padding)``, ``linear(in, out)``, ``norm2d(c)`` and
    ``norm1d(c)``. (Not ``Layers``: ``layers`` means blocks per stage, as in timm.)
    """

    conv: Callable[..., nn.Module]
    linear: Callable[..., nn.Module]
    norm2d: Callable[[int], nn.Module]
    norm1d: Callable[[int], nn.Module]
    masked: bool


def masked_layer_kwargs(args: ModelArgs) -> dict:
    """The keyword arguments of :class:`MaskedConv2d` / :class:`MaskedLinear` that ``args`` (resolved for a
    masked model) set: the weight and score initialisation."""
    return dict(init=args.init, score_init_scale=args.score_init_scale, score_scale_by_fan_in=args.score_scale_by_fan_in)


def make_layer_factory(masked: bool, generator: torch.Generator, args: ModelArgs) -> LayerFactory:
    """Masked layers with non-affine BatchNorm, or dense layers with affine BatchNorm.

    Args:
        masked: masked binary layers (True) or dense full-precision ones.
        generator: seeded CPU generator every layer draws its fixed weights (and scores) from.
        args: the model's arguments, resolved for a masked model (:meth:`ModelArgs.for_model`):
            the masked layers take ``init``, ``score_init_scale`` and ``score_scale_by_fan_in``.
    """
    if masked:
        kw = dict(masked_layer_kwargs(args), generator=generator)
        return LayerFactory(
            conv=partial(MaskedConv2d, **kw),
            linear=partial(MaskedLinear, **kw),
            norm2d=partial(nn.BatchNorm2d, affine=False),
            norm1d=partial(nn.BatchNorm1d, affine=False),
            masked=True,
        )

    def dense_conv(cin: int, cout: int, kernel_size: int, stride: int = 1, padding: int = 0) -> nn.Conv2d:
        conv = nn.Conv2d(cin, cout, kernel_size, stride, padding, bias=False)
        with torch.no_grad():  # seeded Kaiming normal, independent of the global RNG
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=generator) * math.sqrt(2.0 / (cin * kernel_size**2)))
        return conv

    def dense_linear(cin: int, cout: int) -> nn.Linear:
        fc = nn.Linear(cin, cout)
        with torch.no_grad():
            bound = 1.0 / math.sqrt(cin)
            fc.weight.copy_((torch.rand(fc.weight.shape, generator=generator) * 2 - 1) * bound)
            fc.bias.zero_()
        return fc

    return LayerFactory(dense_conv, dense_linear, nn.BatchNorm2d, nn.BatchNorm1d, masked=False)

