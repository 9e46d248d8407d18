"""Dataset loaders on small files written in the real on-disk formats, plus the real Fashion-MNIST."""
from __future__ import annotations

import gzip
import io
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robin_plugin.data import (
    DATASETS,
    DatasetError,
    DatasetInfo,
    ImageDataset,
    ImageFolderDataset,
    RestrictedUnpickler,
    dataset_info,
    get_dataset,
    load_cifar,
    load_fashion_mnist,
    load_imagenet100,
    parse_idx,
    validation_split,
)
from robin_plugin.errors import ConfigError, RobinError, UnknownNameError
from robin_plugin.testing import dump_py2_pickle

DEBIAN_FMNIST = Path("/usr/share/datasets/fashion-mnist")


# --------------------------------------------------------------------------------------------
# writers for the real formats
# --------------------------------------------------------------------------------------------
def idx_bytes(arr: np.ndarray) -> bytes:
    """The IDX encoding of a uint8 array: magic 00 00 08 D, big-endian sizes, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    return bytes([0, 0, 8, arr.ndim]) + b"".join(struct.pack(">I", d) for d in arr.shape) + arr.tobytes()


def write_fmnist(folder: Path, n: int = 6, prefix: str = "train", gz: bool = True, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    folder.mkdir(parents=True, exist_ok=True)
    for stem, arr in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(arr)
        if gz:
            (folder / (stem + ".gz")).write_bytes(gzip.compress(data))
        else:
            (folder / stem).write_bytes(data)
    return images, labels


def write_cifar(root: Path, name: str = "cifar10", n: int = 3, py2: bool = True) -> dict[str, tuple[np.ndarray, list[int]]]:
    """A CIFAR folder with the real file names and dict layout, ``n`` images per batch file."""
    rng = np.random.default_rng(1)
    dump = dump_py2_pickle if py2 else (lambda obj, path: path.write_bytes(pickle.dumps(obj, protocol=4)))
    if name == "cifar10":
        folder, files, label_key = root / "cifar-10-batches-py", [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"], b"labels"
        meta = {b"num_cases_per_batch": n, b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072}
        meta_file, k = "batches.meta", 10
    else:
        folder, files, label_key = root / "cifar-100-python", ["train", "test"], b"fine_labels"
        meta = {b"fine_label_names": [f"fine{i}".encode() for i in range(100)], b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
        meta_file, k = "meta", 100
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for f in files:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, k, n)]
        d = {b"batch_label": f"{f} of 5".encode(), label_key: labels, b"data": data, b"filenames": [f"img{i}.png".encode() for i in range(n)]}
        if name == "cifar100":
            d[b"coarse_labels"] = [v // 5 for v in labels]
        dump(d, folder / f)
        out[f] = (data, labels)
    dump(meta, folder / meta_file)
    return out


def write_png(path: Path, size: tuple[int, int] = (12, 8), color=(255, 0, 0), fmt: str = "PNG") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, color).save(path, format=fmt)


# --------------------------------------------------------------------------------------------
# parse_idx and Fashion-MNIST
# --------------------------------------------------------------------------------------------
def test_parse_idx_roundtrip():
    arr = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    out = parse_idx(idx_bytes(arr), "x", expected_ndim=3)
    np.testing.assert_array_equal(out, arr)
    np.testing.assert_array_equal(parse_idx(idx_bytes(np.array([1, 2], np.uint8)), "y"), [1, 2])


@pytest.mark.parametrize(
    "data, match",
    [
        (b"", "truncated"),
        (b"\x00\x00\x08", "truncated"),
        (b"\x00\x01\x08\x01" + b"\x00" * 8, "wrong magic"),
        (b"\x00\x00\x08\x00", "wrong magic"),
        (b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00\x00\x00\x00", "0x08"),
        (b"\x00\x00\x08\x03\x00\x00\x00\x01", "header"),
        (idx_bytes(np.zeros((2, 2, 2), np.uint8))[:-1], "truncated"),
        (idx_bytes(np.zeros((2, 2, 2), np.uint8)) + b"\x00", "oversized"),
        (b"\x00\x00\x08\x02\xff\xff\xff\xff\xff\xff\xff\xff", "limit"),
    ],
)
def test_parse_idx_rejects(data, match):
    with pytest.raises(DatasetError, match=match) as e:
        parse_idx(data, "/some/file-idx3-ubyte")
    assert "/some/file-idx3-ubyte" in str(e.value)


def test_parse_idx_expected_ndim():
    with pytest.raises(DatasetError, match="0x00000803"):
        parse_idx(idx_bytes(np.zeros(3, np.uint8)), "f", expected_ndim=3)


@pytest.mark.parametrize("gz", [True, False])
def test_load_fashion_mnist_small(tmp_path, gz):
    images, labels = write_fmnist(tmp_path, n=5, gz=gz)
    write_fmnist(tmp_path, n=3, prefix="t10k", gz=gz, seed=1)
    ds = load_fashion_mnist(tmp_path, "train")
    assert isinstance(ds, ImageDataset) and len(ds) == 5
    assert ds.images.shape == (5, 1, 28, 28) and ds.images.dtype == torch.uint8
    assert ds.labels.dtype == torch.int64
    np.testing.assert_array_equal(ds.images[:, 0].numpy(), images)
    np.testing.assert_array_equal(ds.labels.numpy(), labels)
    assert (ds.num_classes, ds.in_chans, ds.image_size) == (10, 1, 28)
    assert ds.classes[0] == "T-shirt/top" and ds.name == "fashion_mnist/train"
    x, y, i = ds[3]
    assert x.shape == (1, 28, 28) and int(y) == labels[3] and i == 3
    assert len(get_dataset("fashion_mnist", tmp_path, "test")) == 3


def test_fashion_mnist_missing_folder(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_fashion_mnist(tmp_path / "nowhere")
    msg = str(e.value)
    assert str(tmp_path / "nowhere") in msg and "train-images-idx3-ubyte" in msg and "train-labels-idx1-ubyte" in msg
    assert isinstance(e.value, OSError) and isinstance(e.value, RobinError)


def test_fashion_mnist_missing_file(tmp_path):
    write_fmnist(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DatasetError, match="lacks train-labels-idx1-ubyte") as e:
        load_fashion_mnist(tmp_path)
    assert str(tmp_path) in str(e.value)


def test_fashion_mnist_truncated_gz(tmp_path):
    write_fmnist(tmp_path)
    p = tmp_path / "train-images-idx3-ubyte.gz"
    p.write_bytes(p.read_bytes()[:-20])
    with pytest.raises(DatasetError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist(tmp_path)


@pytest.mark.parametrize("dims, match", [((100_000, 28, 28), "truncated"), ((65_536, 65_536, 28), "limit")])
def test_fashion_mnist_forged_gz_header(tmp_path, dims, match):
    write_fmnist(tmp_path)
    forged = bytes([0, 0, 8, 3]) + b"".join(struct.pack(">I", d) for d in dims) + b"\x00" * 10
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(forged))
    with pytest.raises(DatasetError, match=match):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_truncated_payload(tmp_path):
    write_fmnist(tmp_path, gz=False)
    p = tmp_path / "train-images-idx3-ubyte"
    p.write_bytes(p.read_bytes()[:-1])
    with pytest.raises(DatasetError, match="truncated") as e:
        load_fashion_mnist(tmp_path)
    assert str(p) in str(e.value)


def test_fashion_mnist_wrong_magic(tmp_path):
    write_fmnist(tmp_path, gz=False)
    p = tmp_path / "train-labels-idx1-ubyte"
    data = bytearray(p.read_bytes())
    data[3] = 3  # claims to be an image file
    p.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="wrong magic number 0x00000803, expected 0x00000801"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_label_out_of_range(tmp_path):
    write_fmnist(tmp_path, n=4, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.array([0, 1, 10, 2], np.uint8)))
    with pytest.raises(DatasetError, match="label 10, expected labels in 0..9"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_count_mismatch_and_size(tmp_path):
    write_fmnist(tmp_path, n=4, gz=False)
    (tmp_path / "train-labels-idx1-ubyte").write_bytes(idx_bytes(np.zeros(3, np.uint8)))
    with pytest.raises(DatasetError, match="4 images but .* 3 labels"):
        load_fashion_mnist(tmp_path)
    (tmp_path / "train-images-idx3-ubyte").write_bytes(idx_bytes(np.zeros((3, 32, 32), np.uint8)))
    with pytest.raises(DatasetError, match="expected 28x28"):
        load_fashion_mnist(tmp_path)


def test_fashion_mnist_unknown_split(tmp_path):
    with pytest.raises(UnknownNameError, match="did you mean 'test'"):
        load_fashion_mnist(tmp_path, "tset")


@pytest.mark.skipif(not (DEBIAN_FMNIST / "t10k-images-idx3-ubyte.gz").exists(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split():
    ds = load_fashion_mnist(split="test")
    assert len(ds) == 10_000 and ds.images.shape == (10_000, 1, 28, 28)
    assert ds.labels.min() == 0 and ds.labels.max() == 9
    assert torch.bincount(ds.labels).tolist() == [1000] * 10
    assert get_dataset("fashion_mnist", split="test").images.equal(ds.images)


_VALID_IDX = idx_bytes(np.random.default_rng(0).integers(0, 256, (3, 4, 5), dtype=np.uint8))
_FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@_FUZZ
@given(st.binary(max_size=200))
def test_fuzz_parse_idx_random_bytes(data):
    try:
        out = parse_idx(data, "fuzz")
    except DatasetError:
        return
    assert out.dtype == np.uint8 and out.size == len(data) - 4 - 4 * out.ndim


@_FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(_VALID_IDX) - 1), st.integers(0, 255)), min_size=1, max_size=4),
    st.integers(-len(_VALID_IDX), 8),
)
def test_fuzz_parse_idx_mutations(edits, resize):
    data = bytearray(_VALID_IDX)
    for pos, val in edits:
        data[pos] = val
    data = data[:resize] if resize < 0 else data + b"\x07" * resize
    header_changed = any(data[k] != _VALID_IDX[k] for k in range(min(16, len(data)))) or resize != 0
    try:
        out = parse_idx(bytes(data), "fuzz", expected_ndim=3)
    except DatasetError:
        return
    assert not header_changed and out.shape == (3, 4, 5)


@_FUZZ
@given(st.binary(max_size=300), st.booleans())
def test_fuzz_fashion_mnist_files(tmp_path_factory, garbage, compress):
    folder = tmp_path_factory.mktemp("fuzz")
    write_fmnist(folder, n=2, gz=False)
    (folder / "train-images-idx3-ubyte").unlink()
    name = "train-images-idx3-ubyte" + (".gz" if compress else "")
    (folder / name).write_bytes(gzip.compress(garbage) if compress and len(garbage) % 2 else garbage)
    try:
        ds = load_fashion_mnist(folder)
    except DatasetError:
        return
    assert len(ds) == 2


# --------------------------------------------------------------------------------------------
# CIFAR
# --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("py2", [True, False])
def test_load_cifar10(tmp_path, py2):
    written = write_cifar(tmp_path, "cifar10", n=3, py2=py2)
    ds = load_cifar(tmp_path, "cifar10", "train")
    assert len(ds) == 15 and ds.images.shape == (15, 3, 32, 32) and ds.images.dtype == torch.uint8
    assert ds.classes == [f"class{i}" for i in range(10)] and ds.num_classes == 10
    data, labels = written["data_batch_2"]
    # row layout: 1024 red, 1024 green, 1024 blue values, each 32 rows of 32
    x, y, i = ds[3 + 1]
    assert i == 4 and int(y) == labels[1]
    assert int(x[1, 5, 7]) == data[1, 1024 + 5 * 32 + 7] and int(x[2, 31, 0]) == data[1, 2048 + 31 * 32]
    test = load_cifar(tmp_path / "cifar-10-batches-py", "cifar10", "test")  # the batches folder itself
    assert len(test) == 3 and test.labels.tolist() == written["test_batch"][1]
    assert test.name == "cifar10/test"


def test_load_cifar100(tmp_path):
    written = write_cifar(tmp_path, "cifar100", n=4)
    ds = get_dataset("cifar100", tmp_path, "train")
    assert len(ds) == 4 and ds.num_classes == 100 and ds.classes[99] == "fine99"
    assert ds.labels.tolist() == written["train"][1]
    assert len(load_cifar(tmp_path / "cifar-100-python", "cifar100", "test")) == 4


def test_cifar_missing_folder(tmp_path):
    with pytest.raises(DatasetError) as e:
        load_cifar(tmp_path, "cifar10")
    msg = str(e.value)
    assert str(tmp_path / "cifar-10-batches-py") in msg
    for f in ("data_batch_1", "data_batch_5", "test_batch", "batches.meta"):
        assert f in msg
    with pytest.raises(DatasetError, match="cifar-100-python.*train, test, meta"):
        load_cifar(tmp_path, "cifar100")
    with pytest.raises(DatasetError, match="no default location"):
        get_dataset("cifar10")


def test_cifar_missing_file(tmp_path):
    write_cifar(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DatasetError, match="lacks data_batch_3") as e:
        load_cifar(tmp_path, "cifar10", "train")
    assert str(tmp_path / "cifar-10-batches-py") in str(e.value)
    assert len(load_cifar(tmp_path, "cifar10", "test")) == 3  # the test split does not need it


@pytest.mark.parametrize("payload", [b"", b"not a pickle at all", b"\x80\x02}q\x00(U\x04data"])
def test_cifar_corrupt_pickle(tmp_path, payload):
    write_cifar(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    p.write_bytes(payload)
    with pytest.raises(DatasetError, match="test_batch is corrupt"):
        load_cifar(tmp_path, "cifar10", "test")


def test_cifar_truncated_pickle(tmp_path):
    write_cifar(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    p.write_bytes(p.read_bytes()[:-100])
    with pytest.raises(DatasetError, match=str(p)):
        load_cifar(tmp_path, "cifar10", "test")


class _Hostile:
    """A pickle payload that would create ``marker`` when unpickled by a plain unpickler."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "system":
            return (os.system, (f"touch {self.marker}",))
        if self.how == "exec":
            return (exec, (f"open({str(self.marker)!r}, 'w').close()",))
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("how", ["system", "exec", "touch"])
@pytest.mark.parametrize("where", ["data", "labels", "meta"])
def test_cifar_hostile_pickle_never_runs(tmp_path, how, where):
    write_cifar(tmp_path)
    folder = tmp_path / "cifar-10-batches-py"
    marker = tmp_path / "pwned"
    evil = _Hostile(marker, how)
    if where == "meta":
        obj, target = {b"label_names": [evil] * 10}, folder / "batches.meta"
    else:
        obj = {b"data": np.zeros((1, 3072), np.uint8), b"labels": [0]}
        obj[b"data" if where == "data" else b"labels"] = evil
        target = folder / "test_batch"
    target.write_bytes(pickle.dumps(obj, protocol=4))
    # sanity: a plain unpickler really would run it
    if how == "touch":
        pickle.loads(pickle.dumps(_Hostile(tmp_path / "control", how)))
        assert (tmp_path / "control").exists()
    with pytest.raises(DatasetError, match="refused: it asks for the Python global") as e:
        load_cifar(tmp_path, "cifar10", "test")
    assert str(target) in str(e.value)
    assert {"system": f"{os.system.__module__}.system", "exec": "builtins.exec", "touch": "pathlib.Path.touch"}[how] in str(e.value)
    assert e.value.__cause__ is None  # the refusal is the whole story
    assert not marker.exists()


