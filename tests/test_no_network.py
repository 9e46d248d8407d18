"""Nothing in the package touches the network: the main paths run with sockets blocked.

The network is blocked for the whole of each test (``socket.socket.connect`` / ``connect_ex``
/ ``sendto``, ``socket.create_connection`` and ``socket.getaddrinfo`` raise), so a download
or even a DNS lookup anywhere inside model creation, training, export or evaluation fails the
test. A static check keeps download helpers out of the source.
"""
from __future__ import annotations

import ast
import socket
from pathlib import Path

import pytest
import timm
import torch

import robin_plugin
from robin_plugin.data import ImageDataset

PACKAGE = Path(robin_plugin.__file__).parent


class NetworkUsed(AssertionError):
    """Raised by the blocked socket functions."""


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise NetworkUsed(f"network access attempted: {args[:2]!r}")

    for name in ("connect", "connect_ex", "sendto"):
        monkeypatch.setattr(socket.socket, name, refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield


def test_the_block_works():
    with pytest.raises(NetworkUsed):
        socket.create_connection(("127.0.0.1", 9))
    with pytest.raises(NetworkUsed):
        socket.getaddrinfo("pypi.org", 443)
    with pytest.raises(NetworkUsed):
        socket.socket().connect(("127.0.0.1", 9))


def _small(name: str) -> dict:
    return dict(widen_factor=1) if "wrn" in name else dict(width=4)


@pytest.mark.parametrize("name", timm.list_models("robin_*"))
def test_every_registered_model_builds_and_runs_offline(name):
    model = timm.create_model(name, pretrained=False, num_classes=3, **_small(name)).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 16, 16)).shape == (1, 3)


def _toy(n: int, seed: int = 0) -> ImageDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.rand(n, 1, 12, 12, generator=g) * 0.4
    x[y == 0, :, :6] += 0.5
    x[y == 1, :, 6:] += 0.5
    return ImageDataset((x.clamp(0, 1) * 255).to(torch.uint8), y.long(), ["top", "bottom"], "toy")


def test_train_export_load_and_evaluate_offline(tmp_path):
    from robin_plugin.export import export_compact, load_compact
    from robin_plugin.training import TrainConfig, Trainer

    cfg = TrainConfig(model="robin_resnet18", keep_ratio=0.2, epochs=1, batch_size=16, attack="ffgsm", eps=0.1,
                      step_size=0.125, eval_step_size=0.05, val_pgd_steps=1, progress=False, augment=False)
    model = timm.create_model("robin_resnet18", num_classes=2, in_chans=1, width=4, keep_ratio=0.2,
                              mean=(0.5,), std=(0.25,))
    result = Trainer(model, cfg, _toy(32), _toy(8, seed=1), out_dir=tmp_path / "run").fit()
    assert "val/robust_acc" in result and (tmp_path / "run" / "checkpoint.safetensors").is_file()

    export_compact(model, tmp_path / "m.safetensors")
    back = load_compact(tmp_path / "m.safetensors")
    # timm's own loader on the local file (no hub lookup)
    via_timm = timm.create_model("robin_resnet18", num_classes=2, in_chans=1, width=4, keep_ratio=0.2,
                                 mean=(0.5,), std=(0.25,), pretrained=True,
                                 pretrained_cfg_overlay=dict(file=str(tmp_path / "m.safetensors")))
    x = torch.rand(4, 1, 12, 12)
    model.eval()
    with torch.no_grad():
        assert torch.equal(back(x), model(x)) and torch.equal(via_timm.eval()(x), model(x))

    from robin_plugin.eval import AutoAttackConfig, evaluate

    data = _toy(8, seed=2)
    res = evaluate(model, data.images, data.labels, 0.1, attacks=("apgd-ce",), pgd_steps=2, run_checks=False,
                   config=AutoAttackConfig(apgd_iter=2), progress=False)
    with torch.no_grad():
        clean = (model(data.images.float() / 255).argmax(1) == data.labels).float().mean().item()
    assert (res.n, res.attacks, len(res.robust)) == (8, ["apgd-ce"], 8)
    assert res.clean_acc == pytest.approx(clean) and res.worst_case_acc <= res.autoattack_acc <= res.clean_acc


def test_training_data_loaders_never_download(tmp_path):
    """Asking for a dataset that is not on disk fails with our error, not with a download attempt."""
    from robin_plugin.data import DatasetError, get_dataset

    for name in ("cifar10", "cifar100", "fashion_mnist"):
        with pytest.raises(DatasetError):
            get_dataset(name, tmp_path / "nothing-here", split="train")


# --- static check --------------------------------------------------------------------------
FORBIDDEN_MODULES = {"urllib", "urllib3", "requests", "http", "httpx", "aiohttp", "huggingface_hub", "socket",
                     "ftplib", "gdown", "wget"}
FORBIDDEN_NAMES = {"hf_hub_download", "snapshot_download", "download_url", "download_and_extract_archive",
                   "load_state_dict_from_url", "urlopen", "urlretrieve"}


def _violations(source: str, where: str) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [f"{where}: import {a.name}" for a in node.names if a.name.split(".")[0] in FORBIDDEN_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module.split(".")[0] in FORBIDDEN_MODULES:
                found.append(f"{where}: from {node.module} import ...")
            found += [f"{where}: import {a.name}" for a in node.names if a.name in FORBIDDEN_NAMES]
        elif isinstance(node, ast.keyword) and node.arg == "download":
            if not (isinstance(node.value, ast.Constant) and node.value.value is False):
                found.append(f"{where}:{node.lineno}: download={ast.unparse(node.value)}")
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(f"{where}:{node.lineno}: {node.id}")
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_NAMES:
            found.append(f"{where}:{node.lineno}: .{node.attr}")
    return found


def test_no_module_uses_a_download_helper():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 20
    found = [v for f in files for v in _violations(f.read_text(encoding="utf-8"), str(f.relative_to(PACKAGE.parent)))]
    assert not found, "network code in the package:\n" + "\n".join(found)


@pytest.mark.parametrize("source", [
    "import urllib.request", "from requests import get", "import http.client",
    "from torchvision.datasets import CIFAR10\nCIFAR10('x', download=True)",
    "from huggingface_hub import hf_hub_download", "torch.hub.load_state_dict_from_url(u)",
])
def test_the_static_check_catches_downloads(source):
    assert _violations(source, "example")
