"""ImageNet-100 (or any ImageFolder tree): indexed at load time, decoded with PIL on access.

:func:`load_imagenet100` indexes ``<root>/<split>/<wnid>/*.JPEG`` (optionally restricted to a
class list); :class:`ImageFolderDataset` decodes, resizes and center-crops one image per
access with :func:`load_image`. Nothing here downloads.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import ConfigError
from .base import DatasetError, check_image_size, check_index, check_indices, check_root, check_split

__all__ = ["IMAGE_EXTENSIONS", "ImageFolderDataset", "load_image", "load_imagenet100"]

_logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png")  # compared lower-case


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

    def __init__(self, samples: Sequence[tuple[str | os.PathLike, int]], classes: Sequence[str], image_size: int,
                 name: str = "imagefolder", crop_pct: float = 1.0):
        check_image_size(image_size)
        check_crop_pct(crop_pct)
        self.crop_pct = float(crop_pct)
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
        i = check_index(index, len(self))
        path, _ = self.samples[i]
        return load_image(path, self.image_size, self.crop_pct), self.labels[i], i

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def subset(self, indices: Sequence[int] | torch.Tensor) -> ImageFolderDataset:
        """A new dataset with the samples at ``indices`` (in that order), re-indexed from 0."""
        idx = check_indices(indices, len(self), self.name)
        return ImageFolderDataset([self.samples[i] for i in idx.tolist()], self.classes, self.image_size, self.name, self.crop_pct)

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(name={self.name!r}, n={len(self)}, image_size={self.image_size}, "
            f"num_classes={self.num_classes})"
        )


def check_crop_pct(crop_pct: float) -> None:
    """Raise :class:`ConfigError` unless ``crop_pct`` (center crop / resized side) is in (0, 1]."""
    if isinstance(crop_pct, bool) or not isinstance(crop_pct, (int, float)) or not 0 < crop_pct <= 1:
        raise ConfigError(f"crop_pct must be a number in (0, 1], got {crop_pct!r}")


def load_image(path: str | os.PathLike, image_size: int, crop_pct: float = 1.0) -> torch.Tensor:
    """Decode one image file to a (3, image_size, image_size) ``uint8`` tensor.

    Resizes the shorter side to ``round(image_size / crop_pct)`` (bilinear, antialiased) then
    center-crops ``image_size``: ``crop_pct = 0.875`` at 224 is torchvision's ``Resize(256)`` +
    ``CenterCrop(224)``, the official ImageNet-100 evaluation transform.
    Raises :class:`DatasetError` naming the file if it cannot be decoded.
    """
    from PIL import Image  # here, not at the top: only ImageNet-100 needs PIL, and importing it costs ~0.1 s

    path = Path(path)
    try:
        with Image.open(path) as img:
            resize = max(image_size, round(image_size / crop_pct))
            img.draft("RGB", (resize, resize))  # JPEG: decode at a reduced scale >= the target
            img = img.convert("RGB")
            w, h = img.size
            scale = resize / min(w, h)
            nw, nh = max(resize, round(w * scale)), max(resize, round(h * scale))
            img = img.resize((nw, nh), Image.Resampling.BILINEAR)
            left, top = (nw - image_size) // 2, (nh - image_size) // 2
            img = img.crop((left, top, left + image_size, top + image_size))
            arr = np.asarray(img, dtype=np.uint8)  # (H, W, 3)
    except Exception as e:  # PIL raises many types on corrupt files (OSError, SyntaxError, struct.error ...)
        raise DatasetError(f"cannot decode image {path}: {type(e).__name__}: {e}; expected a readable JPEG or PNG file") from e
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()  # (3, H, W)


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
    image_size: int = 224,
    crop_pct: float = 0.875,
) -> ImageFolderDataset:
    """Index ImageNet-100 (or any ImageFolder tree) for lazy loading.

    Expected layout: ``<root>/<split>/<wnid>/*.{JPEG,jpg,png}`` (extension case ignored).

    Args:
        root: folder holding ``train/`` and ``val/``.
        split: ``"train"`` or ``"val"`` (``"test"`` is accepted for ``"val"``).
        class_list: text file with one wnid per line naming exactly 100 classes (blank lines
            and ``#`` comments ignored); other folders in the tree are ignored. None: every
            class folder found.
        image_size: side of the square output images in pixels. Default 224 (the paper's).
        crop_pct: the shorter side is resized to ``image_size / crop_pct``, then center-cropped.
            Default 0.875: ``Resize(256)`` + ``CenterCrop(224)``, the official code's
            ImageNet-100 validation and test transform (``code/dataset/imagenet.py``).

    Labels follow the sorted class names, as torchvision's ``ImageFolder`` would assign them
    on a tree holding only those classes.

    Raises:
        DatasetError: missing split folder, a class list that is unreadable or does not name
            exactly 100 classes, class folders missing from the tree, or a class without images.
    """
    check_split(split, ("train", "val", "test"), "imagenet100")
    check_image_size(image_size)
    check_crop_pct(crop_pct)
    split_dir = "val" if split == "test" else split
    root = check_root(root, "imagenet100", f"{split_dir}/<wnid>/*.JPEG")
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
    ds = ImageFolderDataset(samples, classes, image_size, f"imagenet100/{split_dir}", crop_pct)
    _logger.info("indexed %s in %s: %d images in %d classes", ds.name, folder, len(ds), len(classes))
    return ds