def test_restricted_unpickler_refuses_misuse_of_allowed_names():
    # numpy.ndarray called directly with a huge shape must not allocate; dtype needs a plain type
    huge = b"\x80\x02cnumpy\nndarray\nJ\x00\x00\x00\x7f\x85R."
    bad_shape = b"\x80\x02cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nJ\x00\x00\x00\x7f\x85U\x01b\x87R."
    for data in (huge, bad_shape):
        with pytest.raises(Exception) as e:
            RestrictedUnpickler(io.BytesIO(data), encoding="bytes").load()
        assert not isinstance(e.value, MemoryError)
    with pytest.raises(pickle.UnpicklingError, match="refused global builtins.eval"):
        RestrictedUnpickler(io.BytesIO(b"cbuiltins\neval\n."), encoding="bytes").load()


def _rewrite(path: Path, **changes) -> None:
    d = RestrictedUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
    d.update({k.encode(): v for k, v in changes.items()})
    dump_py2_pickle(d, path)


def test_cifar_label_out_of_range(tmp_path):
    write_cifar(tmp_path, n=3)
    _rewrite(tmp_path / "cifar-10-batches-py" / "test_batch", labels=[0, 10, 1])
    with pytest.raises(DatasetError, match=r"'labels' values must lie in \[0, 9\], got \[0, 10\]"):
        load_cifar(tmp_path, "cifar10", "test")


