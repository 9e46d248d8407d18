"""Run RobustBench 1.1.1's own tools on robin models, offline: ``load_model`` and ``eval.benchmark``.

RobustBench (Croce et al., NeurIPS 2021 Datasets and Benchmarks) 1.1.1 from PyPI cannot be
used as published next to this package. :func:`enable` makes it work, and changes nothing until
it is called. Each step works around one upstream problem:

1. ``import robustbench`` imports ``autoattack``, but its dependency ``pyautoattack`` installs
   the module ``pyautoattack``. :func:`enable` registers ``autoattack`` and its submodules
   (``autoattack.state``, ``autoattack.autopgd_base``, ...) in ``sys.modules`` as aliases of
   ``pyautoattack``'s, except ``autoattack.AutoAttack``, which is :class:`AutoAttack` below. A
   real ``autoattack`` that is already importable (the original git install) is left alone.
2. ``robustbench.eval.benchmark`` calls the old AutoAttack API,
   ``AutoAttack(model, norm=, eps=, version=, device=, log_path=)`` and
   ``run_standard_evaluation(x, y, bs=, state_path=)`` returning ``x_adv``, while pyautoattack
   0.2.0 takes ``AutoAttack(model, *, attacks=, device=, eps=, norm=, seed=, version=)`` and
   ``run_standard_evaluation(x, y, *, batch_size=, state_path=)`` returning ``(x_adv, y_adv)``.
   :class:`AutoAttack` is pyautoattack's class with the old signatures on top; the attacks are
   pyautoattack's, unchanged. The old API seeds every attack with the current time when no
   seed is given, so two benchmark runs differ; here the default seed is :func:`enable`'s
   ``seed`` (0), so ``benchmark`` is reproducible and matches
   ``robin_plugin.evaluate(..., reference=True, seed=0)`` on the same points.
3. ``robustbench.loaders`` imports ``pkg_resources``, which setuptools 82 removed. When it is
   missing, a stand-in with the one function RobustBench uses (``resource_filename``) is put in
   ``sys.modules`` while RobustBench is imported, and taken out again afterwards.
4. RobustBench's CIFAR loaders call torchvision's ``CIFAR10(..., download=True)``: unless all
   six batch files are present with their published checksums, that downloads the archive, and
   it reads the batch files with an unrestricted ``pickle.load``. :func:`enable` points
   ``load_cifar10`` / ``load_cifar100`` (and the table ``benchmark`` looks them up in) at
   :func:`load_cifar`, which reads the test split of the standard python-pickle layout in
   ``data_dir`` with :func:`robin_plugin.data.get_dataset` (restricted unpickler, never a
   download; only ``test_batch`` and ``batches.meta`` are needed).
5. ``benchmark(device="cpu")`` raises NotImplementedError (a ``str`` is a ``Sequence``, taken for
   a list of devices), a ``str`` ``aa_state_path`` fails (``.open()`` is called on it), and the
   accuracy read back from the state file is the mean of a bool tensor, which torch refuses.
   ``robustbench.benchmark`` / ``robustbench.eval.benchmark`` become a thin wrapper that passes
   ``torch.device(device)`` and ``Path(aa_state_path)``, and the read-back gets float flags.
   Resuming from an existing state file cannot work with pyautoattack 0.2.0 (it writes its
   attack set as a ``str``, compares it with a ``set`` when reading, and returns an undefined
   ``y_adv`` on a restored run): :class:`AutoAttack` refuses such a file with a clear error.

It also refuses an install it cannot vouch for: torchattacks' wheel ships an old copy of
``robustbench/`` that overwrites the real package's files when torchattacks is installed after
it. :func:`check_install` compares the files against the sha256 hashes that robustbench
1.1.1's wheel recorded and raises :class:`RobustBenchInstallError` saying how to repair.

Install (see ``docs/evaluation.md``)::

    pip install "robin_plugin[robustbench]"            # pyautoattack and what robustbench imports
    pip install --no-deps robustbench==1.1.1          # its timm==1.0.9 pin would downgrade timm

Usage::

    from robin_plugin.eval import robustbench_compat
    robustbench = robustbench_compat.enable()
    from robustbench.utils import load_model
    from robustbench.eval import benchmark
    model = load_model("robin_resnet34", dataset="cifar10", threat_model="Linf",
                       custom_checkpoint="model.safetensors")
    clean_acc, robust_acc = benchmark(model, dataset="cifar10", threat_model="Linf",
                                      n_examples=1000, data_dir="data", eps=8 / 255, device="cpu")

One module for the one upstream release it adapts, past 400 lines because each numbered workaround
above sits with its code, and all of them come and go together with that release.
"""
from __future__ import annotations

