"""CIFAR-10 and CIFAR-100 from their python version on disk (pickled batches).

Every file is read with :class:`~robin_plugin.data.restricted_pickle.RestrictedUnpickler`, so
nothing a file names is ever run; sizes, dtypes, label ranges and class names are checked, and
any failure is a :class:`~robin_plugin.data.base.DatasetError` naming the file. Nothing here
downloads.
"""
from __future__ import annotations

import io
import logging
import os
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import UnknownNameError, closest
from .base import DatasetError, ImageDataset, check_root, check_split
from .restricted_pickle import RefusedGlobalError, RestrictedUnpickler

__all__ = ["MAX_PICKLE_BYTES", "load_cifar"]

_logger = logging.getLogger(__name__)

# Refuse pickle files larger than this (the real CIFAR-100 train file is 155 MB).
MAX_PICKLE_BYTES = 1 << 30


def _unpickle(path: Path) -> Any:
    """Read a CIFAR pickle with :class:`RestrictedUnpickler`; any failure is a DatasetError."""
    try:
        size = path.stat().st_size
        if size > MAX_PICKLE_BYTES:
            raise DatasetError(f"CIFAR file {path} is {size} bytes, more than the {MAX_PICKLE_BYTES}-byte limit")
        data = path.read_bytes()  # parse from memory: a forged length can then never over-read
    except DatasetError:
        raise
    except OSError as e:
        raise DatasetError(f"cannot read CIFAR file {path}: {e.strerror or e}") from e
    try:
        return RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
    except RefusedGlobalError as e:
        raise DatasetError(
            f"CIFAR file {path} refused: it asks for the Python global {e.name}, which CIFAR python "
            "batches never contain (only numpy arrays, lists, numbers and bytes); nothing in it was run"
        ) from None
    except pickle.UnpicklingError as e:
        raise DatasetError(f"CIFAR file {path} is corrupt or not a CIFAR python batch: {e}") from e
    except Exception as e:  # a malformed pickle can raise almost anything; none of it may escape
        raise DatasetError(f"CIFAR file {path} is corrupt or not a CIFAR python batch: {type(e).__name__}: {e}") from e


def _key(d: dict, key: str, path: Path) -> Any:
    for k in (key.encode(), key):  # the originals (Python 2) have bytes keys; accept re-saved str keys
        if k in d:
            return d[k]
    raise DatasetError(f"CIFAR file {path} has no {key!r} entry; found keys {sorted(map(repr, d))[:8]}")