def test_cifar100_uses_fine_labels_range(tmp_path):
    write_cifar(tmp_path, "cifar100", n=2)
    _rewrite(tmp_path / "cifar-100-python" / "test", fine_labels=[99, 100])
    with pytest.raises(DatasetError, match=r"\[0, 99\]"):
        load_cifar(tmp_path, "cifar100", "test")


def test_cifar_wrong_class_count(tmp_path):
    write_cifar(tmp_path)
    dump_py2_pickle({"label_names": ["a", "b", "c"]}, tmp_path / "cifar-10-batches-py" / "batches.meta")
    with pytest.raises(DatasetError, match="must list 10 class names, got 3 entries"):
        load_cifar(tmp_path, "cifar10", "test")
    write_cifar(tmp_path / "x", "cifar100")
    dump_py2_pickle({"fine_label_names": ["a"] * 10}, tmp_path / "x" / "cifar-100-python" / "meta")
    with pytest.raises(DatasetError, match="must list 100 class names"):
        load_cifar(tmp_path / "x", "cifar100", "test")


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(data=np.zeros((3, 3072), np.float32)), "uint8 array of shape"),
        (dict(data=np.zeros((3, 1024), np.uint8)), r"shape \(N, 3072\)"),
        (dict(data=[1, 2, 3]), "got list"),
        (dict(labels=[0, 1]), "3 images but 2 labels"),
        (dict(labels=[0, 1.5, 2]), "list of integers"),
        (dict(labels="abc"), "list of integers"),
    ],
)
def test_cifar_bad_contents(tmp_path, change, match):
    write_cifar(tmp_path, n=3)
    _rewrite(tmp_path / "cifar-10-batches-py" / "test_batch", **change)
    with pytest.raises(DatasetError, match=match):
        load_cifar(tmp_path, "cifar10", "test")


