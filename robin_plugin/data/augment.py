"""Batch augmentation as pure tensor functions: random crop of the padded image and horizontal flip.

The paper's augmentation for CIFAR (pad 4, random 32x32 crop, horizontal flip with
probability 1/2) is applied to whole batches, with the random draws made explicit in a
:class:`CropFlip`. The padding value is a parameter: 0 for the data loader's augmentation
(torchvision's ``RandomCrop(32, padding=4)``), 0.5 for the paper's fast attack, which pads,
crops and flips by itself (``code/util/augmentation.py`` of the official code).

The fast attack keeps one perturbation per training sample across epochs, in the coordinates
of the padded image (H + 2 pad, W + 2 pad), as the official code does: :func:`take_crop_flip`
reads the window a batch's crop and flip see, and :func:`put_crop_flip` writes a window back.

Everything is vectorised over the batch (one ``gather``, no Python loop over samples) and works on
any dtype and device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError

__all__ = ["CropFlip", "apply_crop_flip", "put_crop_flip", "sample_crop_flip", "take_crop_flip"]


@dataclass(frozen=True, eq=False)
class CropFlip:
    """Per-sample crop offsets and flips for a batch of N images.

    Attributes:
        dy, dx: ``int64`` tensors (N,), crop offsets into the zero-padded image, in
            ``[0, 2 * pad]``; ``pad`` means no shift.
        flip: ``bool`` tensor (N,), flip the crop horizontally.
        pad: zero padding on each side, in pixels (>= 0).
    """

    dy: torch.Tensor
    dx: torch.Tensor
    flip: torch.Tensor
    pad: int

    def __post_init__(self) -> None:
        if isinstance(self.pad, bool) or not isinstance(self.pad, int) or self.pad < 0:
            raise ConfigError(f"pad must be an integer >= 0 (pixels), got {self.pad!r}")
        for name in ("dy", "dx", "flip"):
            t = getattr(self, name)
            if not isinstance(t, torch.Tensor) or t.dim() != 1:
                raise ConfigError(f"CropFlip.{name} must be a 1-D tensor (N,), got {t!r:.80}")
        n = self.dy.shape[0]
        if self.dx.shape[0] != n or self.flip.shape[0] != n:
            raise ConfigError(
                f"CropFlip dy, dx and flip must have the same length N, got {n}, {self.dx.shape[0]}, {self.flip.shape[0]}"
            )
        if self.flip.dtype != torch.bool:
            raise ConfigError(f"CropFlip.flip must be a bool tensor, got {self.flip.dtype}")
        for name in ("dy", "dx"):
            t = getattr(self, name)
            if t.dtype.is_floating_point or t.dtype.is_complex or t.dtype == torch.bool:
                raise ConfigError(f"CropFlip.{name} must be an integer tensor, got {t.dtype}")
            if n and (int(t.min()) < 0 or int(t.max()) > 2 * self.pad):
                raise ConfigError(
                    f"CropFlip.{name} offsets must lie in [0, {2 * self.pad}] for pad={self.pad}, "
                    f"got values in [{int(t.min())}, {int(t.max())}]"
                )

    def __len__(self) -> int:
        return self.dy.shape[0]


def sample_crop_flip(n: int, pad: int, generator: torch.Generator | None = None, flip: bool = True,
                     offsets: int | None = None) -> CropFlip:
    """Draw crop offsets uniformly in ``[0, offsets - 1]`` and flips with probability 1/2.

    Draw order (for reproducibility): ``dy``, then ``dx``, then ``flip`` (one uniform draw per
    sample, only when ``flip`` is True), all from ``generator`` (CPU; None = the global RNG).

    Args:
        n: batch size N (>= 0).
        pad: padding in pixels (>= 0); 0 gives no crop.
        generator: the random stream; pass a seeded one for reproducible training.
        flip: draw horizontal flips; False gives none.
        offsets: number of crop positions per axis, in [1, 2 * pad + 1]. Default ``2 * pad + 1``
            (every position, as torchvision's ``RandomCrop``); the official fast attack draws
            ``np.random.randint(0, 8)`` at pad 4, that is ``offsets = 2 * pad``.

    Returns:
        A :class:`CropFlip` with CPU tensors of length N.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"pad must be an integer >= 0 (pixels), got {pad!r}")
    if offsets is None:
        offsets = 2 * pad + 1
    if isinstance(offsets, bool) or not isinstance(offsets, int) or not 1 <= offsets <= 2 * pad + 1:
        raise ConfigError(f"offsets must be an integer in [1, {2 * pad + 1}] for pad={pad}, got {offsets!r}")
    dy = torch.randint(0, offsets, (n,), generator=generator)
    dx = torch.randint(0, offsets, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5 if flip else torch.zeros(n, dtype=torch.bool)
    return CropFlip(dy, dx, flips, pad)


def _check_batch(x: torch.Tensor, params: CropFlip, what: str) -> None:
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        got = f"shape {tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
        raise InputError(f"{what} must be a tensor of shape (N, C, H, W), got {got}")
    if x.shape[0] != len(params):
        raise InputError(f"{what} has {x.shape[0]} samples but the CropFlip params are for {len(params)}")


def _source_coords(params: CropFlip, h: int, w: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Padded-image row (N, H) and column (N, W) read by each output pixel of the augmented batch."""
    dy, dx = params.dy.to(device).long(), params.dx.to(device).long()
    flip = params.flip.to(device)
    rows = torch.arange(h, device=device)[None, :] + dy[:, None]  # (N, H)
    j = torch.arange(w, device=device)[None, :].expand(len(params), w)  # (N, W)
    cols = torch.where(flip[:, None], w - 1 - j, j) + dx[:, None]  # (N, W)
    return rows, cols


def apply_crop_flip(x: torch.Tensor, params: CropFlip, fill: float = 0.0) -> torch.Tensor:
    """Augment a batch: pad by ``pad`` with ``fill``, crop H x W at ``(dy, dx)``, then flip where ``flip``.

    ``out[n, :, i, j] = padded[n, :, i + dy[n], j' + dx[n]]`` with ``j' = W - 1 - j`` if
    ``flip[n]`` else ``j``; padded pixels are ``fill``.

    Args:
        x: (N, C, H, W) tensor of any dtype (``uint8`` images, float images or perturbations).
        params: a :class:`CropFlip` for N samples.
        fill: value of the padding (0: torchvision's ``RandomCrop``; 0.5: the official fast attack).

    Returns:
        A new (N, C, H, W) tensor of the same dtype and device.
    """
    _check_batch(x, params, "x")
    p = params.pad
    xp = F.pad(x, (p, p, p, p), value=fill) if p else x  # (N, C, H + 2p, W + 2p)
    return _take(xp, params, x.shape[2], x.shape[3])


def _flat_index(params: CropFlip, h: int, w: int, padded_w: int, device: torch.device) -> torch.Tensor:
    rows, cols = _source_coords(params, h, w, device)
    return (rows[:, :, None] * padded_w + cols[:, None, :]).view(len(params), 1, h * w)  # (N, 1, H*W)


def _take(xp: torch.Tensor, params: CropFlip, h: int, w: int) -> torch.Tensor:
    n, c, hp, wp = xp.shape
    flat = _flat_index(params, h, w, wp, xp.device)
    return xp.reshape(n, c, hp * wp).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)  # (N, C, H, W)


def _check_padded(xp: torch.Tensor, params: CropFlip, h: int, w: int, what: str) -> None:
    _check_batch(xp, params, what)
    expected = (h + 2 * params.pad, w + 2 * params.pad)
    if tuple(xp.shape[2:]) != expected:
        raise InputError(f"{what} must be padded to {expected} (H + 2 pad, W + 2 pad), got {tuple(xp.shape[2:])}")


def take_crop_flip(padded: torch.Tensor, params: CropFlip, h: int, w: int) -> torch.Tensor:
    """The H x W window of already padded tensors that a batch's crop and flip see.

    ``take_crop_flip(F.pad(x, (p,) * 4), params, H, W)`` equals ``apply_crop_flip(x, params)``.

    Args:
        padded: (N, C, H + 2 pad, W + 2 pad), e.g. per-sample perturbations in padded coordinates.
        params: a :class:`CropFlip` for N samples.
        h, w: size of the window (the augmented images).

    Returns:
        A new (N, C, H, W) tensor.
    """
    _check_padded(padded, params, h, w, "padded")
    return _take(padded, params, h, w)


def put_crop_flip(padded: torch.Tensor, params: CropFlip, window: torch.Tensor) -> torch.Tensor:
    """Write a window back where :func:`take_crop_flip` read it; the other pixels keep their value.

    ``put_crop_flip(d, p, take_crop_flip(d, p, H, W))`` equals ``d``.

    Args:
        padded: (N, C, H + 2 pad, W + 2 pad) tensor to update (not modified).
        params: the :class:`CropFlip` the window was taken with.
        window: (N, C, H, W) new values, in augmented coordinates.

    Returns:
        A new (N, C, H + 2 pad, W + 2 pad) tensor, dtype of ``padded``.
    """
    _check_batch(window, params, "window")
    n, c, h, w = window.shape
    _check_padded(padded, params, h, w, "padded")
    hp, wp = padded.shape[2:]
    flat = _flat_index(params, h, w, wp, padded.device)
    out = padded.reshape(n, c, hp * wp).clone()
    out.scatter_(2, flat.expand(n, c, h * w), window.reshape(n, c, h * w).to(padded.dtype))
    return out.view(n, c, hp, wp)
