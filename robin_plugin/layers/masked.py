"""Masked binary layers: fixed random weights, one learned score per weight.

Ramanujan et al., "What's Hidden in a Randomly Weighted Neural Network?" (CVPR 2020) and
Liu et al., "Robust Binary Models by Pruning Randomly-initialized Networks" (NeurIPS 2022).

A masked layer holds its fixed weights in the buffer ``weight`` (never trained, never given to
an optimizer) and a trainable parameter ``scores`` of the same shape. The forward pass uses
``weight * mask`` where ``mask`` keeps the ``kept_count(n, keep_ratio)`` weights with the
largest ``|score|``; the gradient reaches ``scores`` straight through the selection.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, UnknownNameError, closest
from .selection import check_keep_ratio, kept_count, straight_through, topk_keep, topk_mask

__all__ = ["INITS", "KEEP_RATIO_BITS_KEY", "KEEP_RATIO_KEY", "MaskedLayer", "MaskedConv2d", "MaskedLinear", "check_init", "check_score_scale", "init_weight", "init_scores"]

INITS = ("binary", "signed_kaiming_constant", "kaiming_normal", "uniform_pm1")
"""Weight initialisations: exactly +-1 (default), +-gain/sqrt(fan_in), Kaiming normal, and U(-1, 1)
(the official code's ``uniform_pm1`` ablation). With a non-affine BatchNorm after every masked
layer, a per-layer constant factor on the weights changes neither the outputs nor the scores'
gradients, so ``signed_kaiming_constant`` is the ``binary`` function; the last two change it."""

_RELU_GAIN = math.sqrt(2.0)

HINT_MARGIN = 0.01
"""A layer searches its next threshold among the scores >= (1 - HINT_MARGIN) x its last one,
falling back to all scores when fewer than the kept count are there. A guess that only affects
speed: one optimizer step usually moves the threshold much less, and the result is exact anyway."""

KEEP_RATIO_KEY = "keep_ratio"
"""State-dict entry of a masked layer's keep ratio (``<layer>.keep_ratio``, float64 scalar)."""

KEEP_RATIO_BITS_KEY = "keep_ratio_bits"
"""The buffer holding a masked layer's keep ratio: the float64's bit pattern as an int64 scalar.

An integer, so that tools which average a model's floating-point state (timm's ``ModelEmaV3``,
``ModelEmaV2``, SWA) copy it instead: an EMA copy of a model keeps the live model's subnetwork
(see :class:`MaskedLayer`)."""

def _fan_in(shape: torch.Size) -> int:
    return int(math.prod(shape[1:]))


def init_weight(shape: torch.Size, init: str, generator: torch.Generator) -> torch.Tensor:
    """Draw fixed weights of ``shape`` on the CPU from ``generator``.

    Args:
        shape: weight shape, ``(out, in, kh, kw)`` or ``(out, in)``.
        init: one of :data:`INITS`. ``binary`` gives exactly +1/-1 (signs of a fair draw);
            ``signed_kaiming_constant`` gives +-sqrt(2)/sqrt(fan_in); ``kaiming_normal`` gives
            N(0, 2/fan_in); ``uniform_pm1`` gives U(-1, 1) (both for ablations: no longer binary).
        generator: a seeded CPU generator, so weights are reproducible from the seed alone.
    """
    if init == "kaiming_normal":
        std = _RELU_GAIN / math.sqrt(_fan_in(shape))
        return torch.randn(shape, generator=generator) * std
    if init == "uniform_pm1":
        return torch.rand(shape, generator=generator) * 2 - 1
    check_init(init)
    signs = torch.randint(0, 2, shape, generator=generator, dtype=torch.int8).float() * 2 - 1
    if init == "signed_kaiming_constant":
        return signs * (_RELU_GAIN / math.sqrt(_fan_in(shape)))
    return signs


def check_score_scale(scale: float) -> float:
    """Return ``scale`` as a float, or raise :class:`ConfigError` unless it is finite and > 0."""
    if isinstance(scale, bool) or not (isinstance(scale, (int, float)) and math.isfinite(scale) and scale > 0):
        raise ConfigError(f"score_init_scale must be a finite number > 0, got {scale!r}")
    return float(scale)


def check_init(init: str) -> str:
    """Return ``init`` or raise :class:`UnknownNameError` naming the valid choices."""
    if init not in INITS:
        raise UnknownNameError(f"unknown init {init!r}{closest(str(init), INITS)}; valid: {', '.join(INITS)}")
    return init


def init_scores(
    shape: torch.Size, scale: float, by_fan_in: bool, generator: torch.Generator
) -> torch.Tensor:
    """Scores drawn from U(-a, a), a = ``scale`` (divided by sqrt(fan_in) if ``by_fan_in``)."""
    check_score_scale(scale)
    a = scale / math.sqrt(_fan_in(shape)) if by_fan_in else scale
    return (torch.rand(shape, generator=generator) * 2 - 1) * a


class _MaskedWeight(torch.autograd.Function):
    """Forward: the cached ``weight * mask``. Backward: ``grad * weight * sgn(scores)`` to the scores.

    The straight-through estimator through ``|scores|``: the same products, in the same order, as
    autograd computes for ``weight * straight_through(scores, mask)``, without materialising
    ``|scores|``, a mask copy and the product on every forward pass.
    """

    @staticmethod
    def forward(ctx, scores: torch.Tensor, weight: torch.Tensor, masked: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(scores, weight)
        return masked.detach()  # an alias with the same strides (view_as would recompute them)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        scores, weight = ctx.saved_tensors
        return grad * weight * scores.sgn(), None, None


class MaskedLayer(nn.Module):
    """Mixin shared by :class:`MaskedConv2d` and :class:`MaskedLinear`.

    Attributes:
        weight: fixed weights (buffer).
        scores: trainable scores, one per weight (parameter).
        keep_ratio: fraction of this layer's weights kept, in (0, 1]; set it directly or with
            :func:`robin_plugin.set_keep_ratio`.

    The keep ratio decides the layer's function as much as its weights do, so it is state, held
    in the int64 buffer ``keep_ratio_bits`` (the float64's bit pattern: exact, and an integer, so
    that timm's ``ModelEmaV3`` copies it where it averages floating-point state; the EMA copy of
    a model being pruned keeps the live model's keep ratios). The state dict also carries it as
    ``<prefix>keep_ratio``, a float64 scalar tensor (the only entry a decoded compact file has).
    ``load_state_dict`` restores it from either (``keep_ratio_bits`` first; both present must
    agree); a state dict with neither misses ``<prefix>keep_ratio``, which a strict load refuses.
    """

    weight: torch.Tensor
    scores: nn.Parameter
    keep_ratio: float

    def _init_masked(
        self,
        keep_ratio: float,
        init: str,
        score_init_scale: float,
        score_scale_by_fan_in: bool,
        generator: torch.Generator | None,
        device: torch.device | str | None,
    ) -> None:
        shape = self.weight.shape
        del self.weight  # drop the nn.Module parameter: weights are fixed, not trainable
        if self.bias is not None:
            raise ConfigError("masked layers have no bias (it would be a trained float weight)")
        g = generator if generator is not None else torch.Generator().manual_seed(0)
        self.register_buffer("weight", init_weight(shape, init, g).to(device))
        self.scores = nn.Parameter(init_scores(shape, score_init_scale, score_scale_by_fan_in, g).to(device))
        self.init = init
        self.register_buffer(KEEP_RATIO_BITS_KEY, torch.zeros((), dtype=torch.int64, device=device))
        self._bits_seen: tuple | None = None  # (data_ptr, _version) of the buffer behind _keep_ratio
        self.keep_ratio = keep_ratio
        self._mask_cache: list | None = None  # [key, keep (bool), weight * mask, float mask or None]
        self._hint: float | None = None  # the last selection's threshold, lowered by HINT_MARGIN

    @property
    def keep_ratio(self) -> float:
        self._sync_keep_ratio()
        return self._keep_ratio

    @keep_ratio.setter
    def keep_ratio(self, value: float) -> None:
        check_keep_ratio(value)
        self._keep_ratio = float(value)
        buf = self._buffers[KEEP_RATIO_BITS_KEY]
        if not buf.is_meta:
            with torch.no_grad():
                buf.copy_(_ratio_to_bits(self._keep_ratio))
            self._bits_seen = (buf.data_ptr(), buf._version)

    def _sync_keep_ratio(self) -> None:
        """Re-read the ratio when something wrote the buffer in place (an EMA's ``copy_``).

        The buffer's version counter tells without reading the tensor, so a model on a GPU waits
        for the device only in the step after such a write, never in ordinary forward passes.
        """
        if torch.compiler.is_compiling():
            return
        buf = self._buffers[KEEP_RATIO_BITS_KEY]
        if buf.is_meta:
            return
        seen = (buf.data_ptr(), buf._version)
        if seen != self._bits_seen:
            ratio = _bits_to_ratio(buf)
            if not 0.0 < ratio <= 1.0:  # also NaN
                raise ConfigError(f"{KEEP_RATIO_BITS_KEY} holds {ratio!r}, not a keep ratio in (0, 1]")
            self._keep_ratio = ratio
            self._bits_seen = seen

    @property
    def kept(self) -> int:
        """Number of weights this layer keeps."""
        self._sync_keep_ratio()
        return kept_count(self.weight.numel(), self._keep_ratio)

    def mask(self) -> torch.Tensor:
        """The current 0/1 mask (no gradient), in the scores' dtype. The selection behind it is
        recomputed only when the scores or the ratio change."""
        if torch.compiler.is_compiling():  # a compiled graph selects inside the graph, no Python cache
            return topk_mask(self.scores.detach().abs(), self.kept)
        keep = self._selection()[0]
        cache = self._mask_cache
        if cache[3] is None:  # made on first request only: training itself never needs it
            cache[3] = keep.to(self.scores.dtype)
        return cache[3]

    def _selection(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(keep, weight * mask)``: the boolean mask and the masked weights, cached until the
        scores, weights or keep ratio change."""
        s, w = self.scores, self.weight
        # _version moves on every in-place update (optimizer step, load_state_dict, copy_), so a
        # PGD attack's many forward passes and the training forward share one selection per step
        key = (s.data_ptr(), s._version, w.data_ptr(), w._version, s.dtype, s.device, self.kept,
               torch.is_inference_mode_enabled())
        if self._mask_cache is None or self._mask_cache[0] != key:
            with torch.no_grad():
                # the last threshold, a little lowered, narrows the next search (speed only: the
                # selection is exact for any hint); on a GPU reading it back would wait for the device
                keep, threshold = topk_keep(s.abs(), self.kept, hint=self._hint)
                if s.device.type == "cpu":
                    self._hint = float(threshold) * (1.0 - HINT_MARGIN)
                keep = keep.view(w.shape)
                # the product takes the weight's exact strides: ``w * mask`` would pick NCHW strides
                # where the layout is ambiguous (1 input channel, 1x1 kernels), and a channels_last
                # model would then run its stem in NCHW and convert activations back and forth
                masked = torch.empty_like(w)
                torch.mul(w, keep, out=masked)
                self._mask_cache = [key, keep, masked, None]  # the 0/1 float mask comes on request
        return self._mask_cache[1], self._mask_cache[2]

    def masked_weight(self) -> torch.Tensor:
        """``weight * mask`` with a straight-through gradient to ``scores`` (through ``|scores|``).

        The product is computed once per selection and shared by every forward pass until the
        scores change; without a gradient to compute it is returned as it is (do not modify it).
        """
        if torch.compiler.is_compiling():
            return self.weight * straight_through(self.scores, self.mask())
        _, masked = self._selection()
        if not (torch.is_grad_enabled() and self.scores.requires_grad):
            return masked
        return _MaskedWeight.apply(self.scores, self.weight, masked)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        self._sync_keep_ratio()
        super()._save_to_state_dict(destination, prefix, keep_vars)
        destination[prefix + KEEP_RATIO_KEY] = torch.tensor(self._keep_ratio, dtype=torch.float64)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        key, bits_key = prefix + KEEP_RATIO_KEY, prefix + KEEP_RATIO_BITS_KEY
        value = state_dict.pop(key, None)  # load_state_dict hands each module its own copy of the dict
        bits = state_dict.pop(bits_key, None)  # a decoded compact file has only the float
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        if bits_key in missing_keys:
            missing_keys.remove(bits_key)
        ratios = []
        if bits is not None:
            if not isinstance(bits, torch.Tensor) or bits.numel() != 1 or bits.dtype != torch.int64:
                error_msgs.append(f"{bits_key}: expected one int64 (a float64's bits), got {getattr(bits, 'dtype', bits)!r}")
                return
            ratios.append((bits_key, _bits_to_ratio(bits)))
        if value is not None:
            if not isinstance(value, torch.Tensor) or value.numel() != 1 or not value.is_floating_point():
                error_msgs.append(f"{key}: expected one floating-point number, got {getattr(value, 'shape', value)!r}")
                return
            ratios.append((key, float(value.reshape(()).item())))
        if not ratios:  # the keep ratio is state: a state dict without it does not describe the layer
            missing_keys.append(key)
            return
        for name, ratio in ratios:
            if not 0.0 < ratio <= 1.0:  # also refuses NaN
                error_msgs.append(f"{name}: a keep ratio must be in (0, 1], got {ratio!r}")
                return
        if len(ratios) == 2 and ratios[0][1] != ratios[1][1]:
            error_msgs.append(f"{bits_key} ({ratios[0][1]!r}) and {key} ({ratios[1][1]!r}) disagree")
            return
        self.keep_ratio = ratios[0][1]

    def _apply(self, fn, recurse=True):  # .to()/.cuda()/.half() invalidate the cached mask
        self._mask_cache = None
        was_meta = self._buffers[KEEP_RATIO_BITS_KEY].is_meta
        self._sync_keep_ratio()  # a write the buffer still holds, before the buffer is replaced
        out = super()._apply(fn, recurse)
        buf = self._buffers[KEEP_RATIO_BITS_KEY]
        if was_meta and not buf.is_meta:  # to_empty(): the new buffer holds garbage, the ratio is in Python
            self.keep_ratio = self._keep_ratio
        elif not buf.is_meta:  # a copy of the values: nothing to re-read
            self._bits_seen = (buf.data_ptr(), buf._version)
        return out

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, keep_ratio={self._keep_ratio:.4g}, kept={self.kept}, init={self.init}"


def _ratio_to_bits(ratio: float) -> torch.Tensor:
    """The int64 scalar with the bit pattern of float64 ``ratio`` (exact, see :data:`KEEP_RATIO_BITS_KEY`)."""
    return torch.tensor(ratio, dtype=torch.float64).view(torch.int64)


def _bits_to_ratio(bits: torch.Tensor) -> float:
    """Inverse of :func:`_ratio_to_bits` (reads the tensor: a device sync on a GPU)."""
    return float(bits.detach().reshape(()).cpu().view(torch.float64).item())


class MaskedConv2d(MaskedLayer, nn.Conv2d):
    """``nn.Conv2d`` with fixed weights and a learned top-k mask (no bias).

    Args:
        in_channels, out_channels, kernel_size, stride, padding, dilation, groups, padding_mode:
            as ``nn.Conv2d``.
        keep_ratio: fraction of weights kept, in (0, 1]. Default 1.0 (set per layer later).
        init: weight initialisation, one of :data:`INITS`. Default ``"binary"`` (+-1).
        score_init_scale: a in U(-a, a) for the scores. Default 0.01.
        score_scale_by_fan_in: divide a by sqrt(fan_in). Default False.
        generator: seeded CPU generator for weights and scores (default: seed 0).

    Shapes: input (N, C_in, H, W) -> output (N, C_out, H', W').
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int],
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] | str = 0,
        dilation: int | tuple[int, int] = 1,
        groups: int = 1,
        padding_mode: str = "zeros",
        *,
        keep_ratio: float = 1.0,
        init: str = "binary",
        score_init_scale: float = 0.01,
        score_scale_by_fan_in: bool = False,
        generator: torch.Generator | None = None,
        device=None,
    ) -> None:
        # build the parent on the meta device: its random init would be thrown away anyway
        nn.Conv2d.__init__(
            self, in_channels, out_channels, kernel_size, stride, padding, dilation, groups,
            bias=False, padding_mode=padding_mode, device="meta",
        )
        self._init_masked(keep_ratio, init, score_init_scale, score_scale_by_fan_in, generator, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x, self.masked_weight(), None)


class MaskedLinear(MaskedLayer, nn.Linear):
    """``nn.Linear`` with fixed weights and a learned top-k mask (no bias).

    Arguments after ``in_features, out_features`` as :class:`MaskedConv2d`.
    Shapes: input (N, *, in_features) -> output (N, *, out_features).
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        keep_ratio: float = 1.0,
        init: str = "binary",
        score_init_scale: float = 0.01,
        score_scale_by_fan_in: bool = False,
        generator: torch.Generator | None = None,
        device=None,
    ) -> None:
        nn.Linear.__init__(self, in_features, out_features, bias=False, device="meta")
        self._init_masked(keep_ratio, init, score_init_scale, score_scale_by_fan_in, generator, device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.masked_weight())
