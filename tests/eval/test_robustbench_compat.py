"""RobustBench 1.1.1's own tools on robin models, offline (robin_plugin.eval.robustbench_compat).

Needs the ``robustbench`` extra and robustbench 1.1.1 itself (``pip install
"robin_plugin[robustbench]" && pip install --no-deps robustbench==1.1.1``; ``.ci/setup.sh``
installs both). Without them the module is skipped, with the reason; in CI (``CI`` set) a
missing or broken install fails instead, so the tests cannot silently stop running there.

Every test runs with the network blocked by an audit hook: a socket connect, DNS lookup or send
anywhere (RobustBench, torchvision, timm, gdown) raises :class:`NetworkUsed`.
"""
from __future__ import annotations

import os
import re
import shutil
import socket
import sys
import time
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

import robin_plugin  # noqa: F401  (registers the robin models)
from robin_plugin import ConfigError
from robin_plugin.testing import dump_py2_pickle

pytest.importorskip("pyautoattack", reason="the robustbench extra is not installed: pip install \"robin_plugin[robustbench]\"")

from robin_plugin.eval import robustbench_compat as rbc  # noqa: E402

try:
    robustbench = rbc.enable()
except rbc.RobustBenchInstallError as e:
    if os.environ.get("CI"):
        raise  # .ci/setup.sh installs robustbench 1.1.1: a broken install must fail CI, not skip
    pytest.skip(f"robustbench {rbc.ROBUSTBENCH_VERSION} is not importable here: {e}", allow_module_level=True)

EPS = 8 / 255


# --------------------------------------------------------------------------------------------
# the network block
# --------------------------------------------------------------------------------------------
class NetworkUsed(AssertionError):
    """Raised by the audit hook on any socket connect, DNS lookup or send."""


_NET_EVENTS = {"socket.connect", "socket.getaddrinfo", "socket.gethostbyname", "socket.gethostbyaddr",
               "socket.sendto", "socket.sendmsg"}
_blocking = [False]


def _audit(event: str, args: tuple) -> None:
    if _blocking[0] and event in _NET_EVENTS:
        raise NetworkUsed(f"network access attempted: {event} {args!r:.200}")


sys.addaudithook(_audit)  # hooks cannot be removed; it only acts while a test of this module runs


@pytest.fixture(autouse=True)
def no_network():
    _blocking[0] = True
    try:
        yield
    finally:
        _blocking[0] = False


def test_the_block_works():
    with pytest.raises(NetworkUsed):
        socket.getaddrinfo("pypi.org", 443)
    with pytest.raises(NetworkUsed):
        socket.create_connection(("127.0.0.1", 9), timeout=1)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def tiny_robin(seed: int = 0) -> torch.nn.Module:
    """A width-4 robin ResNet-18 whose BatchNorm statistics were set by a few forward passes.

    With its initial BatchNorm statistics an untrained robin model's logits are ~1e8; a few
    train-mode passes set running statistics as training would, so logits are of order 10.
    """
    torch.manual_seed(seed)
    model = timm.create_model("robin_resnet18", width=4, keep_ratio=0.1)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _ in range(5):
            model(torch.rand(64, 3, 32, 32, generator=g))
    return model.eval()


def write_cifar10_test(root: Path, images: torch.Tensor, labels: torch.Tensor) -> Path:
    """``root/cifar-10-batches-py/{test_batch, batches.meta}`` in the real on-disk format.

    images: (N, 3, 32, 32) uint8; labels: (N,) int. Only the test split: the other five batch
    files are absent, so torchvision's checksum check would fail and it would download.
    """
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    n = images.shape[0]
    dump_py2_pickle({b"batch_label": b"testing batch 1 of 1", b"labels": [int(v) for v in labels],
                     b"data": images.reshape(n, 3 * 32 * 32).numpy(), b"filenames": [f"img{i}.png".encode() for i in range(n)]},
                    folder / "test_batch")
    dump_py2_pickle({b"num_cases_per_batch": n, b"label_names": [f"class{i}".encode() for i in range(10)], b"num_vis": 3072},
                    folder / "batches.meta")
    return root


def random_images(n: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)  # (N, 3, 32, 32)


# --------------------------------------------------------------------------------------------
# the layer itself
# --------------------------------------------------------------------------------------------
def test_enable_is_idempotent_and_aliases_autoattack():
    import pyautoattack.state

    assert rbc.enable() is robustbench
    import autoattack
    import robustbench.eval as rb_eval
    from autoattack.state import EvaluationState

    assert autoattack.AutoAttack is rbc.AutoAttack and issubclass(rbc.AutoAttack, pyautoattack.AutoAttack)
    assert EvaluationState is pyautoattack.state.EvaluationState
    assert rb_eval.AutoAttack is rbc.AutoAttack and robustbench.benchmark is rb_eval.benchmark


def test_enable_checks_its_seed():
    with pytest.raises(ConfigError, match="seed"):
        rbc.enable(seed=-1)
    with pytest.raises(ConfigError, match="seed"):
        rbc.enable(seed=True)