import base64
import contextlib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import logging
import os
import sys
import types
import warnings
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._checks import is_int
from ..data import get_dataset
from ..errors import ConfigError, RobinError

__all__ = [
    "AutoAttack",
    "ROBUSTBENCH_VERSION",
    "RobustBenchInstallError",
    "check_install",
    "enable",
    "load_cifar",
]

logger = logging.getLogger(__name__)

#: The RobustBench release this layer is written and tested against.
ROBUSTBENCH_VERSION = "1.1.1"

# RobustBench's modules this layer relies on; their hashes must match the wheel's RECORD.
_CHECKED_FILES = ("__init__.py", "data.py", "eval.py", "loaders.py", "utils.py")
# pyautoattack's submodules, aliased as autoattack.<name> (fab_tf / utils_tf* need TensorFlow: left out)
_AUTOATTACK_SUBMODULES = ("autopgd_base", "checks", "fab_base", "fab_projections", "fab_pt", "other_utils",
                          "square", "state")
_ALIAS_MARK = "__robin_alias__"  # set on the ``autoattack`` module this layer creates

_INSTALL_HINT = ('pip install "robin_plugin[robustbench]" && '
                 f"pip install --no-deps --force-reinstall robustbench=={ROBUSTBENCH_VERSION}")


class RobustBenchInstallError(RobinError, ImportError):
    """robustbench is missing, is another version, or its files are not 1.1.1's (torchattacks' stale copy)."""


# --------------------------------------------------------------------------------------------
# The install check
# --------------------------------------------------------------------------------------------
def _record_hash(path: Path) -> str:
    """A file's sha256 as wheel RECORD files write it (urlsafe base64, no padding)."""
    return base64.urlsafe_b64encode(hashlib.sha256(path.read_bytes()).digest()).rstrip(b"=").decode()


def check_install() -> Path:
    """Check that ``import robustbench`` would load robustbench 1.1.1's own files.

    Returns:
        The folder of the ``robustbench`` package that Python imports.

    Raises:
        RobustBenchInstallError: robustbench is not installed; only torchattacks' old copy is
            (no distribution metadata); another version is installed; or the files Python
            would import differ from the ones 1.1.1's wheel recorded (torchattacks installed
            after robustbench overwrote them). The message says how to repair the install.
    """
    loaded = sys.modules.get("robustbench")
    if loaded is not None and getattr(loaded, "__file__", None):
        folder = Path(loaded.__file__).resolve().parent
    else:
        spec = importlib.util.find_spec("robustbench")
        if spec is None or not spec.submodule_search_locations:
            raise RobustBenchInstallError(f"robustbench is not installed; install it with: {_INSTALL_HINT}")
        folder = Path(next(iter(spec.submodule_search_locations))).resolve()
    try:
        dist = importlib.metadata.distribution("robustbench")
    except importlib.metadata.PackageNotFoundError:
        raise RobustBenchInstallError(
            f"{folder} is not RobustBench {ROBUSTBENCH_VERSION}: no robustbench distribution is installed, so this is "
            f"the old copy that torchattacks' wheel ships; install the real one with: {_INSTALL_HINT}"
        ) from None
    if dist.version != ROBUSTBENCH_VERSION:
        raise RobustBenchInstallError(
            f"robustbench {dist.version} is installed; robin_plugin's compatibility layer is written for "
            f"{ROBUSTBENCH_VERSION}: {_INSTALL_HINT}"
        )
    recorded = {str(f): f for f in dist.files or () if f.hash is not None and f.hash.mode == "sha256"}
    for name in _CHECKED_FILES:
        path = folder / name
        entry = recorded.get(f"robustbench/{name}")
        if entry is None:  # no RECORD (e.g. a source checkout): fall back to 1.1.1's markers
            text = path.read_text(encoding="utf-8", errors="replace") if path.is_file() else ""
            if name == "utils.py" and "custom_checkpoint" not in text:
                raise RobustBenchInstallError(f"{path} is not RobustBench {ROBUSTBENCH_VERSION}'s: {_INSTALL_HINT}")
            continue
        if Path(dist.locate_file(entry)).resolve() != path.resolve():
            raise RobustBenchInstallError(
                f"Python imports robustbench from {folder}, but robustbench {ROBUSTBENCH_VERSION} is installed in "
                f"{Path(dist.locate_file(entry)).parent}: another robustbench folder shadows it "
                "(torchattacks ships an old copy); remove it or reinstall: " + _INSTALL_HINT
            )
        if not path.is_file() or _record_hash(path) != entry.hash.value:
            raise RobustBenchInstallError(
                f"{path} is not RobustBench {ROBUSTBENCH_VERSION}'s file: it was overwritten, most likely by the old "
                "robustbench copy inside torchattacks' wheel (torchattacks installed after robustbench). "
                f"Reinstall robustbench after torchattacks: {_INSTALL_HINT}"
            )
    return folder