_CIFAR = {
    # name: (folder, train files, test files, meta file, label key, class-names key, classes)
    "cifar10": ("cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)], ["test_batch"], "batches.meta", "labels", "label_names", 10),
    "cifar100": ("cifar-100-python", ["train"], ["test"], "meta", "fine_labels", "fine_label_names", 100),
}


def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    d = _unpickle(path)
    if not isinstance(d, dict):
        raise DatasetError(f"CIFAR file {path} holds a {type(d).__name__}, expected a dict with 'data' and {label_key!r}")
    data, labels = _key(d, "data", path), _key(d, label_key, path)
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        got = f"{data.dtype} array of shape {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DatasetError(f"CIFAR file {path}: 'data' must be a uint8 array of shape (N, 3072), got {got}")
    if isinstance(labels, np.ndarray):
        labels = labels.tolist()
    if not isinstance(labels, list) or not all(type(y) is int for y in labels):
        raise DatasetError(f"CIFAR file {path}: {label_key!r} must be a list of integers, got {type(labels).__name__}")
    if len(labels) != data.shape[0]:
        raise DatasetError(f"CIFAR file {path} holds {data.shape[0]} images but {len(labels)} labels; expected equal counts")
    y = np.asarray(labels, dtype=np.int64)
    if y.size and (y.min() < 0 or y.max() >= num_classes):
        raise DatasetError(
            f"CIFAR file {path}: {label_key!r} values must lie in [0, {num_classes - 1}], got [{int(y.min())}, {int(y.max())}]"
        )
    return data, y


def _read_cifar_meta(path: Path, names_key: str, num_classes: int) -> list[str]:
    d = _unpickle(path)
    if not isinstance(d, dict):
        raise DatasetError(f"CIFAR meta file {path} holds a {type(d).__name__}, expected a dict with {names_key!r}")
    names = _key(d, names_key, path)
    if not isinstance(names, list) or len(names) != num_classes or not all(isinstance(n, (bytes, str)) for n in names):
        got = f"{len(names)} entries" if isinstance(names, list) else type(names).__name__
        raise DatasetError(f"CIFAR meta file {path}: {names_key!r} must list {num_classes} class names, got {got}")
    try:
        return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
    except UnicodeDecodeError as e:
        raise DatasetError(f"CIFAR meta file {path}: class names are not UTF-8 text: {e}") from e


def load_cifar(root: str | os.PathLike, name: str = "cifar10", split: str = "train") -> ImageDataset:
    """Load CIFAR-10 or CIFAR-100 from the standard python version on disk.

    Expected layouts (the extracted ``cifar-10-python.tar.gz`` / ``cifar-100-python.tar.gz``)::

        <root>/cifar-10-batches-py/{data_batch_1, ..., data_batch_5, test_batch, batches.meta}
        <root>/cifar-100-python/{train, test, meta}

    ``root`` may also be the ``cifar-10-batches-py`` / ``cifar-100-python`` folder itself.
    CIFAR-100 uses the 100 fine labels.

    Args:
        root: the folder described above.
        name: ``"cifar10"`` or ``"cifar100"``.
        split: ``"train"`` or ``"test"``.

    Returns:
        An :class:`ImageDataset` of (N, 3, 32, 32) ``uint8`` images.

    Raises:
        DatasetError: missing folder or file, a pickle that is corrupt or names any global
            other than numpy's array constructors (never executed), wrong shapes or dtypes,
            labels out of range, or a wrong number of class names.
    """
    if name not in _CIFAR:
        raise UnknownNameError(f"unknown CIFAR variant {name!r}{closest(str(name), _CIFAR)}; valid: {', '.join(_CIFAR)}")
    check_split(split, ("train", "test"), name)
    sub, train_files, test_files, meta_file, label_key, names_key, num_classes = _CIFAR[name]
    all_files = [*train_files, *test_files, meta_file]
    expected = f"{sub}/ with {', '.join(all_files)}"
    root = check_root(root, name, expected)
    at_batches = root.name == sub or ((root / meta_file).is_file() and not (root / sub).is_dir())
    folder = root if at_batches else root / sub
    if not folder.is_dir():
        raise DatasetError(
            f"{name} folder {folder} does not exist; expected {root}/{expected} "
            f"(extract the python version of {name.upper()} there; nothing is downloaded)"
        )
    files = [*(train_files if split == "train" else test_files), meta_file]
    missing = [f for f in files if not (folder / f).is_file()]
    if missing:
        raise DatasetError(f"{name} folder {folder} lacks {', '.join(missing)}; expected {', '.join(all_files)}")
    classes = _read_cifar_meta(folder / meta_file, names_key, num_classes)
    parts = [_read_cifar_batch(folder / f, label_key, num_classes) for f in files[:-1]]
    data = np.concatenate([p[0] for p in parts])  # (N, 3072): 1024 red, 1024 green, 1024 blue, row-major
    labels = np.concatenate([p[1] for p in parts])
    if data.shape[0] == 0:
        raise DatasetError(f"{name} folder {folder} holds no {split} images")
    ds = ImageDataset(
        torch.from_numpy(data.reshape(-1, 3, 32, 32)),  # (N, 3, 32, 32); concatenate made a fresh array
        torch.from_numpy(labels),
        classes,
        f"{name}/{split}",
    )
    _logger.info("loaded %s from %s: %d images", ds.name, folder, len(ds))
    return ds
