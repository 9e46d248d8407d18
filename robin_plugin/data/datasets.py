"""Kept for compatibility: the names ``robin_plugin.data.datasets`` held before it was split by job.

Import from :mod:`robin_plugin.data` instead; each name now lives in the module that does its job:

- :mod:`.registry`: :data:`DATASETS`, :class:`DatasetInfo`, :func:`dataset_info`,
  :func:`get_dataset`, :func:`validation_split`.
- :mod:`.base`: :class:`DatasetError`, :class:`ImageDataset`.
- :mod:`.idx`: :func:`parse_idx`, :func:`load_fashion_mnist` and the Fashion-MNIST constants.
- :mod:`.restricted_pickle`: :class:`RestrictedUnpickler`, :class:`RefusedGlobalError`.
- :mod:`.cifar`: :func:`load_cifar`.
- :mod:`.imagefolder`: :class:`ImageFolderDataset`, :func:`load_image`, :func:`load_imagenet100`.

This module defines nothing; the objects are the same as those of the modules above.
"""
from __future__ import annotations

from .base import DatasetError, ImageDataset
from .cifar import MAX_PICKLE_BYTES, _unpickle, load_cifar
from .idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, MAX_IDX_PAYLOAD, _read_idx, load_fashion_mnist, parse_idx
from .imagefolder import IMAGE_EXTENSIONS, ImageFolderDataset, load_image, load_imagenet100
from .registry import DATASETS, DatasetInfo, dataset_info, get_dataset, validation_split
from .restricted_pickle import RefusedGlobalError, RestrictedUnpickler

__all__ = [
    "DATASETS",
    "DatasetError",
    "DatasetInfo",
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "IMAGE_EXTENSIONS",
    "ImageDataset",
    "ImageFolderDataset",
    "RefusedGlobalError",
    "RestrictedUnpickler",
    "dataset_info",
    "get_dataset",
    "load_cifar",
    "load_fashion_mnist",
    "load_image",
    "load_imagenet100",
    "parse_idx",
    "validation_split",
]