def test_pkg_resources_stand_in_serves_robustbench():
    """robustbench.loaders uses pkg_resources.resource_filename (ImageNet's file list); setuptools 82 removed it."""
    import robustbench.loaders as rb_loaders

    path = rb_loaders.pkg_resources.resource_filename("robustbench.loaders", "helper_files/imagenet_test_image_ids.txt")
    assert Path(path).is_file()
    if "stand-in" in (rb_loaders.pkg_resources.__doc__ or ""):
        assert "pkg_resources" not in sys.modules  # only there while robustbench was imported


def test_install_check_accepts_this_install():
    assert rbc.check_install() == Path(robustbench.__file__).resolve().parent


# robustbench/__init__.py as torchattacks 3.5.1's wheel ships it
STALE_INIT = "from .data import load_cifar10\nfrom .utils import load_model\n# from .eval import benchmark\n"


def test_install_check_refuses_a_shadowing_stale_copy(tmp_path, monkeypatch):
    (tmp_path / "robustbench").mkdir()
    (tmp_path / "robustbench" / "__init__.py").write_text(STALE_INIT)
    monkeypatch.delitem(sys.modules, "robustbench")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(rbc.RobustBenchInstallError, match="shadows it"):
        rbc.check_install()


def test_install_check_refuses_overwritten_files(tmp_path, monkeypatch):
    """torchattacks installed after robustbench: 1.1.1's metadata, but its files replaced."""
    import importlib.metadata

    dist = importlib.metadata.distribution("robustbench")
    real = Path(robustbench.__file__).parent
    shutil.copytree(real, tmp_path / "robustbench", ignore=shutil.ignore_patterns("__pycache__"))
    info = tmp_path / f"robustbench-{rbc.ROBUSTBENCH_VERSION}.dist-info"
    info.mkdir()
    for name in ("METADATA", "RECORD"):
        (info / name).write_text(dist.read_text(name))
    (tmp_path / "robustbench" / "__init__.py").write_text(STALE_INIT)
    monkeypatch.delitem(sys.modules, "robustbench")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(rbc.RobustBenchInstallError, match="overwritten.*torchattacks"):
        rbc.check_install()


def test_old_autoattack_api(tmp_path):
    """The keywords RobustBench (and older scripts) pass: norm, eps, version, device, log_path, bs, return_labels."""
    model = tiny_robin()
    x = random_images(3).float() / 255  # (3, 3, 32, 32)
    with torch.no_grad():
        y = model(x).argmax(1)
    log = tmp_path / "aa.log"
    adversary = rbc.AutoAttack(model, norm="Linf", eps=EPS, version="custom", attacks_to_run=["apgd-ce"],
                               device=torch.device("cpu"), log_path=str(log))
    adversary.apgd.n_iter = 5  # attributes work as in both APIs
    x_adv = adversary.run_standard_evaluation(x, y, bs=2, state_path=str(tmp_path / "state.json"))
    assert isinstance(x_adv, torch.Tensor) and x_adv.shape == x.shape
    assert (x_adv - x).abs().max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    quiet = rbc.AutoAttack(model, eps=EPS, version="custom", attacks_to_run=["apgd-ce"], verbose=False)  # model's device
    quiet.apgd.n_iter = 5
    x_adv2, y_adv = quiet.run_standard_evaluation(x, y, bs=3, return_labels=True)
    assert x_adv2.shape == x.shape and y_adv.shape == y.shape
    per_attack = quiet.run_standard_evaluation_individual(x, y, bs=3)
    assert list(per_attack) == ["apgd-ce"] and per_attack["apgd-ce"].shape == x.shape
    text = log.read_text()
    assert "robust accuracy after APGD-CE" in text and "max Linf perturbation" in text
    assert rbc.AutoAttack(model, eps=EPS).seed == 0  # enable()'s default seed, not the clock
    with pytest.raises(ConfigError, match="is_tf_model"):
        rbc.AutoAttack(model, eps=EPS, is_tf_model=True)


def test_cifar_loaders_read_the_local_folder_and_never_download(tmp_path):
    images, labels = random_images(5), torch.tensor([3, 1, 4, 1, 5])
    root = write_cifar10_test(tmp_path, images, labels)
    import robustbench.data as rb_data

    x, y = rb_data.load_cifar10(n_examples=3, data_dir=str(root))
    assert x.dtype == torch.float32 and x.shape == (3, 3, 32, 32) and y.tolist() == [3, 1, 4]
    assert torch.equal((x * 255).round().to(torch.uint8), images[:3])
    x_all, _ = robustbench.load_cifar10(n_examples=None, data_dir=str(root))
    assert x_all.shape[0] == 5
    # upstream: torchvision's CIFAR10(download=True) finds no valid checksums and downloads
    with pytest.raises(NetworkUsed):
        rb_data.load_cifar10.__wrapped__(3, str(tmp_path / "upstream"))
    from robin_plugin.data import DatasetError

    with pytest.raises(DatasetError, match="nothing is downloaded"):
        rb_data.load_cifar100(n_examples=3, data_dir=str(root))