def test_cifar_not_a_dict_and_missing_key(tmp_path):
    write_cifar(tmp_path)
    p = tmp_path / "cifar-10-batches-py" / "test_batch"
    dump_py2_pickle([1, 2, 3], p)
    with pytest.raises(DatasetError, match="holds a list, expected a dict"):
        load_cifar(tmp_path, "cifar10", "test")
    dump_py2_pickle({"data": np.zeros((1, 3072), np.uint8)}, p)
    with pytest.raises(DatasetError, match="no 'labels' entry"):
        load_cifar(tmp_path, "cifar10", "test")


_CIFAR_FUZZ_BASE = io.BytesIO()
dump_py2_pickle({"data": np.arange(2 * 3072, dtype=np.uint32).astype(np.uint8).reshape(2, 3072), "labels": [3, 4]},
                _CIFAR_FUZZ_BASE)


@_FUZZ
@given(
    st.lists(st.tuples(st.integers(0, len(_CIFAR_FUZZ_BASE.getvalue()) - 1), st.integers(0, 255)), min_size=1, max_size=3),
    st.integers(-50, 0),
)
def test_fuzz_cifar_pickle_mutations(tmp_path_factory, edits, cut):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar(root, n=1)
    data = bytearray(_CIFAR_FUZZ_BASE.getvalue())
    for pos, val in edits:
        data[pos] = val
    (root / "cifar-10-batches-py" / "test_batch").write_bytes(bytes(data[: len(data) + cut] if cut else data))
    try:
        ds = load_cifar(root, "cifar10", "test")
    except DatasetError:
        return
    assert ds.images.shape == (2, 3, 32, 32)


