"""docs/gpu_recipe.md: it names only real presets, and its torchrun command starts (on the CPU, tiny budget).

Every preset's own smoke run is tests/test_paper_presets.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from robin_plugin.training import PRESETS

from test_data import write_cifar, write_png



@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_cifar(root, "cifar10", n=8)
    write_cifar(root, "cifar100", n=20)
    for split in ("train", "val"):
        for i, wnid in enumerate(("n01440764", "n01443537")):
            for j in range(4 if split == "train" else 2):
                write_png(root / "imagenet100" / split / wnid / f"{j}.png", size=(20, 16), color=(40 * i, 90, 30 * j))
    return root


def test_the_recipe_page_names_only_real_presets():
    text = (Path(__file__).parents[1] / "docs" / "gpu_recipe.md").read_text()
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
