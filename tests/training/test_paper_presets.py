"""Every paper preset runs end to end through ``robin train`` on small files in the real formats.

One smoke run per preset in ``PRESETS`` that is not an ``fmnist-*`` CPU preset (the list is read
from ``PRESETS`` when the tests are collected, so a new preset is tested the day it is added):
the real CLI entry, the real loaders on CIFAR-10 / CIFAR-100 pickle batches and an ImageNet-style
folder of JPEGs written by :mod:`robin_plugin.testing`, a width-4 model, one epoch of a couple of
optimizer steps, one-step attacks. Each run must finish, write its files, and build a model whose
input size and number of classes match the data it is fed (checked on every forward call of the
model, training attacks and evaluation included).

channels_last stays off: width-4 models with channels_last crash the CPU backward in torch 2.14.1
(see ECOSYSTEM.md).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch

from robin_plugin.cli import main
from robin_plugin.errors import UnknownNameError
from robin_plugin.models.spec import check_model_args
from robin_plugin.testing import random_images, write_cifar10, write_cifar100, write_imagefolder
from robin_plugin.training import PRESETS
from robin_plugin.training.config import TrainConfig

PAPER_PRESETS = sorted(name for name in PRESETS if not name.startswith("fmnist-"))

# what the data written below holds, per dataset: (classes, image side the model must be built for)
EXPECTED = {"cifar10": (10, 32), "cifar100": (100, 32), "imagenet100": (100, 224)}
IMAGENET_WNIDS = [f"n{1440764 + 7 * i:08d}" for i in range(100)]
RUN_FILES = ("config.json", "metrics.csv", "checkpoint.safetensors", "model.safetensors", "model_best.safetensors",
             "results.json")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """CIFAR-10 and CIFAR-100 python batches, and a 100-class ImageNet-style JPEG tree (1 train + 1 val image a class)."""
    root = tmp_path_factory.mktemp("paper_data")
    x, y = random_images(40, 10, seed=0)
    xt, yt = random_images(10, 10, seed=1)
    write_cifar10(root, x, y, xt, yt)
    x, y = random_images(40, 100, seed=2)
    xt, yt = random_images(10, 100, seed=3)
    write_cifar100(root, x, y, xt, yt)
    write_imagefolder(root / "imagenet100", IMAGENET_WNIDS, per_class={"train": 1, "val": 1}, size=(80, 64),
                      class_list="imagenet100.txt")
    return root


def test_paper_presets_are_collected():
    assert PAPER_PRESETS, "no paper preset in PRESETS"
    datasets = {PRESETS[name]["dataset"] for name in PAPER_PRESETS}
    assert datasets <= set(EXPECTED), f"a paper preset uses a dataset this test writes no files for: {datasets - set(EXPECTED)}"


def _overrides(preset: str, data_root: Path, out_dir: Path) -> list[str]:
    cfg = PRESETS[preset]
    dataset = cfg["dataset"]
    over = {
        "data_root": str(data_root / "imagenet100" if dataset == "imagenet100" else data_root),
        "out_dir": str(out_dir), "device": "cpu", "progress": False, "channels_last": False, "amp": False,
        "epochs": 1, "train_subset": 10, "val_fraction": 0.2, "batch_size": 4,  # 8 training images: 2 steps
        "test_n": 2, "attack_steps": 1, "val_pgd_steps": 1, "test_pgd_steps": 1, "co_guard_n": 2,
    }
    try:
        check_model_args(cfg["model"], {"width": 4})
        over["model_kwargs"] = {"width": 4}
    except UnknownNameError:
        pass  # a model without a width argument runs at its own size
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if dataset == "imagenet100" and "class_list" in fields:  # the class list, once the config can name one
        over["class_list"] = str(data_root / "imagenet100" / "imagenet100.txt")
    return [f"{k}={json.dumps(v)}" for k, v in over.items()]


@pytest.mark.parametrize("preset", PAPER_PRESETS)
def test_paper_preset_smoke_run(preset, data_root, tmp_path, capsys):
    dataset = PRESETS[preset]["dataset"]
    num_classes, side = EXPECTED[dataset]
    out_dir = tmp_path / "run"
    seen: list[tuple[tuple, tuple, tuple, int]] = []  # (input shape, output shape, cfg input_size, num_classes)

    def record(module, args, output):  # every forward call of a timm model (robin's have a pretrained_cfg)
        cfg = getattr(module, "pretrained_cfg", None)
        if isinstance(cfg, dict) and hasattr(module, "num_classes") and args and torch.is_tensor(args[0]):
            seen.append((tuple(args[0].shape), tuple(output.shape), tuple(cfg.get("input_size", ())), module.num_classes))
            if not models or models[-1] is not module:
                models.append(module)

    models: list[torch.nn.Module] = []
    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        rc = main(["train", "--preset", preset, *_overrides(preset, data_root, out_dir)])
    finally:
        handle.remove()
    out = capsys.readouterr()
    assert rc == 0, f"robin train --preset {preset} failed:\n{out.err[-3000:]}"

    missing = [f for f in RUN_FILES if not (out_dir / f).is_file()]
    assert not missing, f"{preset}: the run wrote no {', '.join(missing)}"
    result = json.loads((out_dir / "results.json").read_text())
    assert result["dataset"] == dataset and result["epochs"] == 1
    assert result["test"]["n"] == 2

    assert seen, f"{preset}: no forward call of a timm model was seen"
    problems = set()  # every mis-sizing at once, so one failing run says all that is wrong
    for x_shape, y_shape, input_size, model_classes in seen:
        if x_shape[1:] != (3, side, side):
            problems.add(f"the model is fed {x_shape[1:]} images, expected (3, {side}, {side}) for {dataset}")
        if input_size != x_shape[1:]:
            problems.add(f"the model is built for input {input_size} (pretrained_cfg) but fed {x_shape[1:]}")
        if model_classes != num_classes or y_shape != (x_shape[0], num_classes):
            problems.add(f"the model has {model_classes} classes (logits {y_shape}); the {dataset} files hold {num_classes}")
    if dataset == "imagenet100":  # the official ImageNet ResNet (code/arch/resnet.py): 7x7 stride-2 stem
        model = models[-1]
        stem = model.get_submodule(model.pretrained_cfg["first_conv"])
        if tuple(stem.kernel_size) != (7, 7) or tuple(stem.stride) != (2, 2):
            problems.add(f"stem {model.pretrained_cfg['first_conv']} has kernel {tuple(stem.kernel_size)} and stride "
                         f"{tuple(stem.stride)}, expected the 7x7 stride-2 ImageNet stem")
    assert not problems, f"{preset} ({PRESETS[preset]['model']}): " + "; ".join(sorted(problems))
