"""Datasets read from local folders (never downloaded) and batch augmentation.

- :mod:`.registry`: the dataset registry (:data:`DATASETS`, :func:`dataset_info`),
  :func:`get_dataset` by name, and the held-out :func:`validation_split`.
- :mod:`.base`: :class:`ImageDataset` (in-memory ``uint8`` images), :class:`DatasetError` and
  the argument checks the formats share.
- :mod:`.idx`: the IDX format and Fashion-MNIST.
- :mod:`.restricted_pickle`: an unpickler that builds numpy arrays and nothing else.
- :mod:`.cifar`: CIFAR-10 / CIFAR-100 python batches, read with that unpickler.
- :mod:`.imagefolder`: ImageNet-100 / any ImageFolder tree, decoded lazily with PIL.
- :mod:`.augment`: random crop and flip applied to whole batches.

Imports flow one way: ``base`` <- the formats <- ``registry`` <- this package.
See ``docs/data.md`` for the supported datasets, their on-disk layouts and the errors.
"""
from __future__ import annotations

from .augment import CropFlip, apply_crop_flip, put_crop_flip, sample_crop_flip, take_crop_flip
from .base import DatasetError, ImageDataset, to_float
from .cifar import load_cifar
from .idx import load_fashion_mnist, parse_idx
from .imagefolder import ImageFolderDataset, load_image, load_imagenet100
from .registry import DATASETS, DatasetInfo, dataset_info, get_dataset, validation_split
from .restricted_pickle import RefusedGlobalError, RestrictedUnpickler

__all__ = [
    "DATASETS", "DatasetError", "DatasetInfo", "ImageDataset", "ImageFolderDataset",
    "RefusedGlobalError", "RestrictedUnpickler", "dataset_info", "get_dataset", "load_cifar", "load_fashion_mnist",
    "load_image", "load_imagenet100", "parse_idx", "validation_split",
    "CropFlip", "apply_crop_flip", "put_crop_flip", "sample_crop_flip", "take_crop_flip", "to_float",
]
