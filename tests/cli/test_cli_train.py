"""``robin train`` end to end on the real Fashion-MNIST files (a tiny budget)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

import robin_plugin
from robin_plugin.cli import main

FMNIST = Path("/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz")


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_robin_train_runs_end_to_end_and_resumes(tmp_path, capsys):
    args = ["train", "--preset", "fmnist-fast", "train_subset=160", "epochs=1", "batch_size=32", "test_n=32",
            "model_kwargs={width: 4}", "val_pgd_steps=1", "test_pgd_steps=2", "progress=false", f"out_dir={tmp_path}"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "clean accuracy" in out and "PGD2 accuracy" in out and "keep ratio 0.05" in out
    result = json.loads((tmp_path / "results.json").read_text())
    assert result["test"]["n"] == 32 and 0 <= result["test"]["pgd2_acc"] <= result["test"]["clean_acc"] + 0.2
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["eps"] == 0.1 and config["attack"] == "ffgsm" and config["model_kwargs"] == {"width": 4}
    # a finished run resumes to the same result without training again
    assert main(args + ["--resume"]) == 0
    assert json.loads((tmp_path / "results.json").read_text())["test"] == result["test"]


def test_robin_train_rejects_unknown_keys_with_a_suggestion(capsys):
    assert main(["train", "epoch=3"]) == 2
    assert "did you mean 'epochs'" in capsys.readouterr().err
    assert main(["train", "--preset", "fmnist-fats"]) == 2
    assert "did you mean 'fmnist-fast'" in capsys.readouterr().err


def test_list_presets(capsys):
    assert main(["train", "--list-presets"]) == 0
    out = capsys.readouterr().out
    assert "fmnist-fast" in out and "cifar10-resnet34-pgd" in out


@pytest.mark.skipif(not FMNIST.exists(), reason="Debian's dataset-fashion-mnist is not installed")
def test_load_run_rebuilds_the_trained_model(tmp_path):
    import torch
    from safetensors.torch import load_file

    from robin_plugin.training import CheckpointError, load_run

    args = ["train", "train_subset=96", "epochs=1", "batch_size=32", "test_n=0", "model_kwargs={width: 4}",
            "val_pgd_steps=1", "progress=false", f"out_dir={tmp_path}"]
    assert main(args) == 0
    model, config = load_run(tmp_path, "last")
    state = load_file(str(tmp_path / "model.safetensors"))
    assert all(torch.equal(model.state_dict()[k], v) for k, v in state.items())
    assert config.keep_ratio == 0.05 and model.in_chans == 1 and not model.training
    with pytest.raises(CheckpointError, match="not a finished robin run"):
        load_run(tmp_path / "nothing")

    # one route from a run to anything: robin export --run, and the hub folder timm loads
    import timm

    hub = tmp_path / "hub"
    assert main(["export", "--run", str(tmp_path), "--which", "last", "--format", "hub", "--out", str(hub)]) == 0
    loaded = timm.create_model(f"local-dir:{hub}", pretrained=True).eval()
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))
    card = (hub / "README.md").read_text()
    assert "Training recipe" in card and "`keep_ratio` | `0.05`" in card and "clean_acc" not in card  # test_n=0
    compact = tmp_path / "m.safetensors"
    assert main(["export", "--run", str(tmp_path), "--which", "last", "--out", str(compact)]) == 0
    with torch.no_grad():
        assert torch.equal(robin_plugin.load_compact(compact)(x), model(x))
    assert main(["inspect", "--run", str(tmp_path), "--no-plots"]) == 0


def test_resume_needs_a_checkpoint_unless_resume_or_start(tmp_path, capsys):
    args = ["train", "train_subset=64", "epochs=1", "batch_size=32", "test_n=0", "model_kwargs={width: 4}",
            "val_pgd_steps=1", "progress=false", f"out_dir={tmp_path / 'empty'}"]
    assert main(args + ["--resume"]) == 2
    err = capsys.readouterr().err
    assert "nothing to resume" in err and "--resume-or-start" in err
    assert not (tmp_path / "empty").exists()
    assert main(args + ["--resume-or-start"]) == 0  # nothing to resume: starts
    assert (tmp_path / "empty" / "results.json").is_file()


def test_missing_cifar_folder_names_the_option_to_use(capsys):
    assert main(["train", "--preset", "cifar10-resnet18-fast", "epochs=1"]) == 2
    assert "data_root=<folder>" in capsys.readouterr().err
