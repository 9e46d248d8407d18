"""Memory layout of a model, with a guard against a torch CPU crash in ``channels_last``.

Switching a model to ``channels_last`` (NHWC) speeds up convolutions on the CPU (oneDNN) and on
CUDA, but on the CPU one convolution shape crashes the process in its backward pass: see
:func:`channels_last_crash_convs`. :func:`to_channels_last` is the one place that switches a
model's layout; the trainer and the benchmarks use it.
"""
from __future__ import annotations

import logging

import torch
import torch.nn as nn

__all__ = ["channels_last_crash_convs", "to_channels_last"]

_log = logging.getLogger(__name__)


def channels_last_crash_convs(model: nn.Module, device: torch.device | str = "cpu") -> list[str]:
    """Names of the convolutions of ``model`` whose ``channels_last`` backward can crash on ``device``.

    torch 2.14.1 on the CPU (seen on AMD EPYC; other CPUs may run the same code silently, so a
    green run proves nothing) aborts the process ("double free or corruption", "free(): invalid
    next size", SIGSEGV) in the backward pass of an ``nn.Conv2d`` with

    - a 1x1 kernel,
    - a stride above 1 (stride 2 measured),
    - fewer than 8 input channels per group (1, 2, 3, 4, 6 and 7 measured),

    when its input and weight are in ``channels_last``. 1x1 stride 1, 3x3 stride 1 or 2, and 8 or
    more input channels were measured fine. A robin ResNet's downsampling shortcut is exactly such
    a convolution when its width is below 8. No torch release is known to have fixed it, so the
    guard applies to every torch version on the CPU; CUDA does not take this code path.

    Args:
        model: any module; masked convolutions count too (they are ``nn.Conv2d``).
        device: where the model will train; only ``"cpu"`` has the bug.

    Returns:
        The qualified names of the affected convolutions (empty: ``channels_last`` is safe).
    """
    if torch.device(device).type != "cpu":
        return []
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d) and is_crash_conv(m)]


def is_crash_conv(conv: nn.Conv2d) -> bool:
    """True for the convolution shape of :func:`channels_last_crash_convs` (1x1, stride > 1, < 8
    input channels per group), whose ``channels_last`` kernels the package never uses on the CPU."""
    stride = tuple(conv.stride) if isinstance(conv.stride, tuple) else (conv.stride, conv.stride)
    return tuple(conv.kernel_size) == (1, 1) and max(stride) > 1 and conv.in_channels // conv.groups < 8


def to_channels_last(model: nn.Module, device: torch.device | str = "cpu") -> bool:
    """Put ``model`` in ``channels_last`` unless that could crash torch on ``device``.

    When :func:`channels_last_crash_convs` finds an affected convolution, the model stays in the
    default (NCHW) layout and one warning says why.

    Args:
        model: the model, already on ``device``; changed in place.
        device: where it will train.

    Returns:
        True if the model is now in ``channels_last``, False if the guard kept the default layout.
    """
    bad = channels_last_crash_convs(model, device)
    if bad:
        _log.warning(
            "channels_last turned off: torch's CPU backward of a 1x1 stride-2 convolution with fewer than 8 "
            "input channels can crash the process (%d such layer(s), e.g. %s); training in the default layout",
            len(bad), bad[0],
        )
        return False
    model.to(memory_format=torch.channels_last)
    return True