# --------------------------------------------------------------------------------------------
# The old AutoAttack API over pyautoattack
# --------------------------------------------------------------------------------------------
def _pyautoattack() -> types.ModuleType:
    try:
        import pyautoattack
    except ImportError as e:
        raise RobustBenchInstallError(f"RobustBench's benchmark needs the original AutoAttack: {_INSTALL_HINT}") from e
    return pyautoattack


def _make_adapter() -> type:
    base = _pyautoattack().AutoAttack

    class AutoAttack(base):  # type: ignore[misc, valid-type]
        """pyautoattack's AutoAttack with the old ``autoattack`` API that RobustBench 1.1.1 calls.

        Args:
            model: maps (N, C, H, W) images in [0, 1] to (N, K) logits; in eval mode.
            norm: ``"Linf"``, ``"L2"`` or ``"L1"``.
            eps: radius of the threat model, in [0, 1] pixel units for Linf.
            seed: seed of every attack. None (the old default) means ``AutoAttack.default_seed``,
                set by :func:`enable` (0 unless asked otherwise; None there means the current
                time, as upstream).
            verbose: report progress (pyautoattack's debug messages).
            attacks_to_run: the attacks for ``version="custom"`` (``"apgd-ce"``, ``"apgd-t"``,
                ``"fab-t"``, ``"square"``, ``"apgd-dlr"``, ``"fab"``).
            version: ``"standard"`` (RobustBench), ``"plus"``, ``"rand"`` or ``"custom"``.
            is_tf_model: must be False (pyautoattack 0.2.0 attacks PyTorch models only).
            device: where the attacks run; None (default) means the model's device (the old
                default was ``"cuda"``).
            log_path: also append every message to this file, as the old API did.

        Messages go to stdout (the old API printed them) and, with ``log_path``, to that file;
        the ``auto-attack`` logger does not propagate them to the root logger meanwhile.
        Attributes set after construction (``adversary.apgd.n_restarts = 1``,
        ``adversary.attacks_to_run = [...]``) work as in both APIs.
        """

        #: Seed used when none is passed (RobustBench's benchmark passes none); see :func:`enable`.
        default_seed: int | None = 0

        def __init__(self, model: nn.Module, norm: str = "Linf", eps: float = 0.3, seed: int | None = None,
                     verbose: bool = True, attacks_to_run: Sequence[str] = (), version: str = "standard",
                     is_tf_model: bool = False, device: torch.device | str | None = None,
                     log_path: str | os.PathLike | None = None):
            if is_tf_model:
                raise ConfigError("is_tf_model=True is not supported: pyautoattack 0.2.0 attacks PyTorch models only")
            if device is None:
                device = next((p.device for p in model.parameters()), torch.device("cpu"))
            self.log_path = None if log_path is None else Path(log_path)
            with self._messages(verbose):
                super().__init__(model, attacks=list(attacks_to_run) or None, device=device, eps=eps, norm=norm,
                                 seed=self.default_seed if seed is None else seed, version=version)
            self.verbose = verbose

        @contextlib.contextmanager
        def _messages(self, verbose: bool = True) -> Iterator[None]:
            """Route the ``auto-attack`` logger to stdout and ``log_path`` for one call, as the old Logger did."""
            aa_logger = logging.getLogger("auto-attack")
            handlers: list[logging.Handler] = [logging.StreamHandler(sys.stdout)]
            if getattr(self, "log_path", None) is not None:
                handlers.append(logging.FileHandler(self.log_path, mode="a", encoding="utf-8"))
            for h in handlers:
                h.setFormatter(logging.Formatter("%(message)s"))
                aa_logger.addHandler(h)
            old_level, old_propagate = aa_logger.level, aa_logger.propagate
            aa_logger.setLevel(logging.DEBUG if verbose else logging.WARNING)
            aa_logger.propagate = False
            try:
                yield
            finally:
                aa_logger.setLevel(old_level)
                aa_logger.propagate = old_propagate
                for h in handlers:
                    aa_logger.removeHandler(h)
                    h.close()

        def run_standard_evaluation(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250,
                                    return_labels: bool = False, state_path: str | os.PathLike | None = None,
                                    *, batch_size: int | None = None):
            """Run the attacks one after the other, each on the points still robust.

            Args:
                x_orig: (N, C, H, W) images in [0, 1]; y_orig: (N,) labels.
                bs: batch size (old name); ``batch_size`` (new name) wins when given.
                return_labels: also return the predicted labels on the adversarial images.
                state_path: JSON file to resume an interrupted run (pyautoattack's format).

            Returns:
                ``x_adv`` (N, C, H, W), or ``(x_adv, y_adv)`` with ``return_labels=True``.
            """
            path = None if state_path is None else Path(state_path)
            if path is not None and path.exists() and _pyautoattack().__version__ == "0.2.0":
                raise ConfigError(
                    f"{path} exists, and pyautoattack 0.2.0 cannot resume from a state file (it writes the attack set "
                    "as a str, compares what it reads back with a set, and leaves y_adv undefined on a restored run); "
                    "remove the file to start over, or use robin eval --state for a resumable evaluation")
            with self._messages(self.verbose):
                x_adv, y_adv = super().run_standard_evaluation(x_orig, y_orig, batch_size=batch_size or bs,
                                                               state_path=path)
            return (x_adv, y_adv) if return_labels else x_adv

        def run_standard_evaluation_individual(self, x_orig: torch.Tensor, y_orig: torch.Tensor, bs: int = 250,
                                               return_labels: bool = False, *, batch_size: int | None = None):
            """Run each attack alone on all points: ``{attack: x_adv}`` (``(x_adv, y_adv)`` with ``return_labels``)."""
            attacks, out = list(self.attacks_to_run), {}
            try:
                for name in attacks:
                    self.attacks_to_run = [name]
                    out[name] = self.run_standard_evaluation(x_orig, y_orig, batch_size=batch_size or bs,
                                                             return_labels=return_labels)
            finally:
                self.attacks_to_run = attacks
            return out

    AutoAttack.__module__ = "autoattack"
    AutoAttack.__qualname__ = "AutoAttack"
    return AutoAttack