# --------------------------------------------------------------------------------------------
# ImageNet-100 (ImageFolder)
# --------------------------------------------------------------------------------------------
def test_imagenet100_folder(tmp_path):
    write_png(tmp_path / "train" / "n02" / "a.png", (12, 8), (0, 255, 0))
    write_png(tmp_path / "train" / "n02" / "b.JPEG", (8, 16), (0, 0, 255), fmt="JPEG")
    write_png(tmp_path / "train" / "n01" / "c.jpg", (10, 10), (255, 0, 0), fmt="JPEG")
    (tmp_path / "train" / "n01" / "notes.txt").write_text("not an image")
    ds = load_imagenet100(tmp_path, "train", image_size=6)
    assert isinstance(ds, ImageFolderDataset) and len(ds) == 3
    assert ds.classes == ["n01", "n02"] and ds.labels.tolist() == [0, 1, 1]
    x, y, i = ds[1]
    assert x.shape == (3, 6, 6) and x.dtype == torch.uint8 and int(y) == 1 and i == 1
    assert x[1].float().mean() > 250 and x[0].float().mean() < 5  # the green PNG
    x, _, _ = ds[-1]
    assert x.shape == (3, 6, 6) and x[2].float().mean() > 200  # the blue JPEG, 8x16 -> 6x12 -> crop
    sub = ds.subset([2, 0])
    assert len(sub) == 2 and sub.labels.tolist() == [1, 0] and sub[0][2] == 0
    loader = torch.utils.data.DataLoader(ds, batch_size=3)
    xb, yb, ib = next(iter(loader))
    assert xb.shape == (3, 3, 6, 6) and ib.tolist() == [0, 1, 2]


