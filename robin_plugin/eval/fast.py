"""A fast, fixed-function copy of a model for running attacks during evaluation.

During evaluation a masked model is a fixed function: its masks do not change. The attacks only
need that function and its input gradient, so they can run on a copy that computes it faster:

1. the masks are folded into the weights (the dense twin, :func:`~robin_plugin.export.dense.dense_model`):
   no per-forward ``weight * mask`` and no straight-through node in the autograd graph; the
   logits and input gradients are bit-identical to the masked model's;
2. each BatchNorm is folded into the convolution or linear layer before it
   (``torch.fx.experimental.optimization.fuse``), which removes a pass over every activation in
   the forward and the backward pass;
3. the convolutions run in the channels-last (NHWC) memory layout, which oneDNN runs faster on
   the CPU, unless :func:`~robin_plugin.memory_format.channels_last_crash_convs` finds a
   convolution that crashes in that layout.

Steps 2 and 3 change the float rounding (relative differences of about 1e-6), so an attack's
trajectory can differ in the last bits. Verdicts do not depend on the copy: the evaluation
judges every adversarial example on the original model, so a point counts as broken only when
the original model misclassifies it. ``benchmarks/bench_autoattack.py`` measures the speed and
compares the per-point verdicts with the unfolded model's and the reference AutoAttack's.
"""
from __future__ import annotations

import copy
import logging

import torch
import torch.fx.experimental.optimization as fx_opt
import torch.nn as nn

from ..export.dense import dense_model
from ..memory_format import channels_last_crash_convs
from ..pruning import is_masked
from ..rng import isolated_rng

__all__ = ["attack_model"]

logger = logging.getLogger(__name__)


class _ChannelsLast(nn.Module):
    """Feeds ``model`` channels-last inputs (the attacks pass ordinary NCHW tensors)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.contiguous(memory_format=torch.channels_last))


def attack_model(model: nn.Module, *, fold: bool = True, channels_last: bool = True) -> nn.Module:
    """A copy of ``model`` (eval mode) that computes the same logits faster, for attacks.

    Args:
        model: the model under evaluation (masked robin model, dense model, or any module).
        fold: fold the masks (masked models) and the BatchNorms into the weights.
        channels_last: run in the NHWC memory layout where that is safe on the model's device.

    Returns:
        A new module in eval mode; ``model`` itself is not changed. Models the folding cannot
        trace are only copied with their masks folded (a log line says so).
    """
    was_training = model.training
    model.eval()
    try:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
        fast: nn.Module = model
        if fold:
            if is_masked(model):
                with isolated_rng():  # building the twin draws (then overwrites) initial weights
                    fast = dense_model(model).to(device)
            try:
                fast = fx_opt.fuse(fast, inplace=fast is not model)
            except Exception as e:  # noqa: BLE001  (any model fx cannot trace keeps its BatchNorms)
                logger.info("attack model: BatchNorm folding skipped (%s: %s)", type(e).__name__, e)
        if channels_last and device.type == "cpu" and not channels_last_crash_convs(fast, device):
            if fast is model:
                fast = copy.deepcopy(model)
            fast = _ChannelsLast(fast.to(memory_format=torch.channels_last))
        fast.eval()
        for p in fast.parameters():
            p.requires_grad_(False)
        return fast
    finally:
        model.train(was_training)
