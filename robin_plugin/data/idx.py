"""The IDX file format (MNIST's) and Fashion-MNIST, read from its original files.

:func:`parse_idx` parses an unsigned-byte IDX file held in memory; :func:`load_fashion_mnist`
finds the four files (each optionally gzip-compressed) and checks that they agree. Nothing here
downloads; a forged header or a gzip bomb is refused before it can allocate memory the file
does not hold.
"""
from __future__ import annotations

import gzip
import logging
import math
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..errors import ConfigError
from .base import DatasetError, ImageDataset, check_root, check_split

__all__ = ["FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "MAX_IDX_PAYLOAD", "load_fashion_mnist", "parse_idx"]

_logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian `dataset-fashion-mnist`
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]

# Refuse files whose header promises more than this many payload bytes (ImageNet-scale IDX
# files do not exist; the real Fashion-MNIST train images are 47 MB).
MAX_IDX_PAYLOAD = 1 << 31
_IDX_UBYTE = 0x08  # the IDX data-type byte for unsigned bytes, the only type MNIST files use


def parse_idx(data: bytes, path: str | os.PathLike, expected_ndim: int | None = None) -> np.ndarray:
    """Parse an unsigned-byte IDX file (the MNIST format) held in memory.

    Layout: magic ``00 00 08 D`` (D = number of dimensions), D big-endian uint32 sizes, then
    exactly prod(sizes) bytes of data. Images are ``00 00 08 03`` (N, rows, cols) and labels
    ``00 00 08 01`` (N,).

    Args:
        data: the file's bytes (already decompressed).
        path: the file, for error messages only.
        expected_ndim: if given, D must equal it.

    Returns:
        A read-only ``uint8`` array with the shape the header gives.

    Raises:
        DatasetError: wrong magic, unsupported dtype, wrong D, or a payload whose length does
            not match the header exactly (truncated or oversized file).
    """
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ConfigError(f"parse_idx expects bytes, got {type(data).__name__}")
    data = bytes(data)
    what = f"IDX file {path}"
    if len(data) < 4:
        raise DatasetError(f"{what} is truncated: {len(data)} bytes, expected at least a 4-byte magic number")
    zero, dtype, ndim = int.from_bytes(data[:2], "big"), data[2], data[3]
    if zero != 0 or ndim == 0 or (expected_ndim is not None and ndim != expected_ndim):
        want = f"0x000008{expected_ndim:02x}" if expected_ndim is not None else "0x000008DD (DD = dimensions >= 1)"
        raise DatasetError(f"{what} has wrong magic number 0x{data[:4].hex()}, expected {want}")
    if dtype != _IDX_UBYTE:
        raise DatasetError(f"{what} has data type byte 0x{dtype:02x}, expected 0x08 (unsigned byte)")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DatasetError(f"{what} is truncated: {len(data)} bytes, expected a {header}-byte header for {ndim} dimensions")
    dims = tuple(int.from_bytes(data[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim))
    payload = math.prod(dims)
    if payload > MAX_IDX_PAYLOAD:
        raise DatasetError(f"{what} declares shape {dims} ({payload} bytes), more than the {MAX_IDX_PAYLOAD}-byte limit")
    if len(data) != header + payload:
        kind = "truncated" if len(data) < header + payload else "oversized"
        raise DatasetError(
            f"{what} is {kind}: {len(data) - header} data bytes, expected exactly {payload} for shape {dims}"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _read_idx(path: Path, expected_ndim: int) -> np.ndarray:
    """Read an IDX file, gzip-compressed when its name ends in ``.gz``, and parse it.

    Reads no more than the header promises plus one byte, so a gzip bomb cannot fill memory.
    """
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                head = f.read(4)
                ndim = head[3] if len(head) == 4 else 0
                head += f.read(4 * ndim)
                dims = [int.from_bytes(head[4 + 4 * k: 8 + 4 * k], "big") for k in range(ndim)]
                want = math.prod(dims) if len(head) == 4 + 4 * ndim else 0
                data = head + _read_at_most(f, want + 1 if want <= MAX_IDX_PAYLOAD else 0)
        else:
            size = path.stat().st_size
            if size > MAX_IDX_PAYLOAD + 4 + 4 * 255:
                raise DatasetError(f"IDX file {path} is {size} bytes, more than the {MAX_IDX_PAYLOAD}-byte limit")
            data = path.read_bytes()
    except DatasetError:
        raise
    except (OSError, EOFError, ValueError) as e:  # gzip.BadGzipFile, zlib.error, truncated stream ...
        raise DatasetError(f"cannot read IDX file {path}: {e}") from e
    except Exception as e:  # zlib can raise others on hostile streams; never let them escape
        raise DatasetError(f"cannot read IDX file {path}: {type(e).__name__}: {e}") from e
    return parse_idx(data, path, expected_ndim)


def _read_at_most(f: Any, n: int, chunk: int = 1 << 24) -> bytes:
    """Read up to ``n`` bytes in chunks, so a forged size never allocates more than the stream holds."""
    parts, left = [], n
    while left > 0:
        part = f.read(min(chunk, left))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def _find_file(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def load_fashion_mnist(root: str | os.PathLike | None = None, split: str = "train") -> ImageDataset:
    """Load Fashion-MNIST from its original IDX files.

    Args:
        root: folder holding ``{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (each optionally
            ``.gz``); default ``/usr/share/datasets/fashion-mnist`` (Debian package
            ``dataset-fashion-mnist``).
        split: ``"train"`` (60,000 images) or ``"test"`` (10,000 images).

    Returns:
        An :class:`ImageDataset` of (N, 1, 28, 28) ``uint8`` images and 10 classes.

    Raises:
        DatasetError: missing folder or file, malformed IDX file, label >= 10, or image and
            label counts that differ.
    """
    check_split(split, ("train", "test"), "fashion_mnist")
    folder = FASHION_MNIST_DIR if root is None else check_root(root, "fashion_mnist", "")
    prefix = "train" if split == "train" else "t10k"
    stems = (f"{prefix}-images-idx3-ubyte", f"{prefix}-labels-idx1-ubyte")
    expected = " and ".join(f"{s}[.gz]" for s in stems)
    if not folder.is_dir():
        hint = " (on Debian: apt-get install dataset-fashion-mnist)" if root is None else ""
        raise DatasetError(f"Fashion-MNIST folder {folder} does not exist; expected a folder with {expected}{hint}")
    paths = [_find_file(folder, s) for s in stems]
    missing = [f"{s}[.gz]" for s, p in zip(stems, paths) if p is None]
    if missing:
        raise DatasetError(f"Fashion-MNIST folder {folder} lacks {', '.join(missing)}; expected {expected} for split {split!r}")
    img_path, lbl_path = paths
    images = _read_idx(img_path, 3)
    labels = _read_idx(lbl_path, 1)
    if images.shape[1:] != (28, 28):
        raise DatasetError(f"IDX file {img_path} holds images of shape {images.shape[1:]}, expected 28x28")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"{img_path} holds {images.shape[0]} images but {lbl_path} holds {labels.shape[0]} labels; expected equal counts"
        )
    if images.shape[0] == 0:
        raise DatasetError(f"IDX file {img_path} holds no images")
    if labels.max() >= 10:
        raise DatasetError(f"IDX file {lbl_path} holds label {int(labels.max())}, expected labels in 0..9")
    ds = ImageDataset(
        torch.from_numpy(images.copy()).unsqueeze(1),  # (N, 1, 28, 28)
        torch.from_numpy(labels.astype(np.int64)),  # (N,)
        FASHION_MNIST_CLASSES,
        f"fashion_mnist/{split}",
    )
    _logger.info("loaded %s from %s: %d images", ds.name, folder, len(ds))
    return ds
