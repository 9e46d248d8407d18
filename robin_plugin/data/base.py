"""The in-memory dataset class, the dataset error and the argument checks every format shares.

Images stay ``uint8`` in memory (a 4x saving over float32) and are converted to floats in
[0, 1] (pixel / 255) one batch at a time by whoever consumes them, all with :func:`to_float`
(the trainer, validation, the guard, evaluation, and a loop of your own).

Every dataset yields ``(image, label, index)`` triples: the trainer's fast attack keeps one
perturbation per training sample and needs the sample's index to find it.

The formats (:mod:`.idx`, :mod:`.cifar`, :mod:`.imagefolder`) import this module; it imports
none of them.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from .._checks import is_int
from ..errors import ConfigError, InputError, RobinError, UnknownNameError, closest

__all__ = [
    "DatasetError",
    "ImageDataset",
    "check_image_size",
    "check_index",
    "check_indices",
    "check_root",
    "check_split",
    "pixel_range_problem",
    "to_float",
]



def to_float(images: torch.Tensor) -> torch.Tensor:
    """Images as ``float32`` in [0, 1]: the package's one input conversion.

    Args:
        images: a tensor of any shape, ``uint8`` (0..255, divided by 255) or floating point
            (float16 / 32 / 64, converted to float32 as they are; their range is not checked here).

    Returns:
        A float32 tensor (a new one for uint8 and float16 / 64; ``images`` itself for float32).

    Raises:
        InputError: any other dtype.
    """
    if images.dtype == torch.uint8:
        return images.float().div_(255)
    if not images.is_floating_point():
        raise InputError(f"images must be uint8 (0..255) or floats in [0, 1], got dtype {images.dtype}")
    return images.float()


def pixel_range_problem(images: torch.Tensor) -> str | None:
    """What is wrong with the values of float ``images`` for a robin model, or None.

    The one check of the input contract's values (finite, in [0, 1]); the model's batch check,
    the evaluation's test set and the trainer's in-memory datasets each phrase the error.
    Returns ``"NaN or Inf"`` or ``"values in [lo, hi]"``.
    """
    if not images.numel():
        return None
    lo, hi = torch.aminmax(images.detach())
    if not (torch.isfinite(lo) and torch.isfinite(hi)):
        return "NaN or Inf"
    if lo < 0 or hi > 1:
        return f"values in [{lo.item():.4g}, {hi.item():.4g}]"
    return None


class DatasetError(RobinError, OSError):
    """A dataset folder or file is missing, incomplete, corrupt or not of the expected kind."""


class ImageDataset(Dataset):
    """An in-memory image classification dataset of square ``uint8`` images.

    Args:
        images: ``uint8`` tensor (N, C, H, W) with H == W, pixel values 0..255.
        labels: ``int64`` tensor (N,) with values in ``[0, len(classes))``.
        classes: class names; ``len(classes)`` is the number of classes.
        name: dataset name for logs and error messages (``"cifar10/train"``).

    ``dataset[i]`` is ``(images[i], labels[i], i)``: a (C, H, W) ``uint8`` tensor, a 0-dim
    ``int64`` tensor and the sample's index in this dataset (an ``int``).

    Raises:
        ConfigError: on a wrong dtype, shape, non-square images or a label out of range.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, classes: Sequence[str], name: str = "dataset"):
        if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.dim() != 4:
            got = f"{images.dtype} tensor of shape {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ConfigError(f"{name}: images must be a uint8 tensor of shape (N, C, H, W), got {got}")
        if images.shape[2] != images.shape[3] or images.shape[2] == 0 or images.shape[1] == 0:
            raise ConfigError(f"{name}: images must be square with C >= 1 and H == W >= 1, got shape {tuple(images.shape)}")
        if not isinstance(labels, torch.Tensor) or labels.dtype != torch.int64 or labels.shape != (images.shape[0],):
            got = f"{labels.dtype} tensor of shape {tuple(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
            raise ConfigError(f"{name}: labels must be an int64 tensor of shape ({images.shape[0]},), got {got}")
        classes = list(classes)
        if not classes or not all(isinstance(c, str) for c in classes):
            raise ConfigError(f"{name}: classes must be a non-empty list of str, got {classes!r:.200}")
        if labels.numel():
            lo, hi = int(labels.min()), int(labels.max())
            if lo < 0 or hi >= len(classes):
                raise ConfigError(f"{name}: labels must lie in [0, {len(classes) - 1}], got values in [{lo}, {hi}]")
        self.images = images
        self.labels = labels
        self.classes = classes
        self.name = name

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        i = check_index(index, len(self))
        return self.images[i], self.labels[i], i

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def in_chans(self) -> int:
        return self.images.shape[1]

    @property
    def image_size(self) -> int:
        """Side of the square images in pixels."""
        return self.images.shape[2]

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageDataset:
        """A new dataset with the samples at ``indices`` (in that order), re-indexed from 0.

        The tensors are copied, so the subset does not keep the full dataset alive.
        """
        idx = check_indices(indices, len(self), self.name)
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, in_chans={self.in_chans}, "
            f"image_size={self.image_size}, num_classes={self.num_classes})"
        )