_ADAPTER: type | None = None


def _adapter() -> type:
    global _ADAPTER
    if _ADAPTER is None:
        _ADAPTER = _make_adapter()
    return _ADAPTER


def __getattr__(name: str) -> Any:
    # ``robustbench_compat.AutoAttack`` is built on first use: pyautoattack stays an optional import
    if name == "AutoAttack":
        return _adapter()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _install_autoattack_alias() -> bool:
    """Make ``import autoattack`` / ``autoattack.state`` ... resolve to pyautoattack (with the adapter).

    Returns:
        True when ``autoattack`` is (now) this alias; False when a real ``autoattack`` is installed.
    """
    existing = sys.modules.get("autoattack")
    if existing is not None and getattr(existing, _ALIAS_MARK, False):
        return True
    if existing is not None or importlib.util.find_spec("autoattack") is not None:
        logger.info("a real 'autoattack' package is installed; RobustBench will use it")
        return False
    pyaa = _pyautoattack()
    alias = types.ModuleType("autoattack", "pyautoattack under the old module name, with the old AutoAttack API "
                                           "(robin_plugin.eval.robustbench_compat)")
    alias.__path__ = []  # a package: submodules come from sys.modules only
    alias.__version__ = getattr(pyaa, "__version__", "unknown")
    setattr(alias, _ALIAS_MARK, True)
    alias.AutoAttack = _adapter()
    for name in _AUTOATTACK_SUBMODULES:
        module = importlib.import_module(f"pyautoattack.{name}")
        sys.modules[f"autoattack.{name}"] = module
        setattr(alias, name, module)
    sys.modules["autoattack.autoattack"] = alias  # ``from autoattack.autoattack import AutoAttack``
    sys.modules["autoattack"] = alias
    return True