def test_imagenet100_class_list(tmp_path):
    wnids = [f"n{k:08d}" for k in range(100)]
    for w in wnids[::-1]:
        write_png(tmp_path / "val" / w / "x.png", (4, 4))
    write_png(tmp_path / "val" / "n99999999" / "extra.png", (4, 4))  # not in the list: ignored
    lst = tmp_path / "classes.txt"
    lst.write_text("# ImageNet-100\n" + "\n".join(reversed(wnids)) + "\n\n")
    ds = get_dataset("imagenet100", tmp_path, "test", class_list=lst, image_size=4)
    assert ds.num_classes == 100 and ds.classes == wnids and len(ds) == 100
    assert ds.labels.tolist() == list(range(100))
    (tmp_path / "val" / wnids[5] / "x.png").unlink()
    (tmp_path / "val" / wnids[5]).rmdir()
    with pytest.raises(DatasetError, match=f"lacks 1 class folder.*{wnids[5]}"):
        load_imagenet100(tmp_path, "val", class_list=lst)


def test_imagenet100_class_list_wrong_count(tmp_path):
    (tmp_path / "train").mkdir()
    lst = tmp_path / "classes.txt"
    lst.write_text("n01\nn02\nn03\n")
    with pytest.raises(DatasetError, match="names 3 classes, expected exactly 100"):
        load_imagenet100(tmp_path, class_list=lst)
    lst.write_text("n01\n" * 100)
    with pytest.raises(DatasetError, match="more than once"):
        load_imagenet100(tmp_path, class_list=lst)
    with pytest.raises(DatasetError, match="cannot read class list"):
        load_imagenet100(tmp_path, class_list=tmp_path / "missing.txt")


