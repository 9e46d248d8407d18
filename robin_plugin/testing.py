"""Tiny models and data for tests and benchmarks: small enough to run full AutoAttack on a CPU.

Used by the evaluation tests and ``benchmarks/bench_autoattack.py``; nothing is downloaded (the
images come from the Debian ``dataset-fashion-mnist`` files through :func:`robin_plugin.data.get_dataset`).
The training tests, and the subprocesses they start, train :func:`tiny_robin_resnet` on
:func:`toy_dataset`.

It also writes small datasets in the real on-disk formats robin's loaders read (the tests'
preset smoke runs and ``benchmarks/fmnist_cifar_proxy.py`` use them): :func:`write_cifar10` and
:func:`write_cifar100` write the python-version pickle batches as Python 2's cPickle wrote the
originals (protocol 2, ``str`` keys and strings as byte strings, ``numpy.core.multiarray._reconstruct``),
so both robin's restricted reader and ``pickle.load(f, encoding="latin1")`` (torchvision) read
them; :func:`write_imagefolder` writes an ImageNet-style ``train/`` and ``val/`` tree of JPEGs.
"""
from __future__ import annotations

import os
import pickle
import struct
from collections.abc import Sequence
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import ImageDataset, get_dataset, to_float
from .models import robinify

__all__ = ["dump_py2_pickle", "fashion_mnist_subset", "pgd_train", "random_images", "tiny_robin_mlp", "tiny_robin_resnet",
           "toy_dataset", "write_cifar10", "write_cifar100", "write_imagefolder"]


def fashion_mnist_subset(split: str, n: int, root: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n`` Fashion-MNIST images of ``split`` as floats in [0, 1], (n, 1, 28, 28), and labels (n,)."""
    ds = get_dataset("fashion_mnist", root, split=split)
    return to_float(ds.images[:n]), ds.labels[:n].long()


def tiny_robin_mlp(hidden: int = 64, keep_ratio: float = 0.3) -> nn.Module:
    """A masked binary MLP on 14x14 average-pooled inputs (global seed 0 for its weights and scores)."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.AvgPool2d(2), nn.Flatten(), nn.Linear(196, hidden), nn.BatchNorm1d(hidden), nn.ReLU(),
                        nn.Linear(hidden, 10), nn.BatchNorm1d(10))
    return robinify(net, keep_ratio=keep_ratio, p=0.1)


def toy_dataset(n: int = 96, size: int = 12, seed: int = 0) -> ImageDataset:
    """``n`` one-channel ``size`` x ``size`` images of two easy classes: bright top half vs bright bottom half, plus noise."""
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, size, size, generator=g) * 0.4
    half = size // 2
    x[y == 0, :, :half] += 0.5
    x[y == 1, :, half:] += 0.5
    return ImageDataset((x.clamp(0, 1) * 255).to(torch.uint8), y.long(), ["top", "bottom"], "toy")


def tiny_robin_resnet(seed: int = 0, width: int = 4, **kw: Any) -> nn.Module:
    """A ``robin_resnet18`` of ``width`` for :func:`toy_dataset`: one input channel, two classes, keep ratio 0.2.

    Its fixed weights and scores come from ``seed``; ``kw`` goes to :func:`timm.create_model`.
    """
    return timm.create_model("robin_resnet18", num_classes=2, in_chans=1, width=width, keep_ratio=0.2, seed=seed,
                             mean=(0.5,), std=(0.25,), **kw)


