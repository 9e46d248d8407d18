"""The dataset registry: what each dataset is (:class:`DatasetInfo`), loading one by name
(:func:`get_dataset`), and the held-out validation split of the paper's protocol.

The registry dispatches to the format modules (:mod:`.idx`, :mod:`.cifar`, :mod:`.imagefolder`);
they never import it.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, UnknownNameError, closest
from .base import ImageDataset
from .cifar import load_cifar
from .idx import load_fashion_mnist
from .imagefolder import ImageFolderDataset, load_imagenet100

__all__ = ["DATASETS", "DatasetInfo", "dataset_info", "get_dataset", "validation_split"]


@dataclass(frozen=True)
class DatasetInfo:
    """What a trainer needs to know about a dataset before loading it.

    Attributes:
        name: registry name (``"cifar10"``).
        num_classes: number of classes.
        in_chans: image channels C.
        image_size: side of the square images in pixels (ImageNet-100: the loader's default).
        mean, std: per-channel statistics in [0, 1] pixel units, length ``in_chans``.
        default_eps: the paper's L-inf attack radius in [0, 1] pixel units (the official code's: 8/255
            CIFAR-10, 4/255 CIFAR-100, 2/255 ImageNet-100; RobustBench's CIFAR-100 board is at 8/255).
        default_step: the paper's PGD step size in [0, 1] pixel units.
    """

    name: str
    num_classes: int
    in_chans: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    default_eps: float
    default_step: float


DATASETS: Mapping[str, DatasetInfo] = MappingProxyType({
    "fashion_mnist": DatasetInfo("fashion_mnist", 10, 1, 28, (0.2860,), (0.3530,), 0.1, 0.025),
    "cifar10": DatasetInfo(
        "cifar10", 10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2471, 0.2435, 0.2616), 8 / 255, 2 / 255
    ),
    "cifar100": DatasetInfo(
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 4 / 255, 1 / 255
    ),
    "imagenet100": DatasetInfo(
        "imagenet100", 100, 3, 224, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 2 / 255, 0.5 / 255
    ),
})


def _check_name(name: str) -> str:
    if not isinstance(name, str) or name not in DATASETS:
        shown = name if isinstance(name, str) else repr(name)
        raise UnknownNameError(
            f"unknown dataset {shown!r}{closest(str(name), DATASETS)}; valid: {', '.join(DATASETS)}"
        )
    return name


def dataset_info(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` of a registered dataset; :class:`UnknownNameError` otherwise."""
    return DATASETS[_check_name(name)]


# name: (loader(root, split, **kwargs), the keyword arguments it accepts)
_LOADERS: dict[str, tuple[Callable[..., Dataset], tuple[str, ...]]] = {
    "fashion_mnist": (lambda root, split: load_fashion_mnist(root, split), ()),
    "cifar10": (lambda root, split: load_cifar(root, "cifar10", split), ()),
    "cifar100": (lambda root, split: load_cifar(root, "cifar100", split), ()),
    "imagenet100": (lambda root, split, **kw: load_imagenet100(root, split, **kw), ("class_list", "image_size")),
}


def get_dataset(name: str, root: str | os.PathLike | None = None, split: str = "train", **kwargs: Any) -> ImageDataset | ImageFolderDataset:
    """Load a registered dataset by name.

    Args:
        name: one of ``DATASETS`` (``"fashion_mnist"``, ``"cifar10"``, ``"cifar100"``,
            ``"imagenet100"``).
        root: its folder (see the loaders); only Fashion-MNIST has a default.
        split: ``"train"`` or ``"test"`` (ImageNet-100 also ``"val"``, the same folder).
        **kwargs: passed to the loader (``class_list``, ``image_size`` for ImageNet-100).

    Raises:
        UnknownNameError: unknown dataset, split or option name (with the closest valid name).
        DatasetError: see the loaders.
    """
    loader, accepted = _LOADERS[_check_name(name)]
    for key in kwargs:
        if key not in accepted:
            valid = ", ".join(accepted) or "none"
            raise UnknownNameError(f"dataset {name!r} takes no option {key!r}{closest(key, accepted)}; valid options: {valid}")
    return loader(root, split, **kwargs)


def validation_split(n: int, fraction: float = 0.02, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``range(n)`` into training and held-out validation indices, reproducibly.

    The paper holds out 2% of the training set to pick the best epoch. ``round(n * fraction)``
    samples are held out (at least one when ``fraction > 0`` and ``n >= 2``; never all), drawn
    with a ``torch.Generator`` seeded with ``seed``, independent of the global RNG.

    Args:
        n: number of samples (>= 0).
        fraction: held-out fraction in [0, 1).
        seed: integer >= 0.

    Returns:
        ``(train_indices, val_indices)``: sorted ``int64`` tensors, disjoint, covering ``range(n)``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"n must be an integer >= 0, got {n!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not 0 <= fraction < 1:
        raise ConfigError(f"validation fraction must be a number in [0, 1), got {fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    k = round(n * fraction)
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    else:
        k = min(k, max(n - 1, 0))
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[k:].sort().values, perm[:k].sort().values
