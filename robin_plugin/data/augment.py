"""Batch augmentation as pure tensor functions: random crop with zero padding and horizontal flip.

The paper's augmentation for CIFAR (pad 4, random 32x32 crop, horizontal flip with
probability 1/2) is applied to whole batches, with the random draws made explicit in a
:class:`CropFlip`. The paper's fast attack keeps one perturbation per training sample across
epochs, in the coordinates of the original image: the trainer moves it into the augmented
image with :func:`apply_crop_flip` (same params as the image) and, after the attack step, back
with :func:`invert_crop_flip`, which keeps the stored values of pixels the crop cut off.

Everything is vectorised over the batch (one ``gather``, no Python loop over samples) and works on
any dtype and device.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..errors import ConfigError, InputError

__all__ = ["CropFlip", "apply_crop_flip", "invert_crop_flip", "sample_crop_flip"]


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


def sample_crop_flip(n: int, pad: int, generator: torch.Generator | None = None, flip: bool = True) -> CropFlip:
    """Draw crop offsets uniformly in ``[0, 2 * pad]`` and flips with probability 1/2.

    Draw order (for reproducibility): ``dy``, then ``dx``, then ``flip`` (one uniform draw per
    sample, only when ``flip`` is True), all from ``generator`` (CPU; None = the global RNG).

    Args:
        n: batch size N (>= 0).
        pad: padding in pixels (>= 0); 0 gives no crop.
        generator: the random stream; pass a seeded one for reproducible training.
        flip: draw horizontal flips; False gives none.

    Returns:
        A :class:`CropFlip` with CPU tensors of length N.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(pad, bool) or not isinstance(pad, int) or pad < 0:
        raise ConfigError(f"pad must be an integer >= 0 (pixels), got {pad!r}")
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
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


def apply_crop_flip(x: torch.Tensor, params: CropFlip) -> torch.Tensor:
    """Augment a batch: zero-pad by ``pad``, crop H x W at ``(dy, dx)``, then flip where ``flip``.

    ``out[n, :, i, j] = padded[n, :, i + dy[n], j' + dx[n]]`` with ``j' = W - 1 - j`` if
    ``flip[n]`` else ``j``; padded pixels are 0.

    Args:
        x: (N, C, H, W) tensor of any dtype (``uint8`` images, float images or perturbations).
        params: a :class:`CropFlip` for N samples.

    Returns:
        A new (N, C, H, W) tensor of the same dtype and device.
    """
    _check_batch(x, params, "x")
    n, c, h, w = x.shape
    p = params.pad
    xp = F.pad(x, (p, p, p, p)) if p else x  # (N, C, H + 2p, W + 2p)
    rows, cols = _source_coords(params, h, w, x.device)
    flat = (rows[:, :, None] * (w + 2 * p) + cols[:, None, :]).view(n, 1, h * w)  # (N, 1, H*W)
    out = xp.reshape(n, c, (h + 2 * p) * (w + 2 * p)).gather(2, flat.expand(n, c, h * w))  # (N, C, H*W)
    return out.view(n, c, h, w)


def invert_crop_flip(delta_aug: torch.Tensor, params: CropFlip, previous: torch.Tensor) -> torch.Tensor:
    """Map a perturbation from augmented coordinates back to the original images.

    Every original pixel the crop saw takes the value of ``delta_aug`` at the augmented pixel
    it moved to; pixels the crop cut off keep their ``previous`` value. So
    ``invert_crop_flip(apply_crop_flip(d, p), p, prev)`` equals ``d`` on the visible region and
    ``prev`` elsewhere.

    Args:
        delta_aug: (N, C, H, W) perturbation of the augmented batch.
        params: the :class:`CropFlip` the batch was augmented with.
        previous: (N, C, H, W) stored perturbation in original coordinates.

    Returns:
        A new (N, C, H, W) tensor in original coordinates, dtype of ``previous``.
    """
    _check_batch(delta_aug, params, "delta_aug")
    _check_batch(previous, params, "previous")
    if previous.shape != delta_aug.shape:
        raise InputError(f"previous must have the shape of delta_aug {tuple(delta_aug.shape)}, got {tuple(previous.shape)}")
    n, c, h, w = delta_aug.shape
    p, dev = params.pad, delta_aug.device
    dy, dx = params.dy.to(dev).long(), params.dx.to(dev).long()
    flip = params.flip.to(dev)
    # original pixel (r, s) sits at padded (r + p, s + p): augmented row i = r + p - dy, and
    # pre-flip column j' = s + p - dx, flipped back to the output column j.
    i = torch.arange(h, device=dev)[None, :] + p - dy[:, None]  # (N, H)
    jp = torch.arange(w, device=dev)[None, :] + p - dx[:, None]  # (N, W)
    j = torch.where(flip[:, None], w - 1 - jp, jp)
    visible = ((i >= 0) & (i < h))[:, :, None] & ((jp >= 0) & (jp < w))[:, None, :]  # (N, H, W)
    flat = (i.clamp(0, h - 1)[:, :, None] * w + j.clamp(0, w - 1)[:, None, :]).view(n, 1, h * w)
    moved = delta_aug.reshape(n, c, h * w).gather(2, flat.expand(n, c, h * w)).view(n, c, h, w)
    return torch.where(visible[:, None], moved.to(previous.dtype), previous)
