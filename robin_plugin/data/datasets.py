"""Datasets read from local folders: Fashion-MNIST, CIFAR-10, CIFAR-100 and ImageNet-100.

Nothing here downloads. Every loader validates what it reads and raises :class:`DatasetError`
naming the folder or file and what was expected. Images stay ``uint8`` in memory (a 4x saving
over float32) and are converted to floats in [0, 1] per batch by the trainer
(:func:`robin_plugin.data.augment.to_float`).

Every dataset yields ``(image, label, index)`` triples: the trainer's fast attack keeps one
perturbation per training sample and needs the sample's index to find it.

The CIFAR python files are pickles. They are read with :class:`RestrictedUnpickler`, which
resolves only the three numpy globals an array needs and refuses anything else before it can
run, so a hostile file cannot execute code.
"""
from __future__ import annotations

import gzip
import io
import logging
import math
import os
import pickle
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError, RobinError, UnknownNameError, closest

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

_logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")  # Debian `dataset-fashion-mnist`
FASHION_MNIST_CLASSES = [
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
]
IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")  # compared lower-case

# Refuse files whose header promises more than this many payload bytes (ImageNet-scale IDX
# files do not exist; the real Fashion-MNIST train images are 47 MB), and pickle files larger
# than this (the real CIFAR-100 train file is 155 MB).
MAX_IDX_PAYLOAD = 1 << 31
MAX_PICKLE_BYTES = 1 << 30


class DatasetError(RobinError, OSError):
    """A dataset folder or file is missing, incomplete, corrupt or not of the expected kind."""


# --------------------------------------------------------------------------------------------
# Dataset metadata and the registry
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DatasetInfo:
    """What a trainer needs to know about a dataset before loading it.

    Attributes:
        name: registry name (``"cifar10"``).
        num_classes: number of classes.
        in_chans: image channels C.
        image_size: side of the square images in pixels (ImageNet-100: the loader's default).
        mean, std: per-channel statistics in [0, 1] pixel units, length ``in_chans``.
        default_eps: the paper's L-inf attack radius in [0, 1] pixel units.
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
        "cifar100", 100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), 8 / 255, 2 / 255
    ),
    "imagenet100": DatasetInfo(
        "imagenet100", 100, 3, 64, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), 2 / 255, 0.5 / 255
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


# --------------------------------------------------------------------------------------------
# Dataset classes
# --------------------------------------------------------------------------------------------
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
        i = _index(index, len(self))
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
        idx = _check_indices(indices, len(self), self.name)
        return ImageDataset(self.images[idx], self.labels[idx], self.classes, self.name)

    def __repr__(self) -> str:
        return (
            f"ImageDataset(name={self.name!r}, n={len(self)}, in_chans={self.in_chans}, "
            f"image_size={self.image_size}, num_classes={self.num_classes})"
        )


class ImageFolderDataset(Dataset):
    """A lazily decoded image dataset: files are read and resized on access, with PIL.

    Each image is converted to RGB, resized so its shorter side is ``image_size`` (bilinear,
    antialiased) and center-cropped to ``image_size`` x ``image_size``.

    Args:
        samples: ``(path, label)`` pairs.
        classes: class names (ImageNet wnids); labels index into it.
        image_size: side of the square output images in pixels.
        name: dataset name for logs and error messages.

    ``dataset[i]`` is ``(image, label, i)``: a (3, image_size, image_size) ``uint8`` tensor, a
    0-dim ``int64`` tensor and the index. An unreadable image raises :class:`DatasetError`
    naming the file.
    """

    in_chans = 3

    def __init__(self, samples: Sequence[tuple[str | os.PathLike, int]], classes: Sequence[str], image_size: int, name: str = "imagefolder"):
        _check_image_size(image_size)
        self.samples = [(Path(p), int(y)) for p, y in samples]
        self.classes = list(classes)
        self.image_size = image_size
        self.name = name
        bad = [y for _, y in self.samples if not 0 <= y < len(self.classes)]
        if bad:
            raise ConfigError(f"{name}: labels must lie in [0, {len(self.classes) - 1}], got {bad[0]}")
        self.labels = torch.tensor([y for _, y in self.samples], dtype=torch.int64)  # (N,)

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor, int]:
        i = _index(index, len(self))
        path, _ = self.samples[i]
        return load_image(path, self.image_size), self.labels[i], i

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageFolderDataset:
        """A new dataset with the samples at ``indices`` (in that order), re-indexed from 0."""
        idx = _check_indices(indices, len(self), self.name)
        return ImageFolderDataset([self.samples[i] for i in idx.tolist()], self.classes, self.image_size, self.name)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(name={self.name!r}, n={len(self)}, image_size={self.image_size}, "
            f"num_classes={self.num_classes})"
        )


def load_image(path: str | os.PathLike, image_size: int) -> torch.Tensor:
    """Decode one image file to a (3, image_size, image_size) ``uint8`` tensor.

    Resizes the shorter side to ``image_size`` (bilinear, antialiased) then center-crops.
    Raises :class:`DatasetError` naming the file if it cannot be decoded.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.draft("RGB", (image_size, image_size))  # JPEG: decode at a reduced scale >= the target
            img = img.convert("RGB")
            w, h = img.size
            scale = image_size / min(w, h)
            nw, nh = max(image_size, round(w * scale)), max(image_size, round(h * scale))
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - image_size) // 2, (nh - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    except Exception as e:  # PIL raises many types on corrupt files (OSError, SyntaxError, struct.error ...)
        raise DatasetError(f"cannot decode image {path}: {type(e).__name__}: {e}; expected a readable JPEG or PNG file") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