def test_imagenet100_errors(tmp_path):
    with pytest.raises(DatasetError, match=f"{tmp_path / 'train'} does not exist"):
        load_imagenet100(tmp_path)
    (tmp_path / "train").mkdir()
    with pytest.raises(DatasetError, match="has no class folders"):
        load_imagenet100(tmp_path)
    (tmp_path / "train" / "n01").mkdir()
    with pytest.raises(DatasetError, match="n01 holds no images"):
        load_imagenet100(tmp_path)
    (tmp_path / "train" / "n01" / "bad.png").write_bytes(b"\x89PNG garbage")
    ds = load_imagenet100(tmp_path, image_size=8)
    with pytest.raises(DatasetError, match="cannot decode image .*bad.png"):
        ds[0]
    with pytest.raises(UnknownNameError, match="did you mean 'train'"):
        load_imagenet100(tmp_path, "trian")
    with pytest.raises(ConfigError, match="image_size"):
        load_imagenet100(tmp_path, image_size=0)


# --------------------------------------------------------------------------------------------
# ImageDataset, registry, validation split
# --------------------------------------------------------------------------------------------
def _tiny(n: int = 5) -> ImageDataset:
    images = torch.arange(n * 3 * 4 * 4, dtype=torch.int64).remainder(256).to(torch.uint8).view(n, 3, 4, 4)
    return ImageDataset(images, torch.arange(n) % 2, ["a", "b"], "tiny")


def test_image_dataset_api():
    ds = _tiny()
    assert (len(ds), ds.num_classes, ds.in_chans, ds.image_size) == (5, 2, 3, 4)
    x, y, i = ds[-1]
    assert i == 4 and x.equal(ds.images[4]) and int(y) == 0
    with pytest.raises(IndexError):
        ds[5]
    sub = ds.subset(torch.tensor([4, 1]))
    assert len(sub) == 2 and sub.images[0].equal(ds.images[4]) and sub[1][2] == 1 and sub.classes == ["a", "b"]
    assert len(ds.subset([])) == 0
    with pytest.raises(ConfigError, match=r"\[0, 4\]"):
        ds.subset([0, 5])
    xb, yb, ib = next(iter(torch.utils.data.DataLoader(ds, batch_size=4, shuffle=False)))
    assert xb.shape == (4, 3, 4, 4) and yb.dtype == torch.int64 and ib.tolist() == [0, 1, 2, 3]
    assert "n=5" in repr(ds)


@pytest.mark.parametrize(
    "images, labels, classes, match",
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, dtype=torch.int64), ["a"], "uint8"),
        (torch.zeros(2, 1, 4, 5, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), ["a"], "square"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(3, dtype=torch.int64), ["a"], r"shape \(2,\)"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int32), ["a"], "int64"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.tensor([0, 2]), ["a", "b"], r"\[0, 1\], got values in \[0, 2\]"),
        (torch.zeros(2, 1, 4, 4, dtype=torch.uint8), torch.zeros(2, dtype=torch.int64), [], "non-empty"),
    ],
)
def test_image_dataset_validation(images, labels, classes, match):
    with pytest.raises(ConfigError, match=match):
        ImageDataset(images, labels, classes)


def test_registry_and_info():
    assert list(DATASETS) == ["fashion_mnist", "cifar10", "cifar100", "imagenet100"]
    info = dataset_info("cifar10")
    assert isinstance(info, DatasetInfo) and info.num_classes == 10 and info.in_chans == 3 and info.image_size == 32
    assert info.default_eps == pytest.approx(8 / 255) and info.default_step == pytest.approx(2 / 255)
    assert dataset_info("cifar100").mean == (0.5071, 0.4865, 0.4409) and dataset_info("cifar100").num_classes == 100
    fm = dataset_info("fashion_mnist")
    assert (fm.mean, fm.std, fm.default_eps, fm.default_step, fm.in_chans) == ((0.2860,), (0.3530,), 0.1, 0.025, 1)
    inet = dataset_info("imagenet100")
    assert inet.default_eps == pytest.approx(2 / 255) and inet.default_step == pytest.approx(0.5 / 255)
    assert inet.mean == (0.485, 0.456, 0.406)
    for i in DATASETS.values():
        assert len(i.mean) == len(i.std) == i.in_chans
    with pytest.raises(Exception):
        info.num_classes = 3  # frozen