def pgd_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, eps: float, pgd_steps: int = 3) -> nn.Module:
    """PGD adversarial training (random start, step eps/2), SGD lr 0.1 one-cycle, momentum 0.9, batch 128.

    Returns ``model`` in eval mode. Deterministic: batches and random starts come from a generator seeded 0.
    """
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 0.1, total_steps=steps)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        xb, yb = x[idx], y[idx]
        d = (torch.rand(xb.shape, generator=g) * 2 - 1) * eps
        for _ in range(pgd_steps):
            d.requires_grad_(True)
            (grad,) = torch.autograd.grad(F.cross_entropy(model((xb + d).clamp(0, 1)), yb), d)
            d = (d + eps / 2 * grad.sign()).clamp(-eps, eps).detach()
        loss = F.cross_entropy(model((xb + d).clamp(0, 1)), yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model.eval()


# --- small datasets in the real on-disk formats -------------------------------------------------
class _Py2Pickler(pickle._Pickler):  # the pure-Python pickler: its dispatch table can be extended
    """Protocol-2 pickles as Python 2's cPickle wrote the CIFAR files.

    ``str`` and ``bytes`` become Python 2 strings (SHORT_BINSTRING / BINSTRING, read back as
    bytes with ``encoding="bytes"`` and as str with ``encoding="latin1"``), and numpy's array
    constructor is named ``numpy.core.multiarray._reconstruct``, as numpy 1 named it. Python 3's
    own protocol 2 would write bytes through ``_codecs.encode``, which the originals never hold.
    """

    dispatch = dict(pickle._Pickler.dispatch)

    def _save_py2_str(self, obj: str | bytes) -> None:
        raw = obj.encode("latin1") if isinstance(obj, str) else bytes(obj)
        if len(raw) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(raw)]) + raw)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(raw)) + raw)
        self.memoize(obj)

    dispatch[str] = _save_py2_str
    dispatch[bytes] = _save_py2_str

    def save_global(self, obj: Any, name: str | None = None) -> None:
        if getattr(obj, "__name__", None) == "_reconstruct" and "numpy" in getattr(obj, "__module__", ""):
            self.write(pickle.GLOBAL + b"numpy.core.multiarray\n_reconstruct\n")
            self.memoize(obj)
            return
        super().save_global(obj, name)

    dispatch[type] = save_global


def dump_py2_pickle(obj: Any, file: str | os.PathLike | BinaryIO) -> None:
    """Write ``obj`` (dicts, lists, numbers, strings, numpy arrays) as a Python 2 protocol-2 pickle."""
    if hasattr(file, "write"):
        _Py2Pickler(file, protocol=2).dump(obj)
        return
    with open(file, "wb") as f:
        _Py2Pickler(f, protocol=2).dump(obj)