def _index(index: Any, n: int) -> int:
    try:
        i = int(index)
    except (TypeError, ValueError):
        raise IndexError(f"dataset index must be an integer, got {index!r}") from None
    if not -n <= i < n:
        raise IndexError(f"dataset index {i} out of range for {n} samples")
    return i + n if i < 0 else i


def _check_indices(indices: Sequence[int] | torch.Tensor, n: int, name: str) -> torch.Tensor:
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


def _check_image_size(image_size: int) -> None:
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ConfigError(f"image_size must be an integer >= 1 (pixels), got {image_size!r}")


def _check_split(split: str, valid: Sequence[str], dataset: str) -> str:
    if not isinstance(split, str) or split not in valid:
        raise UnknownNameError(
            f"unknown split {split!r} for {dataset}{closest(str(split), valid)}; valid: {', '.join(valid)}"
        )
    return split


def _check_root(root: str | os.PathLike | None, dataset: str, expected: str) -> Path:
    if root is None:
        raise DatasetError(f"{dataset} has no default location: give the folder holding {expected} "
                           f"(robin train: data_root=<folder>; robin eval: --data-root <folder>; Python: root=<folder>)")
    try:
        return Path(root).expanduser()
    except TypeError as e:
        raise ConfigError(f"root must be a path to a folder, got {root!r}") from e


# --------------------------------------------------------------------------------------------
# Fashion-MNIST: IDX files
# --------------------------------------------------------------------------------------------
_IDX_UBYTE = 0x08


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
    _check_split(split, ("train", "test"), "fashion_mnist")
    folder = FASHION_MNIST_DIR if root is None else _check_root(root, "fashion_mnist", "")
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


# --------------------------------------------------------------------------------------------
# CIFAR-10 / CIFAR-100: python pickles, read with a restricted unpickler
# --------------------------------------------------------------------------------------------
class _NdarrayToken:
    """Stands for ``numpy.ndarray`` in a pickle: accepted by ``_reconstruct``, never callable."""

    __slots__ = ()


_NDARRAY = _NdarrayToken()


def _checked_reconstruct(subtype: Any, shape: Any, dtype: Any) -> np.ndarray:
    # numpy pickles an array as _reconstruct(ndarray, (0,), b'b') then fills it with BUILD,
    # whose size numpy checks against the data actually present. Refuse anything else, so a
    # crafted shape cannot allocate memory the file does not contain.
    if subtype is not _NDARRAY or not isinstance(shape, tuple) or shape != (0,):
        raise pickle.UnpicklingError(f"unexpected array reconstruction {subtype!r}, {shape!r:.50}")
    return np.ndarray.__new__(np.ndarray, (0,), dtype)


def _checked_dtype(obj: Any, align: Any = False, copy: Any = False) -> np.dtype:
    if not isinstance(obj, (str, bytes)):
        raise pickle.UnpicklingError(f"unexpected dtype argument {obj!r:.50}")
    return np.dtype(obj.decode("latin1") if isinstance(obj, bytes) else obj, bool(align), bool(copy))


class RefusedGlobalError(pickle.UnpicklingError):
    """A pickle asked for a global outside the allow-list; it was not looked up or run."""

    def __init__(self, name: str):
        super().__init__(f"refused global {name}: only numpy arrays are allowed")
        self.name = name


