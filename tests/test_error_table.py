"""The error table in docs/errors.md is checked against the code, row by row.

Each row of the table names a boundary (first column, in backticks), the exception class, the
place it is raised, a key phrase and an example message. For every row a trigger below runs
real code with a bad input; the test checks the exception class and that the message contains
the key phrase, and that the documented example contains it too. A row without a trigger, or a
trigger without a row, fails the test: the table cannot drift from the code.
"""
from __future__ import annotations

import errno
import gzip
import json
import os
import pickle
import re
from pathlib import Path
from typing import Callable

import pytest
import safetensors.torch
import timm
import torch

import robin_plugin
import robin_plugin.eval
import robin_plugin.export
import robin_plugin.export.dense
import robin_plugin.loading
from robin_plugin.data import ImageDataset, get_dataset, load_fashion_mnist
from robin_plugin.io import FolderLock, atomic_write, save_safetensors
from robin_plugin.training import (
    AdversarialTraining, TrainConfig, Trainer, apply_overrides, get_preset, load_checkpoint, load_run, save_checkpoint,
)
from robin_plugin.training.config import load_config_file

DOC = Path(__file__).resolve().parent.parent / "docs" / "errors.md"


def parse_table(text: str) -> dict[str, dict[str, str]]:
    """Rows of the first table with a ``Boundary`` header: ``{id: {column: cell}}``."""
    lines = [ln.strip() for ln in text.splitlines()]
    start = next(i for i, ln in enumerate(lines) if ln.startswith("| Boundary"))
    header = [c.strip() for c in lines[start].strip("|").split("|")]
    rows = {}
    for ln in lines[start + 2:]:
        if not ln.startswith("|"):
            break
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", ln.strip("|"))]
        row = dict(zip(header, cells))
        key = re.match(r"`([^`]+)`", row["Boundary"])
        assert key, f"row without a `boundary id`: {ln}"
        rows[key.group(1)] = row
    return rows


def _phrase(cell: str) -> str:
    m = re.fullmatch(r"`(.+)`", cell.strip())
    assert m, f"key phrase must be in backticks: {cell!r}"
    return m.group(1).replace("\\|", "|")


# --- tiny fixtures ---------------------------------------------------------------------------
def _strict_model():
    """A model with check_inputs=True: the check the boundaries (evaluate, CLI) run, as a debugging aid in forward."""
    return timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.1, check_inputs=True)


def _model(**kw):
    return timm.create_model("robin_resnet18", **{**dict(num_classes=2, in_chans=1, width=4, keep_ratio=0.2,
                                                         mean=(0.5,), std=(0.25,)), **kw})


def _toy(n: int = 16, classes: int = 2) -> ImageDataset:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(n, 1, 8, 8, generator=g) * 255).to(torch.uint8)
    y = torch.arange(n) % classes
    return ImageDataset(x, y, [f"c{i}" for i in range(classes)], "toy")


def _cfg(**kw) -> TrainConfig:
    return TrainConfig(**{**dict(keep_ratio=0.2, epochs=1, batch_size=8, attack="ffgsm", eps=0.1, step_size=0.1,
                                 val_pgd_steps=1, progress=False), **kw})


def _trained_run(tmp: Path) -> Path:
    Trainer(_model(), _cfg(), _toy(), None, out_dir=tmp / "run").fit()
    return tmp / "run"


def _compact(tmp: Path) -> Path:
    from robin_plugin.export import export_compact

    path = tmp / "m.safetensors"
    export_compact(_model(), path)
    return path


def _write(tmp: Path, name: str, data: bytes | str) -> Path:
    p = tmp / name
    p.write_bytes(data.encode() if isinstance(data, str) else data)
    return p


def _eval(x, y, **kw):
    from robin_plugin.eval import evaluate

    return evaluate(_model().eval(), x, y, kw.pop("eps", 0.1), attacks=kw.pop("attacks", ("apgd-ce",)),
                    run_checks=False, progress=False, **kw)


def _eval_checkpoint(model, path):
    from robin_plugin.loading import load_state_file

    load_state_file(model, path)


