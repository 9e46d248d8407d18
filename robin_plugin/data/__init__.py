"""Datasets read from local folders (never downloaded) and batch augmentation.

See ``docs/data.md`` for the supported datasets, their on-disk layouts and the errors.
"""
from __future__ import annotations

from .augment import CropFlip, apply_crop_flip, invert_crop_flip, sample_crop_flip, to_float
from .datasets import (
    DATASETS,
    DatasetError,
    DatasetInfo,
    ImageDataset,
    ImageFolderDataset,
    RefusedGlobalError,
    RestrictedUnpickler,
    dataset_info,
    get_dataset,
    load_cifar,
    load_fashion_mnist,
    load_image,
    load_imagenet100,
    parse_idx,
    validation_split,
)

__all__ = [
    "DATASETS", "DatasetError", "DatasetInfo", "ImageDataset", "ImageFolderDataset",
    "RefusedGlobalError", "RestrictedUnpickler", "dataset_info", "get_dataset", "load_cifar", "load_fashion_mnist",
    "load_image", "load_imagenet100", "parse_idx", "validation_split",
    "CropFlip", "apply_crop_flip", "invert_crop_flip", "sample_crop_flip", "to_float",
]