class RestrictedUnpickler(pickle.Unpickler):
    """An unpickler that can only build numpy arrays, dicts, lists, numbers and bytes.

    ``find_class`` resolves exactly the globals a pickled numpy array needs (``_reconstruct``
    from ``numpy.core.multiarray`` or ``numpy._core.multiarray``, ``numpy.ndarray`` and
    ``numpy.dtype``), each to a checked stand-in that only builds an empty array of a plain
    dtype (the file's own bytes then fill it, size-checked by numpy), and raises
    :class:`pickle.UnpicklingError` for any other global *before* it is looked up, so no code
    named by the file ever runs. Persistent ids and out-of-band buffers are refused too.
    """

    _ALLOWED: dict[tuple[str, str], Any] = {
        ("numpy.core.multiarray", "_reconstruct"): _checked_reconstruct,
        ("numpy._core.multiarray", "_reconstruct"): _checked_reconstruct,
        ("numpy", "ndarray"): _NDARRAY,
        ("numpy", "dtype"): _checked_dtype,
    }

    def find_class(self, module: str, name: str) -> Any:
        try:
            return self._ALLOWED[(module, name)]
        except (KeyError, TypeError):
            raise RefusedGlobalError(f"{module}.{name}") from None

    def persistent_load(self, pid: Any) -> Any:
        raise pickle.UnpicklingError("refused persistent id: only numpy arrays are allowed")


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
    _check_split(split, ("train", "test"), name)
    sub, train_files, test_files, meta_file, label_key, names_key, num_classes = _CIFAR[name]
    all_files = [*train_files, *test_files, meta_file]
    expected = f"{sub}/ with {', '.join(all_files)}"
    root = _check_root(root, name, expected)
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


# --------------------------------------------------------------------------------------------
# ImageNet-100: an ImageFolder tree and a class list
# --------------------------------------------------------------------------------------------
def _read_class_list(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"cannot read class list {path}: {e}; expected a text file with one wnid per line") from e
    wnids = [line.strip() for line in text.splitlines()]
    wnids = [w for w in wnids if w and not w.startswith("#")]
    bad = [w for w in wnids if "/" in w or "\\" in w or w in (".", "..")]
    if bad:
        raise DatasetError(f"class list {path} has invalid class name {bad[0]!r}; expected folder names such as 'n01440764'")
    dup = sorted({w for w in wnids if wnids.count(w) > 1})
    if dup:
        raise DatasetError(f"class list {path} names {', '.join(dup[:5])} more than once")
    if len(wnids) != 100:
        raise DatasetError(f"class list {path} names {len(wnids)} classes, expected exactly 100 (one wnid per line)")
    return sorted(wnids)


def load_imagenet100(
    root: str | os.PathLike,
    split: str = "train",
    class_list: str | os.PathLike | None = None,
    image_size: int = 64,
) -> ImageFolderDataset:
    """Index ImageNet-100 (or any ImageFolder tree) for lazy loading.

    Expected layout: ``<root>/<split>/<wnid>/*.{JPEG,jpg,png}`` (extension case ignored).

    Args:
        root: folder holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"`` (``"test"`` is accepted for ``"val"``).
        class_list: text file with one wnid per line naming exactly 100 classes (blank lines
            and ``#`` comments ignored); other folders in the tree are ignored. None: every
            class folder found.
        image_size: side of the square output images in pixels (shorter side resized, then
            center crop).

    Labels follow the sorted class names, as torchvision's ``ImageFolder`` would assign them
    on a tree holding only those classes.

    Raises:
        DatasetError: missing split folder, a class list that is unreadable or does not name
            exactly 100 classes, class folders missing from the tree, or a class without images.
    """
    _check_split(split, ("train", "val", "test"), "imagenet100")
    _check_image_size(image_size)
    split_dir = "val" if split == "test" else split
    root = _check_root(root, "imagenet100", f"{split_dir}/<wnid>/*.JPEG")
    folder = root / split_dir
    if not folder.is_dir():
        raise DatasetError(f"ImageNet-100 folder {folder} does not exist; expected {root}/{split_dir}/<wnid>/*.JPEG")
    if class_list is not None:
        classes = _read_class_list(Path(class_list))
        missing = [c for c in classes if not (folder / c).is_dir()]
        if missing:
            shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
            raise DatasetError(f"ImageNet-100 folder {folder} lacks {len(missing)} class folder(s) named in {class_list}: {shown}")
    else:
        classes = sorted(e.name for e in os.scandir(folder) if e.is_dir() and not e.name.startswith("."))
        if not classes:
            raise DatasetError(f"ImageNet-100 folder {folder} has no class folders; expected {folder}/<wnid>/*.JPEG")
    samples: list[tuple[Path, int]] = []
    for label, wnid in enumerate(classes):
        files = sorted(
            e.name for e in os.scandir(folder / wnid)
            if e.is_file() and os.path.splitext(e.name)[1].lower() in IMAGE_EXTENSIONS
        )
        if not files:
            raise DatasetError(f"class folder {folder / wnid} holds no images; expected *.JPEG, *.jpg or *.png files")
        samples.extend((folder / wnid / f, label) for f in files)
    ds = ImageFolderDataset(samples, classes, image_size, f"imagenet100/{split_dir}")
    _logger.info("indexed %s in %s: %d images in %d classes", ds.name, folder, len(ds), len(classes))
    return ds


# --------------------------------------------------------------------------------------------
# Registry entry point and the validation split
# --------------------------------------------------------------------------------------------
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
