"""docs/gpu_recipe.md: it names only real presets, and its torchrun command starts (on the CPU, tiny budget).

Every preset's own smoke run is tests/training/test_paper_presets.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robin_plugin.testing import random_images, write_cifar10, write_cifar100, write_imagefolder
from robin_plugin.training import PRESETS


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_cifar10(root, *random_images(40, 10, seed=0), *random_images(8, 10, seed=1))
    write_cifar100(root, *random_images(20, 100, seed=2), *random_images(20, 100, seed=3))
    write_imagefolder(root / "imagenet100", ["n01440764", "n01443537"], per_class={"train": 4, "val": 2}, size=(20, 16))
    return root


def test_the_recipe_page_names_only_real_presets():
    text = (Path(__file__).parents[2] / "docs" / "gpu_recipe.md").read_text()
    named = {w.strip("`") for w in text.replace("--preset ", "--preset=").split() if w.startswith("--preset=")}
    named = {n.split("=", 1)[1].strip("`,") for n in named}
    assert named and named <= set(PRESETS), named - set(PRESETS)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("torchrun", path=str(Path(sys.executable).parent)) is None, reason="torchrun not installed")
def test_torchrun_command_starts(data_root, tmp_path):
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "robin_plugin.cli", "train", "--preset", "cifar10-resnet18-fast",
           f"data_root={data_root}", f"out_dir={tmp_path}", "device=cpu", "model_kwargs={width: 4}", "epochs=1",
           "batch_size=8", "test_n=4", "val_pgd_steps=1", "test_pgd_steps=1", "val_fraction=0.1", "progress=false"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "clean accuracy" in proc.stdout
    assert json.loads((tmp_path / "results.json").read_text())["epochs"] == 1