# --------------------------------------------------------------------------------------------
# Offline CIFAR loading
# --------------------------------------------------------------------------------------------
def load_cifar(dataset: str, n_examples: int | None, data_dir: str | os.PathLike,
               transforms_test: Callable | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first ``n_examples`` CIFAR test points from a local folder, as RobustBench's loaders return them.

    Reads ``<data_dir>/cifar-10-batches-py/{test_batch, batches.meta}`` or
    ``<data_dir>/cifar-100-python/{test, meta}`` (the extracted python versions) with
    :func:`robin_plugin.data.get_dataset`: a restricted unpickler, no checksum requirement,
    never a download.

    Args:
        dataset: ``"cifar10"`` or ``"cifar100"``.
        n_examples: points to return (None or more than the file holds: all).
        data_dir: the folder above (or the batches folder itself).
        transforms_test: applied to each image as a PIL image, as torchvision's CIFAR datasets
            do (RobustBench passes ``ToTensor()``); None gives the same result as ``ToTensor()``.

    Returns:
        ``(x, y)``: (n, 3, 32, 32) float32 in [0, 1] and (n,) int64.

    Raises:
        robin_plugin.data.DatasetError: the folder or a file is missing or corrupt.
    """
    if n_examples is not None and (not is_int(n_examples) or n_examples < 1):
        raise ConfigError(f"n_examples must be an integer >= 1 or None, got {n_examples!r}")
    data = get_dataset(dataset, data_dir, split="test")
    n = len(data) if n_examples is None else min(n_examples, len(data))
    images, labels = data.images[:n], data.labels[:n].clone()  # (n, 3, 32, 32) uint8, (n,) int64
    if transforms_test is None:
        return images.float().div(255.0), labels
    from PIL import Image

    x = torch.stack([transforms_test(Image.fromarray(img.permute(1, 2, 0).numpy())) for img in images])
    return x, labels


class _StateFlags:
    """What ``robustbench.eval.benchmark`` reads back from an AutoAttack state file: the robust flags.

    Upstream takes ``EvaluationState.from_disk(path).robust_flags.mean()``, and torch refuses the
    mean of a bool tensor; here the flags (N,) come as float32.
    """

    def __init__(self, robust_flags: torch.Tensor | None):
        self.robust_flags = robust_flags

    @classmethod
    def from_disk(cls, path: str | os.PathLike) -> _StateFlags:
        state = importlib.import_module("pyautoattack.state").EvaluationState.from_disk(Path(path))
        return cls(None if state.robust_flags is None else state.robust_flags.float())


def _patch_benchmark(robustbench: types.ModuleType) -> None:
    """Fix two crashes of ``benchmark``: a ``str`` device and the ``aa_state_path`` branch.

    Upstream raises NotImplementedError for every ``str`` device (a ``str`` is a Sequence, taken
    for a list of devices); ``aa_state_path`` must be a ``Path`` (``.exists()`` / ``.open()`` are
    called on it) and its read-back took the mean of bool flags.
    """
    rb_eval = importlib.import_module("robustbench.eval")
    upstream = rb_eval.benchmark
    if getattr(upstream, _ALIAS_MARK, False):
        return
    signature = inspect.signature(upstream)

    @functools.wraps(upstream)
    def benchmark(*args: Any, **kwargs: Any) -> tuple[float, float]:
        bound = signature.bind(*args, **kwargs)
        if isinstance(bound.arguments.get("device"), str):
            bound.arguments["device"] = torch.device(bound.arguments["device"])
        if isinstance(bound.arguments.get("aa_state_path"), (str, os.PathLike)):
            bound.arguments["aa_state_path"] = Path(bound.arguments["aa_state_path"])
        return upstream(*bound.args, **bound.kwargs)

    setattr(benchmark, _ALIAS_MARK, True)
    rb_eval.EvaluationState = _StateFlags  # only benchmark's read-back; pyautoattack keeps its own class
    rb_eval.benchmark = benchmark
    robustbench.benchmark = benchmark


def _patch_robustbench_data(robustbench: types.ModuleType) -> None:
    rb_data = importlib.import_module("robustbench.data")
    if getattr(rb_data.load_cifar10, _ALIAS_MARK, False):
        return
    default = rb_data.PREPROCESSINGS[None]

    def make(dataset: str, upstream: Callable) -> Callable:
        def loader(n_examples: int | None = None, data_dir: str = "./data",
                   transforms_test: Callable = default) -> tuple[torch.Tensor, torch.Tensor]:
            return load_cifar(dataset, n_examples, data_dir, transforms_test)

        loader.__name__ = upstream.__name__
        loader.__qualname__ = upstream.__qualname__
        loader.__doc__ = (f"RobustBench's {upstream.__name__}, reading the local test split with "
                          f"robin_plugin.eval.robustbench_compat.load_cifar (never downloads).")
        loader.__wrapped__ = upstream  # torchvision's CIFAR10(download=True): downloads unless all checksums match
        setattr(loader, _ALIAS_MARK, True)
        return loader

    enums = importlib.import_module("robustbench.model_zoo.enums")
    for name, dataset, key in (("load_cifar10", "cifar10", enums.BenchmarkDataset.cifar_10),
                               ("load_cifar100", "cifar100", enums.BenchmarkDataset.cifar_100)):
        patched = make(dataset, getattr(rb_data, name))
        setattr(rb_data, name, patched)
        rb_data._clean_dataset_loaders[key] = patched  # what eval.benchmark's load_clean_dataset calls
        if hasattr(robustbench, name):
            setattr(robustbench, name, patched)


# --------------------------------------------------------------------------------------------
# enable()
# --------------------------------------------------------------------------------------------
def _resource_filename(package: str, resource: str) -> str:
    """``pkg_resources.resource_filename`` for an installed, unzipped package or module."""
    module = importlib.import_module(package)
    base = Path(module.__file__).parent
    return str(base / resource)


@contextlib.contextmanager
def _pkg_resources_stand_in() -> Iterator[None]:
    """A ``pkg_resources`` with ``resource_filename`` only, in ``sys.modules`` while RobustBench is imported."""
    if "pkg_resources" in sys.modules or importlib.util.find_spec("pkg_resources") is not None:
        yield
        return
    stand_in = types.ModuleType("pkg_resources", "stand-in for setuptools<82's pkg_resources "
                                                 "(robin_plugin.eval.robustbench_compat)")
    stand_in.resource_filename = _resource_filename
    sys.modules["pkg_resources"] = stand_in
    try:
        yield
    finally:
        if sys.modules.get("pkg_resources") is stand_in:
            del sys.modules["pkg_resources"]


def enable(*, seed: int | None = 0) -> types.ModuleType:
    """Make ``import robustbench`` (1.1.1) work with this environment, offline. Idempotent.

    Args:
        seed: seed of the AutoAttack runs when the caller passes none (RobustBench's
            ``benchmark`` never does); None seeds with the current time, as upstream.

    While RobustBench is imported, timm's FutureWarnings about the deprecated module paths its
    architectures use (``timm.models.layers`` ...) are silenced; nothing else is.

    Returns:
        The imported ``robustbench`` package.

    Raises:
        RobustBenchInstallError: robustbench 1.1.1 is missing or overwritten (see
            :func:`check_install`), or a package it imports is missing.
    """
    if seed is not None and (not is_int(seed) or not 0 <= seed < 2**63):
        raise ConfigError(f"seed must be an integer in [0, 2**63 - 1] or None, got {seed!r}")
    check_install()
    if _install_autoattack_alias():
        _adapter().default_seed = seed
    with _pkg_resources_stand_in(), warnings.catch_warnings():
        # robustbench's architectures import timm's deprecated module paths (timm.models.layers ...)
        warnings.filterwarnings("ignore", message=r"Importing from timm\.", category=FutureWarning)
        try:
            robustbench = importlib.import_module("robustbench")
            importlib.import_module("robustbench.eval")
        except ModuleNotFoundError as e:
            raise RobustBenchInstallError(
                f"robustbench {ROBUSTBENCH_VERSION} needs {e.name!r} at import time: {_INSTALL_HINT}"
            ) from e
    _patch_robustbench_data(robustbench)
    _patch_benchmark(robustbench)
    return robustbench