def _fail_write(tmp: Path) -> None:
    (tmp / "c.safetensors").write_bytes(b"old")

    def write(t):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), t)

    atomic_write(tmp / "c.safetensors", write)


def _resume_edited(tmp: Path, edit: Callable[[dict, dict], None]) -> None:
    """Resume a finished run from its checkpoint after ``edit(model_state, state)`` changed it."""
    run = _trained_run(tmp)
    model_state, state = load_checkpoint(run / "checkpoint.safetensors")
    edit(model_state, state)
    save_checkpoint(run / "checkpoint.safetensors", model_state, state)
    Trainer(_model(), _cfg(epochs=2), _toy(), None, out_dir=run).fit(resume=True)


def _scale_weights(model_state: dict, state: dict) -> None:
    model_state["layer1.0.conv1.weight"] = model_state["layer1.0.conv1.weight"] * 1000


def _fake_run(tmp: Path, config: bytes) -> Path:
    (tmp / "run").mkdir()
    _write(tmp, "run/config.json", config)
    _write(tmp, "run/model.safetensors", b"")
    return tmp / "run"


def _safetensors_disk_full(tmp: Path) -> None:
    from unittest import mock

    from safetensors import SafetensorError

    def save_file(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, '
                              'message: "No space left on device" })')

    with mock.patch.object(safetensors.torch, "save_file", save_file):
        save_safetensors({"w": torch.zeros(2)}, tmp / "m.safetensors")


def _locked(tmp: Path) -> None:
    with FolderLock(tmp / "run"):
        Trainer(_model(), _cfg(), _toy(), None, out_dir=tmp / "run").fit()


class _IntImages:
    images, labels = torch.zeros(16, 1, 8, 8, dtype=torch.int32), torch.zeros(16, dtype=torch.long)

    def __len__(self) -> int:
        return 16


def _fmnist_folder(tmp: Path, images: bytes | None, labels: bytes | None) -> Path:
    folder = tmp / "fmnist"
    folder.mkdir()
    if images is not None:
        (folder / "train-images-idx3-ubyte.gz").write_bytes(images)
    if labels is not None:
        (folder / "train-labels-idx1-ubyte.gz").write_bytes(labels)
    return folder


def _lock_symlink(tmp: Path) -> None:
    (tmp / "run").mkdir()
    (tmp / "run" / ".robin.lock").symlink_to(tmp / "elsewhere")
    FolderLock(tmp / "run").acquire()


def _dense_with(tmp: Path, kwargs: str = '{"num_classes": 2, "in_chans": 1, "width": 4, "mean": [0.5], "std": [0.25]}',
                nan: bool = False) -> Path:
    from robin_plugin.formats.dense import DENSE_FORMAT

    model = _model()
    sd = {k: v.clone().contiguous() for k, v in robin_plugin.export.dense_state_dict(model).items()}
    if nan:
        sd["conv1.weight"][0, 0, 0, 0] = float("nan")
    path = tmp / "d.safetensors"
    safetensors.torch.save_file(sd, str(path), metadata={"format": DENSE_FORMAT, "model": "robin_resnet18_dense",
                                                         "kwargs": kwargs, "shrunk": "false"})
    return path


def _huge_compact_header(tmp: Path) -> None:
    path = tmp / "h.safetensors"
    size = 64 * 2**20
    raw = json.dumps({"robin.header": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]},
                      "__metadata__": {"format": "robin_compact", "version": "1"}}).encode()
    with open(path, "wb") as f:  # sparse: nothing but the header is ever read
        f.write(len(raw).to_bytes(8, "little") + raw)
        f.truncate(8 + len(raw) + size)
    robin_plugin.export.load_compact(path)


def _taken_out_dir(tmp: Path) -> None:
    from robin_plugin.cli.train import _check_fresh_out_dir

    (tmp / "run").mkdir()
    (tmp / "run" / "results.json").write_text("{}")
    _check_fresh_out_dir(tmp / "run", overwrite=False)


X = torch.rand(2, 1, 8, 8)

