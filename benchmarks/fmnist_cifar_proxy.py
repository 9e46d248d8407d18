"""Write Fashion-MNIST as CIFAR-10 python batches: a learnable CIFAR-10 stand-in on a machine without CIFAR.

CIFAR-10 cannot be downloaded here, and no package ships it; Fashion-MNIST can (Debian
``dataset-fashion-mnist``). This script reads the original IDX files with robin's own reader
(:func:`robin_plugin.data.load_fashion_mnist`) and writes them in CIFAR-10's on-disk format, so
every CIFAR-10 preset runs on real, learnable images with no change to the code path::

    python benchmarks/fmnist_cifar_proxy.py runs/fmnist-cifar          # all 60,000 + 10,000 images
    robin train --preset cifar10-resnet18-pgd data_root=runs/fmnist-cifar \\
        model_kwargs='{width: 16}' train_subset=5000 epochs=2 attack_steps=3 test_n=1000 device=cpu

How: each 28x28 grey image is padded with 2 zero pixels on every side to 32x32 and its grey
channel repeated as R, G and B (``uint8``; no resizing, so no pixel value changes). The layout is
CIFAR-10's python version, written as Python 2's cPickle wrote the originals (protocol 2):
``<out>/cifar-10-batches-py/data_batch_1..5`` (the 60,000 training images in order, 12,000 a
file), ``test_batch`` (10,000) and ``batches.meta`` (the ten Fashion-MNIST class names), each
batch a dict of ``data`` (``uint8`` (N, 3072): 1024 red, 1024 green, 1024 blue values, row by
row), ``labels`` (a list of ints), ``batch_label`` and ``filenames``. ``<out>/proxy.json`` says
where the images came from. The files are read back with robin's CIFAR-10 loader before the
script reports success.

The folder is written under a temporary name beside ``<out>`` and renamed into place at the end,
so an interrupted run leaves no half-written dataset. An existing non-empty ``<out>`` is refused
unless ``--overwrite`` is given, and even then only a folder this script wrote (it holds
``proxy.json``) is replaced.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from robin_plugin.data import load_cifar, load_fashion_mnist
from robin_plugin.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR
from robin_plugin.errors import RobinError
from robin_plugin.testing import write_cifar10

MARKER = "proxy.json"
PAD = 2  # 28 + 2 * 2 = 32


def to_cifar_layout(images: np.ndarray) -> np.ndarray:
    """(N, 1, 28, 28) or (N, 28, 28) grey ``uint8`` -> (N, 3, 32, 32): zero padding 2, grey repeated as R, G, B."""
    grey = np.asarray(images, dtype=np.uint8).reshape(len(images), 28, 28)
    padded = np.pad(grey, ((0, 0), (PAD, PAD), (PAD, PAD)))  # zeros: Fashion-MNIST's background is 0 too
    return np.ascontiguousarray(np.repeat(padded[:, None], 3, axis=1))


class RefusedOutput(Exception):
    """The output folder may not be written: it is a file, or a non-empty folder not to be replaced."""


def _refuse(out: Path, overwrite: bool) -> None:
    """Raise :class:`RefusedOutput` unless ``out`` is absent, empty, or (with --overwrite) a folder this script wrote."""
    if out.exists() and not out.is_dir():
        raise RefusedOutput(f"{out} exists and is not a folder; give another output folder")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not overwrite:
        raise RefusedOutput(f"{out} exists and is not empty; pass --overwrite to replace it "
                            "(only a folder this script wrote is replaced)")
    if not (out / MARKER).is_file():
        raise RefusedOutput(f"{out} was not written by this script (it has no {MARKER}); "
                            "refusing to replace it even with --overwrite")


def write_proxy(out: str | os.PathLike, source: str | os.PathLike | None = None, limit: int | None = None,
                overwrite: bool = False) -> dict:
    """Write the proxy into ``out``; return what was written (also printed by :func:`main`).

    Raises:
        RefusedOutput: ``out`` is a file, or a non-empty folder and not ``overwrite`` or not one
            this script wrote.
        DatasetError: missing or malformed Fashion-MNIST files in ``source``.
    """
    t0 = time.perf_counter()
    out = Path(out).expanduser().absolute()
    _refuse(out, overwrite)
    src = Path(source) if source is not None else FASHION_MNIST_DIR
    splits = {}
    for split in ("train", "test"):
        ds = load_fashion_mnist(src, split)  # robin's IDX reader: checked magic, sizes and labels
        n = len(ds) if limit is None else min(limit, len(ds))
        splits[split] = (to_cifar_layout(ds.images[:n].numpy()), ds.labels[:n].numpy())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        folder = write_cifar10(tmp, *splits["train"], *splits["test"], label_names=FASHION_MNIST_CLASSES)
        info = {
            "made_by": "benchmarks/fmnist_cifar_proxy.py", "source": str(src), "format": "cifar-10-batches-py",
            "how": f"28x28 grey zero-padded by {PAD} px on each side to 32x32, grey repeated as R, G, B; uint8",
            "train_images": len(splits["train"][1]), "test_images": len(splits["test"][1]), "limit": limit,
            "classes": FASHION_MNIST_CLASSES,
        }
        (tmp / MARKER).write_text(json.dumps(info, indent=2) + "\n", encoding="utf-8")
        # read it back the way a run will: robin's CIFAR-10 loader (restricted unpickler, shape and label checks)
        for split, (x, y) in splits.items():
            back = load_cifar(tmp, "cifar10", split)
            if back.images.shape != x.shape or not np.array_equal(back.labels.numpy(), y) or not np.array_equal(back.images.numpy(), x):
                raise RuntimeError(f"read-back of the {split} split does not match what was written")
        files = {p.name: p.stat().st_size for p in sorted(folder.iterdir())}
        # swap into place: the old folder (if any) is moved aside first and removed only after the rename
        if out.is_dir():
            out.rename(old)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.is_dir() and not out.exists():
            old.rename(out)
        raise
    shutil.rmtree(old, ignore_errors=True)
    counts = {name: None for name in files}
    chunks = np.array_split(np.arange(info["train_images"]), 5)
    for b, c in enumerate(chunks, start=1):
        counts[f"data_batch_{b}"] = len(c)
    counts["test_batch"] = info["test_images"]
    return dict(info, out=str(out), folder=str(out / folder.name), files=files, counts=counts,
                seconds=time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Write Fashion-MNIST as CIFAR-10 python batches (3x32x32, uint8).")
    p.add_argument("out", help="output folder: becomes data_root for the cifar10 presets")
    p.add_argument("--source", default=None, help=f"folder with the Fashion-MNIST IDX files (default {FASHION_MNIST_DIR})")
    p.add_argument("--limit", type=int, default=None, metavar="N", help="only the first N training and N test images")
    p.add_argument("--overwrite", action="store_true", help="replace an existing folder this script wrote")
    args = p.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        p.error(f"--limit must be >= 1, got {args.limit}")
    try:
        r = write_proxy(args.out, args.source, args.limit, args.overwrite)
    except (RobinError, RefusedOutput) as e:  # DatasetError: missing or malformed Fashion-MNIST files
        print(f"fmnist_cifar_proxy: error: {e}", file=sys.stderr)
        return 2
    print(f"read Fashion-MNIST from {r['source']}: {r['train_images']:,} training and {r['test_images']:,} test images"
          + (f" (--limit {r['limit']})" if r["limit"] else ""))
    print(f"converted: {r['how']} -> (N, 3, 32, 32), stored as CIFAR-10 rows (N, 3072)")
    print(f"wrote {r['folder']} (CIFAR-10 python version, pickle protocol 2 as the originals):")
    for name, size in r["files"].items():
        n = r["counts"].get(name)
        what = f"{n:,} images" if n is not None else "10 class names: " + ", ".join(FASHION_MNIST_CLASSES)
        print(f"  {name:<14} {size:>12,} bytes  {what}")
    print(f"  and {Path(r['out']) / MARKER} (provenance); read back with robin's CIFAR-10 loader: OK; {r['seconds']:.1f} s")
    print(f"use it: robin train --preset cifar10-resnet18-pgd data_root={r['out']} <overrides>")
    return 0


if __name__ == "__main__":
    sys.exit(main())