def random_images(n: int, num_classes: int, size: int = 32, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` random (3, size, size) ``uint8`` images and labels cycling through ``num_classes`` classes.

    Each class has its own mean colour, so a model can tell the classes apart a little.
    """
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % num_classes
    colours = rng.integers(40, 216, (num_classes, 3, 1, 1))
    noise = rng.integers(-40, 41, (n, 3, size, size))
    images = np.clip(colours[labels] + noise, 0, 255).astype(np.uint8)
    return images, labels.astype(np.int64)


def _cifar_rows(images: Any) -> np.ndarray:
    """(N, 3, 32, 32) or (N, 3072) uint8 -> (N, 3072): 1024 red, 1024 green, 1024 blue values, row by row."""
    arr = np.asarray(images)
    if arr.dtype != np.uint8 or arr.shape[1:] not in ((3, 32, 32), (3072,)):
        raise ValueError(f"CIFAR images must be uint8 of shape (N, 3, 32, 32) or (N, 3072), got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr.reshape(len(arr), 3072))


def _int_list(labels: Any, num_classes: int) -> list[int]:
    out = [int(v) for v in np.asarray(labels).reshape(-1)]
    if any(not 0 <= v < num_classes for v in out):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}]")
    return out


def write_cifar10(root: str | os.PathLike, train_images: Any, train_labels: Any, test_images: Any, test_labels: Any,
                  label_names: Sequence[str] | None = None, *, folder: str = "cifar-10-batches-py") -> Path:
    """Write CIFAR-10's python version: ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}``.

    The training images are split over the five batches in order (``np.array_split``). Each
    batch is a dict with the originals' keys: ``batch_label``, ``labels`` (a list of ints),
    ``data`` (``uint8`` (N, 3072)) and ``filenames``; ``batches.meta`` has ``num_cases_per_batch``,
    ``label_names`` and ``num_vis``. Returns the folder written.
    """
    names = list(label_names) if label_names is not None else [f"class{i}" for i in range(10)]
    if len(names) != 10:
        raise ValueError(f"CIFAR-10 needs 10 label names, got {len(names)}")
    out = Path(root) / folder
    out.mkdir(parents=True, exist_ok=True)
    train_rows, train_y = _cifar_rows(train_images), _int_list(train_labels, 10)
    test_rows, test_y = _cifar_rows(test_images), _int_list(test_labels, 10)
    if len(train_rows) != len(train_y) or len(test_rows) != len(test_y):
        raise ValueError("image and label counts differ")
    chunks = np.array_split(np.arange(len(train_rows)), 5)
    for b, idx in enumerate(chunks, start=1):
        dump_py2_pickle(_cifar_batch(f"training batch {b} of 5", train_rows[idx], [train_y[i] for i in idx], "labels", idx),
                        out / f"data_batch_{b}")
    dump_py2_pickle(_cifar_batch("testing batch 1 of 1", test_rows, test_y, "labels", np.arange(len(test_y))), out / "test_batch")
    dump_py2_pickle({b"num_cases_per_batch": max(len(c) for c in chunks), b"label_names": [n.encode() for n in names],
                     b"num_vis": 3072}, out / "batches.meta")
    return out


def write_cifar100(root: str | os.PathLike, train_images: Any, train_labels: Any, test_images: Any, test_labels: Any,
                   fine_label_names: Sequence[str] | None = None) -> Path:
    """Write CIFAR-100's python version: ``<root>/cifar-100-python/{train, test, meta}``.

    Each file is a dict with the originals' keys: ``filenames``, ``batch_label``, ``fine_labels``,
    ``coarse_labels`` (here fine // 5, a stand-in for the real superclass map) and ``data``;
    ``meta`` has ``fine_label_names`` and ``coarse_label_names``. Returns the folder written.
    """
    names = list(fine_label_names) if fine_label_names is not None else [f"fine{i}" for i in range(100)]
    if len(names) != 100:
        raise ValueError(f"CIFAR-100 needs 100 fine label names, got {len(names)}")
    out = Path(root) / "cifar-100-python"
    out.mkdir(parents=True, exist_ok=True)
    for fname, images, labels, tag in (("train", train_images, train_labels, "training"),
                                       ("test", test_images, test_labels, "testing")):
        rows, y = _cifar_rows(images), _int_list(labels, 100)
        if len(rows) != len(y):
            raise ValueError("image and label counts differ")
        d = _cifar_batch(f"{tag} batch 1 of 1", rows, y, "fine_labels", np.arange(len(y)))
        d[b"coarse_labels"] = [v // 5 for v in y]
        dump_py2_pickle(d, out / fname)
    dump_py2_pickle({b"fine_label_names": [n.encode() for n in names],
                     b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)]}, out / "meta")
    return out


def _cifar_batch(batch_label: str, rows: np.ndarray, labels: list[int], label_key: str, idx: Any) -> dict:
    return {b"batch_label": batch_label.encode(), label_key.encode(): list(labels), b"data": rows,
            b"filenames": [f"image_{int(i):05d}.png".encode() for i in idx]}


def write_imagefolder(root: str | os.PathLike, classes: Sequence[str], per_class: dict[str, int] | None = None,
                      size: tuple[int, int] = (80, 64), seed: int = 0, class_list: str | None = "classes.txt") -> Path:
    """Write an ImageNet-style tree of JPEGs: ``<root>/<split>/<wnid>/<wnid>_<k>.JPEG``.

    Args:
        root: the folder to write (it holds ``train/`` and ``val/``).
        classes: folder names (wnids such as ``n01440764``).
        per_class: images per class and split (default 2 in ``train``, 1 in ``val``).
        size: (width, height) of every image; not square, so the loaders' resize and crop matter.
        seed: for the images' colours and noise.
        class_list: file name in ``root`` for a class list with one wnid per line (None: none).

    Returns:
        ``root`` as a Path.
    """
    from PIL import Image  # only the ImageNet-style writer needs PIL

    per_class = per_class if per_class is not None else {"train": 2, "val": 1}
    root = Path(root)
    rng = np.random.default_rng(seed)
    w, h = size
    for split, k in per_class.items():
        for c, wnid in enumerate(classes):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            colour = rng.integers(40, 216, 3)
            for j in range(k):
                arr = np.clip(colour + rng.integers(-40, 41, (h, w, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(arr, "RGB").save(folder / f"{wnid}_{j}.JPEG", format="JPEG", quality=90)
    if class_list is not None:
        (root / class_list).write_text("".join(f"{wnid}\n" for wnid in classes), encoding="utf-8")
    return root