TRIGGERS: dict[str, Callable[[Path], object]] = {
    "keep_ratio": lambda t: _model(keep_ratio=0.0),
    "p": lambda t: _model(p=1.5),
    "score_init_scale": lambda t: _model(score_init_scale=0.0),
    "eps-training": lambda t: AdversarialTraining("pgd", eps=8, step_size=0.01, steps=10),
    "step_size": lambda t: AdversarialTraining("pgd", eps=0.1, step_size=0.0, steps=10),
    "eps-eval": lambda t: _eval(X, torch.zeros(2, dtype=torch.long), eps=8),
    "config-eps": lambda t: apply_overrides({}, {"eps": 8}),
    "model-name": lambda t: apply_overrides(get_preset("fmnist-fast"), {"model": "robin_resnet81"}),
    "init-name": lambda t: _model(init="kaiming"),
    "preset-name": lambda t: get_preset("fmnist-fats"),
    "config-key": lambda t: apply_overrides({}, {"epoch": 3}),
    "config-type": lambda t: apply_overrides({}, {"lr": "fast"}),
    "dataset-name": lambda t: get_dataset("cifar11", t),
    "attack-name-training": lambda t: apply_overrides({}, {"attack": "pgdd"}),
    "attack-name-eval": lambda t: _eval(X, torch.zeros(2, dtype=torch.long), attacks=("apgd-cee",)),
    "image-shape": lambda t: _strict_model()(torch.rand(2, 8, 8)),
    "image-channels": lambda t: _strict_model()(torch.rand(2, 3, 8, 8)),
    "image-dtype": lambda t: _strict_model()(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)),
    "image-nan": lambda t: _strict_model()(torch.full((2, 1, 8, 8), float("nan"))),
    "image-range": lambda t: _strict_model()(torch.rand(2, 1, 8, 8) * 3),
    "labels-dataset": lambda t: ImageDataset(torch.zeros(2, 1, 8, 8, dtype=torch.uint8), torch.tensor([0, 5]),
                                             ["a", "b"], "toy"),
    "labels-eval": lambda t: _eval(X, torch.tensor([0, 7])),
    "labels-training": lambda t: Trainer(_model(), _cfg(), _toy(classes=5), None),
    "checkpoint-architecture": lambda t: Trainer(_model(width=8), _cfg(), _toy(), None,
                                                 out_dir=_trained_run(t)).fit(resume=True),
    "checkpoint-classes": lambda t: Trainer(_model(num_classes=3), _cfg(), _toy(), None,
                                            out_dir=_trained_run(t)).fit(resume=True),
    "checkpoint-config": lambda t: Trainer(_model(), _cfg(lr=0.01), _toy(), None,
                                           out_dir=_trained_run(t)).fit(resume=True),
    "checkpoint-corrupt": lambda t: load_checkpoint(_write(t, "c.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{")),
    "checkpoint-pickle": lambda t: load_checkpoint(_write(t, "c.safetensors", pickle.dumps({"a": 1}))),
    "eval-checkpoint-mismatch": lambda t: _eval_checkpoint(
        _model(width=8), _trained_run(t) / "model.safetensors"),
    "dataset-missing": lambda t: load_fashion_mnist(t / "nowhere"),
    "dataset-incomplete": lambda t: load_fashion_mnist(_fmnist_folder(t, gzip.compress(b"x"), None)),
    "dataset-corrupt": lambda t: load_fashion_mnist(_fmnist_folder(t, b"not gzip", b"not gzip")),
    "config-file-key": lambda t: apply_overrides({}, load_config_file(_write(t, "c.yaml", "epochs: 3\nlr_shedule: step\n"))),
    "config-file-type": lambda t: apply_overrides({}, load_config_file(_write(t, "c.yaml", "epochs: three\n"))),
    "config-file-syntax": lambda t: load_config_file(_write(t, "c.yaml", "epochs: [3\n")),
    "compact-corrupt": lambda t: robin_plugin.export.load_compact(
        _write(t, "bad.safetensors", _compact(t).read_bytes()[:-100])),
    "compact-foreign": lambda t: (safetensors.torch.save_file({"w": torch.zeros(2)}, t / "f.safetensors"),
                                  robin_plugin.export.load_compact(t / "f.safetensors")),
    "compact-architecture": lambda t: robin_plugin.export.load_compact(_compact(t), model=_model(width=8)),
    "output-exists": lambda t: robin_plugin.export.export_compact(_model(), _compact(t)),
    "write-failure": _fail_write,
    "result-file": lambda t: robin_plugin.eval.load_result(_write(t, "r.json", json.dumps({"name": "x"}))),
    "config-alias": lambda t: load_config_file(_write(t, "c.yaml", "a: &x [1, 2]\nb: *x\n")),
    "config-file-size": lambda t: load_config_file(_write(t, "c.yaml", "#" * (2**20 + 1))),
    "seed": lambda t: apply_overrides({}, {"seed": 10**23}),
    "run-config": lambda t: load_run(_fake_run(t, b'{"epochs": 3, "model": "robin\xff"}'), "last"),
    "checkpoint-field": lambda t: _resume_edited(t, lambda m, s: s.update(step=-100)),
    "checkpoint-nan": lambda t: _resume_edited(t, lambda m, s: m["conv1.scores"].fill_(float("nan"))),
    "checkpoint-fixed-weights": lambda t: _resume_edited(t, _scale_weights),
    "checkpoint-hook-state": lambda t: _resume_edited(
        t, lambda m, s: next(h for h in s["hooks"] if h["type"] == "MetricLogger")["state"].update(history="x")),
    "eval-state": lambda t: _eval(X, torch.zeros(2, dtype=torch.long), state_path=_write(t, "s.json", "[" * 100000)),
    "eval-attacks-empty": lambda t: _eval(X, torch.zeros(2, dtype=torch.long), attacks=()),
    "num-classes": lambda t: Trainer(_model(num_classes=0), _cfg(), _toy(), None),
    "image-dtype-training": lambda t: Trainer(_model(), _cfg(), _IntImages(), None),
    "write-failure-safetensors": _safetensors_disk_full,
    "out-dir-locked": _locked,
    "lock-symlink": _lock_symlink,
    "file-json-nested": lambda t: robin_plugin.export.dense.load_dense(_dense_with(t, kwargs="[" * 200_000)),
    "file-declared-size": _huge_compact_header,
    "file-nonfinite": lambda t: robin_plugin.export.dense.load_dense(_dense_with(t, nan=True)),
    "model-file-foreign": lambda t: robin_plugin.loading.load_model(_write(t, "m.safetensors", b"")),
    "train-out-dir-taken": _taken_out_dir,
    "image-dtype-model": lambda t: _strict_model()(X.double()),
}