# --------------------------------------------------------------------------------------------
# RobustBench's entry points on robin models
# --------------------------------------------------------------------------------------------
def test_load_model_returns_the_robin_checkpoint(tmp_path):
    """robustbench.utils.load_model -> timm alias robin_resnet18_cifar10_linf -> checkpoint_path.

    load_model passes no model kwargs, so the checkpoint is of the default architecture (full
    width); keep ratios are state, so a keep_ratio=0.1 checkpoint loads into it all the same.
    """
    from robustbench.utils import load_model

    trained = timm.create_model("robin_resnet18", keep_ratio=0.1)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))  # "training": scores differ from a fresh model's
    trained.eval()
    ckpt = tmp_path / "robin_resnet18.safetensors"
    save_file(trained.state_dict(), str(ckpt))
    model = load_model("robin_resnet18", dataset="cifar10", threat_model="Linf", custom_checkpoint=str(ckpt))
    assert type(model).__name__ == "RobinResNet" and not model.training and model.num_classes == 10
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), trained(x))
    with pytest.raises(ConfigError, match="no hosted weights"):  # robustbench's default custom_checkpoint=""
        load_model("robin_resnet18", dataset="cifar10", threat_model="Linf")


_AFTER = re.compile(r"robust accuracy after ([A-Z\-]+): ([0-9.]+)%")
_MAX_PERT = re.compile(r"max Linf perturbation: ([0-9.]+)")


def test_benchmark_on_a_robin_model_matches_robin_evaluate(tmp_path, capsys):
    """robustbench.eval.benchmark on a local CIFAR-format folder, offline, against robin's evaluate.

    Four points; three labelled as the model predicts them, one not (clean accuracy 75%).
    benchmark runs pyautoattack (AutoAttack "standard", seed 0 through the layer) on them;
    robin_plugin.evaluate runs robin's own AutoAttack and, with reference=True, pyautoattack on
    the same points with the same seed: the numbers must agree.
    """
    from robin_plugin.eval import evaluate

    model = tiny_robin()
    images = random_images(4)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(1)
    labels[-1] = (labels[-1] + 1) % 10  # one point the model gets wrong
    root = write_cifar10_test(tmp_path / "data", images, labels)
    log = tmp_path / "benchmark.log"

    t = time.perf_counter()
    clean_acc, robust_acc = robustbench.benchmark(
        model, n_examples=4, dataset="cifar10", threat_model="Linf", data_dir=str(root), device="cpu", eps=EPS,
        log_path=str(log))
    bench_s = time.perf_counter() - t
    out = capsys.readouterr().out
    assert "Clean accuracy: 75.00%" in out

    t = time.perf_counter()
    result = evaluate(model, images, labels, EPS, run_checks=False, pgd_steps=5, reference=True, seed=0, progress=False)
    eval_s = time.perf_counter() - t

    assert clean_acc == result.clean_acc == pytest.approx(0.75)
    assert robust_acc == pytest.approx(result.reference["autoattack_acc"], abs=1e-9)
    assert robust_acc == pytest.approx(result.autoattack_acc, abs=1e-9)
    assert 0.0 <= robust_acc <= clean_acc
    text = log.read_text()  # log_path: every AutoAttack message, as the old API wrote it
    after = {name.lower(): float(v) / 100 for name, v in _AFTER.findall(text)}
    print(f"\nbenchmark: clean {clean_acc:.2%}, AA {robust_acc:.2%}, after {after} ({bench_s:.1f} s); robin evaluate: "
          f"clean {result.clean_acc:.2%}, AA {result.autoattack_acc:.2%} (after {result.robust_acc_after}), reference "
          f"AA {result.reference['autoattack_acc']:.2%} (after {result.reference['robust_acc_after']}) ({eval_s:.1f} s)")
    assert after == pytest.approx(result.reference["robust_acc_after"])
    assert after and 0 < float(_MAX_PERT.search(text).group(1)) <= EPS + 1e-5


def test_benchmark_with_an_autoattack_state_file(tmp_path, capsys):
    """aa_state_path (a str here): the state is written and the accuracy read back from it.

    Resuming from an existing file is refused with a clear error: pyautoattack 0.2.0 cannot
    (see robustbench_compat's AutoAttack.run_standard_evaluation).
    """
    model = tiny_robin()
    images = random_images(4)
    with torch.no_grad():
        labels = model(images.float() / 255).argmax(1)
    root = write_cifar10_test(tmp_path / "data", images, labels)
    state = tmp_path / "aa_state.json"
    kwargs = dict(n_examples=4, dataset="cifar10", threat_model="Linf", data_dir=str(root), device="cpu", eps=EPS)
    with_state = robustbench.benchmark(model, aa_state_path=str(state), **kwargs)
    assert state.is_file() and "Created state" in capsys.readouterr().out
    assert with_state == robustbench.benchmark(model, **kwargs)
    with pytest.raises(ConfigError, match="cannot resume"):
        robustbench.benchmark(model, aa_state_path=state, **kwargs)
