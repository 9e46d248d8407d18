"""benchmarks/fmnist_cifar_proxy.py: Fashion-MNIST written as CIFAR-10 python batches that robin's
CIFAR-10 loader (and a plain ``pickle.load(..., encoding="latin1")``, as torchvision reads CIFAR)
reads back with the right shape, pixels and labels; the output folder is never half-written or
clobbered; a cifar10 preset trains on it."""
from __future__ import annotations

import importlib.util
import json
import os
import pickle
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from robin_plugin.cli import main as robin_main
from robin_plugin.data import get_dataset, load_cifar, load_fashion_mnist
from robin_plugin.data.idx import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "fmnist_cifar_proxy.py"
_SPEC = importlib.util.spec_from_file_location("fmnist_cifar_proxy", SCRIPT)
proxy = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(proxy)

pytestmark = pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").is_file(),
                                reason="Debian dataset-fashion-mnist not installed")

N = 30


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("proxy") / "fmnist-cifar"
    return out, proxy.write_proxy(out, limit=N)


def test_robin_reads_the_proxy_as_cifar10(written):
    out, report = written
    fm = {split: load_fashion_mnist(None, split) for split in ("train", "test")}
    for split in ("train", "test"):
        ds = get_dataset("cifar10", str(out), split=split)
        assert ds.images.shape == (N, 3, 32, 32) and ds.images.dtype.is_floating_point is False
        assert ds.classes == FASHION_MNIST_CLASSES
        np.testing.assert_array_equal(ds.labels.numpy(), fm[split].labels[:N].numpy())
        x = ds.images.numpy()
        grey = fm[split].images[:N, 0].numpy()
        for c in range(3):  # grey repeated as R, G, B, unchanged in the middle
            np.testing.assert_array_equal(x[:, c, 2:30, 2:30], grey)
        border = np.ones((32, 32), bool)
        border[2:30, 2:30] = False
        assert not x[:, :, border].any()  # zero padding, 2 px each side
    assert report["train_images"] == N and report["test_images"] == N
    assert sum(report["counts"][f"data_batch_{b}"] for b in range(1, 6)) == N and report["counts"]["test_batch"] == N
    info = json.loads((out / "proxy.json").read_text())
    assert info["made_by"] == "benchmarks/fmnist_cifar_proxy.py" and info["limit"] == N


def test_files_have_the_real_cifar10_layout(written):
    out, _ = written
    folder = out / "cifar-10-batches-py"
    assert sorted(p.name for p in folder.iterdir()) == sorted(
        [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"])
    raw = (folder / "data_batch_1").read_bytes()
    assert raw[:2] == b"\x80\x02"  # protocol 2, as the originals
    assert b"numpy.core.multiarray\n_reconstruct" in raw and b"_codecs" not in raw
    with warnings.catch_warnings():  # numpy 2 warns about the numpy.core name the originals use
        warnings.simplefilter("ignore")
        with open(folder / "data_batch_1", "rb") as f:
            d = pickle.load(f, encoding="latin1")  # how torchvision's CIFAR10 reads the files
        with open(folder / "batches.meta", "rb") as f:
            meta = pickle.load(f, encoding="latin1")
    assert set(d) == {"batch_label", "labels", "data", "filenames"}
    assert d["data"].dtype == np.uint8 and d["data"].shape == (len(d["labels"]), 3072)
    assert all(type(y) is int for y in d["labels"]) and len(d["filenames"]) == len(d["labels"])
    assert meta["label_names"] == FASHION_MNIST_CLASSES and meta["num_vis"] == 3072
    ds = load_cifar(folder, "cifar10", "train")  # the batches folder itself is a valid root too
    assert len(ds) == N


def test_refuses_to_overwrite(tmp_path, written):
    out, _ = written
    with pytest.raises(proxy.RefusedOutput, match="not empty; pass --overwrite"):
        proxy.write_proxy(out, limit=5)
    assert len(load_cifar(out, "cifar10", "train")) == N  # untouched
    r = proxy.write_proxy(out, limit=5, overwrite=True)  # a folder the script wrote: replaced
    assert r["train_images"] == 5 and len(load_cifar(out, "cifar10", "train")) == 5
    assert sorted(p.name for p in out.parent.iterdir() if p.name.startswith(".")) == []  # no temp or old folder left
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(proxy.RefusedOutput, match="not written by this script"):
        proxy.write_proxy(foreign, limit=5, overwrite=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    empty = tmp_path / "empty"
    empty.mkdir()
    assert proxy.write_proxy(empty, limit=3)["train_images"] == 3  # an empty folder is fine
    proxy.write_proxy(out, limit=N, overwrite=True)  # leave the module fixture as it was


def test_a_failed_write_leaves_nothing(tmp_path, monkeypatch):
    out = tmp_path / "proxy"

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(proxy, "write_cifar10", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        proxy.write_proxy(out, limit=3)
    assert list(tmp_path.iterdir()) == []


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    repo = str(SCRIPT.parents[1])  # this checkout's robin_plugin, not another installed copy
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [repo, os.environ.get("PYTHONPATH")])))
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=repo, env=env)


def test_command_line(tmp_path, capsys):
    out = tmp_path / "p"
    proc = _run([sys.executable, str(SCRIPT), str(out), "--limit", "12"])  # run as a script, once
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "12 training and 12 test images" in proc.stdout and "data_batch_5" in proc.stdout
    assert "(N, 3, 32, 32)" in proc.stdout and "read back with robin's CIFAR-10 loader: OK" in proc.stdout
    assert proxy.main([str(out), "--limit", "12"]) == 2
    assert "--overwrite" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        proxy.main([str(out), "--limit", "0"])
    assert e.value.code == 2 and "--limit must be >= 1" in capsys.readouterr().err
    assert proxy.main([str(tmp_path / "q"), "--source", str(tmp_path / "nowhere")]) == 2
    assert "Fashion-MNIST" in capsys.readouterr().err and not (tmp_path / "q").exists()


def test_a_cifar10_preset_trains_on_the_proxy(written, tmp_path, capsys):
    out, _ = written
    rc = robin_main(["train", "--preset", "cifar10-resnet18-pgd", f"data_root={out}", f"out_dir={tmp_path / 'run'}",
                     "model_kwargs={width: 4}", "epochs=1", "batch_size=8", "val_fraction=0.2", "attack_steps=1",
                     "val_pgd_steps=1", "test_n=4", "test_pgd_steps=1", "device=cpu", "progress=false"])
    assert rc == 0, capsys.readouterr().err[-3000:]
    result = json.loads((tmp_path / "run" / "results.json").read_text())
    assert result["dataset"] == "cifar10" and result["train_images"] == N - round(0.2 * N)