def test_unknown_dataset_name():
    with pytest.raises(UnknownNameError, match="did you mean 'cifar100'") as e:
        get_dataset("cifar_100")
    assert "valid: fashion_mnist, cifar10, cifar100, imagenet100" in str(e.value)
    assert isinstance(e.value, KeyError)
    with pytest.raises(UnknownNameError, match="fashion-mnist.*did you mean 'fashion_mnist'"):
        dataset_info("fashion-mnist")
    with pytest.raises(UnknownNameError, match="takes no option 'image_size'"):
        get_dataset("fashion_mnist", image_size=32)
    with pytest.raises(UnknownNameError, match="did you mean 'class_list'"):
        get_dataset("imagenet100", "/nowhere", class_lst="x")


def test_validation_split():
    tr, va = validation_split(60_000)
    assert len(va) == 1200 and len(tr) == 58_800
    assert torch.cat([tr, va]).sort().values.equal(torch.arange(60_000))
    assert tr.dtype == torch.int64 and bool((tr[1:] > tr[:-1]).all())
    tr2, va2 = validation_split(60_000)
    assert va.equal(va2) and tr.equal(tr2)
    torch.manual_seed(123)  # independent of the global RNG
    assert validation_split(60_000)[1].equal(va)
    assert not validation_split(60_000, seed=1)[1].equal(va)
    assert len(validation_split(10, 0.0)[1]) == 0 and len(validation_split(10, 0.01)[1]) == 1
    assert [len(t) for t in validation_split(0)] == [0, 0]
    assert [len(t) for t in validation_split(2, 0.9)] == [1, 1]
    for bad in (1.0, -0.1, float("nan"), "0.1"):
        with pytest.raises(ConfigError, match=r"\[0, 1\)"):
            validation_split(10, bad)
    with pytest.raises(ConfigError, match="n must be"):
        validation_split(-1)
    with pytest.raises(ConfigError, match="seed"):
        validation_split(10, seed=-3)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 500), st.floats(0, 0.99), st.integers(0, 2**31))
def test_validation_split_properties(n, fraction, seed):
    tr, va = validation_split(n, fraction, seed)
    assert torch.cat([tr, va]).sort().values.equal(torch.arange(n))
    if n >= 2:
        assert 1 <= len(tr)
        assert abs(len(va) - n * fraction) <= 1 or len(va) in (1, n - 1)


# --------------------------------------------------------------------------------------------
# Layout: one module per job, imports one way
# --------------------------------------------------------------------------------------------
def test_data_modules_import_one_way():
    """base <- the formats <- registry: no format imports the registry, base imports no format."""
    import ast

    import robin_plugin.data

    folder = Path(robin_plugin.data.__file__).parent
    formats = {"idx", "cifar", "imagefolder", "restricted_pickle"}
    allowed = {
        "base": set(),
        "restricted_pickle": set(),
        "idx": {"base"},
        "cifar": {"base", "restricted_pickle"},
        "imagefolder": {"base"},
        "registry": {"base"} | formats,
    }
    for module, may_import in allowed.items():
        tree = ast.parse((folder / f"{module}.py").read_text(encoding="utf-8"))
        siblings = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                siblings |= {node.module} if node.module else {a.name for a in node.names}
        assert siblings <= may_import, f"data/{module}.py imports {sorted(siblings - may_import)}"
        assert (ast.get_docstring(tree) or "").strip(), f"data/{module}.py needs an opening docstring saying its job"