def check_index(index: Any, n: int) -> int:
    """``index`` as an ``int`` in ``[0, n)`` (negative counts from the end); :class:`IndexError` otherwise."""
    try:
        i = int(index)
    except (TypeError, ValueError):
        raise IndexError(f"dataset index must be an integer, got {index!r}") from None
    if not -n <= i < n:
        raise IndexError(f"dataset index {i} out of range for {n} samples")
    return i + n if i < 0 else i


def check_indices(indices: Sequence[int] | torch.Tensor, n: int, name: str) -> torch.Tensor:
    """``indices`` as a 1-D ``int64`` tensor of values in ``[0, n)``; :class:`ConfigError` naming ``name`` otherwise."""
    try:
        idx = torch.as_tensor(indices)
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"{name}: subset indices must be a 1-D sequence of integers, got {indices!r:.100}") from e
    if idx.numel() == 0:
        idx = idx.reshape(0).long()
    if idx.dim() != 1 or idx.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8):
        raise ConfigError(f"{name}: subset indices must be a 1-D tensor of integers, got {idx.dtype} of shape {tuple(idx.shape)}")
    idx = idx.long()
    if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise ConfigError(f"{name}: subset indices must lie in [0, {n - 1}], got values in [{int(idx.min())}, {int(idx.max())}]")
    return idx


def check_image_size(image_size: int) -> None:
    """Raise :class:`ConfigError` unless ``image_size`` (pixels) is an integer >= 1."""
    if not is_int(image_size) or image_size < 1:
        raise ConfigError(f"image_size must be an integer >= 1 (pixels), got {image_size!r}")


def check_split(split: str, valid: Sequence[str], dataset: str) -> str:
    """``split`` if it is one of ``valid``; :class:`UnknownNameError` with the closest name otherwise."""
    if not isinstance(split, str) or split not in valid:
        raise UnknownNameError(
            f"unknown split {split!r} for {dataset}{closest(str(split), valid)}; valid: {', '.join(valid)}"
        )
    return split


def check_root(root: str | os.PathLike | None, dataset: str, expected: str) -> Path:
    """``root`` as a :class:`Path` (``~`` expanded).

    Raises:
        DatasetError: ``root`` is None (``expected`` names what the folder must hold).
        ConfigError: ``root`` is not path-like.
    """
    if root is None:
        raise DatasetError(f"{dataset} has no default location: give the folder holding {expected} "
                           f"(robin train: data_root=<folder>; robin eval: --data-root <folder>; Python: root=<folder>)")
    try:
        return Path(root).expanduser()
    except TypeError as e:
        raise ConfigError(f"root must be a path to a folder, got {root!r}") from e