@pytest.fixture(scope="module")
def table() -> dict[str, dict[str, str]]:
    return parse_table(DOC.read_text(encoding="utf-8"))


def test_every_row_has_a_trigger_and_back(table):
    assert set(table) == set(TRIGGERS), (f"rows without trigger: {sorted(set(table) - set(TRIGGERS))}; "
                                         f"triggers without row: {sorted(set(TRIGGERS) - set(table))}")


def _exception_class(name: str) -> type:
    import robin_plugin.data
    import robin_plugin.errors
    import robin_plugin.export
    import robin_plugin.io
    import robin_plugin.training

    for mod in (robin_plugin.errors, robin_plugin.io, robin_plugin.training, robin_plugin.export, robin_plugin.data):
        if hasattr(mod, name):
            return getattr(mod, name)
    raise AssertionError(f"unknown exception class {name!r} in docs/errors.md")


@pytest.mark.parametrize("boundary", sorted(TRIGGERS))
def test_row_matches_the_code(table, boundary, tmp_path):
    row = table.get(boundary)
    if row is None:
        pytest.fail(f"docs/errors.md has no row `{boundary}`")
    cls = _exception_class(row["Exception"].strip("`"))
    phrase = _phrase(row["Key phrase"])
    assert phrase in row["Example message"].replace("\\|", "|"), "the documented example lacks its key phrase"
    with pytest.raises(robin_plugin.errors.RobinError) as err:
        TRIGGERS[boundary](tmp_path)
    assert type(err.value) is cls, f"{boundary}: raised {type(err.value).__name__}, table says {cls.__name__}"
    assert phrase in str(err.value), f"{boundary}: {phrase!r} not in {str(err.value)!r}"
