"""Tests of ``robin_plugin.loading.load_model``: one loader for every kind of model source."""
from __future__ import annotations

import pickle

import pytest
import safetensors.torch
import timm
import torch

from robin_plugin import is_masked
from robin_plugin.data import ImageDataset
from robin_plugin.errors import ConfigError, InputError
from robin_plugin.export import ExportFormatError, ModelFileError, export_compact, export_dense, export_hub
from robin_plugin.loading import load_model
from robin_plugin.training import TrainConfig, Trainer

KWARGS = dict(num_classes=2, in_chans=1, width=4, keep_ratio=0.2, mean=(0.5,), std=(0.25,))


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    torch.manual_seed(0)
    m = timm.create_model("robin_resnet18", **KWARGS)
    for p in m.parameters():  # trained-looking scores, so a fresh model would differ
        if p.requires_grad:
            p.data.normal_()
    return m.eval()


def _x() -> torch.Tensor:
    return torch.rand(2, 1, 12, 12, generator=torch.Generator().manual_seed(1))


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    with torch.no_grad():
        return torch.equal(a.eval()(_x()), b.eval()(_x()))


def test_files_and_folders_load_back(model, tmp_path) -> None:
    export_compact(model, tmp_path / "c.safetensors")
    assert _same(load_model(tmp_path / "c.safetensors"), model)
    export_dense(model, tmp_path / "d.safetensors")
    dense = load_model(tmp_path / "d.safetensors")
    assert not is_masked(dense) and torch.allclose(dense(_x()), model(_x()), atol=1e-5)
    export_hub(model, tmp_path / "hub")
    assert _same(load_model(tmp_path / "hub"), model)
    safetensors.torch.save_file(model.state_dict(), str(tmp_path / "sd.safetensors"))
    assert _same(load_model(tmp_path / "sd.safetensors", model="robin_resnet18", model_kwargs=KWARGS), model)
    assert _same(load_model(model.state_dict(), model="robin_resnet18", model_kwargs=KWARGS), model)
    fresh = load_model(model="robin_resnet18", model_kwargs=KWARGS)
    assert is_masked(fresh) and not fresh.training and not _same(fresh, model)


def test_a_run_folder_and_its_training_checkpoint(tmp_path) -> None:
    from robin_plugin.data import dataset_info
    from robin_plugin.models.spec import build_model

    g = torch.Generator().manual_seed(0)
    ds = ImageDataset((torch.rand(16, 1, 12, 12, generator=g) * 255).to(torch.uint8), torch.arange(16) % 2, ["a", "b"], "toy")
    cfg = TrainConfig(keep_ratio=0.2, epochs=1, batch_size=8, attack="ffgsm", eps=0.1, step_size=0.1, val_pgd_steps=1,
                      progress=False, model_kwargs={"width": 4})  # dataset fashion_mnist: 10 classes, 1 channel
    info = dataset_info(cfg.dataset)
    trained = build_model(cfg.model_spec(info.num_classes, info.in_chans, info.mean, info.std))
    Trainer(trained, cfg, ds, None, out_dir=tmp_path / "run").fit()
    assert _same(load_model(tmp_path / "run", which="last"), trained)
    kwargs = dict(KWARGS, num_classes=10, mean=tuple(info.mean), std=tuple(info.std))
    assert _same(load_model(tmp_path / "run" / "checkpoint.safetensors", model="robin_resnet18", model_kwargs=kwargs),
                 trained)  # a training checkpoint: its model part
    with pytest.raises(ConfigError, match="names its own architecture"):
        load_model(tmp_path / "run", model="robin_resnet18")


def test_refusals(model, tmp_path) -> None:
    safetensors.torch.save_file(model.state_dict(), str(tmp_path / "sd.safetensors"))
    with pytest.raises(ConfigError, match="plain state dict"):
        load_model(tmp_path / "sd.safetensors")
    with pytest.raises(ModelFileError, match="does not match the model") as err:
        load_model(tmp_path / "sd.safetensors", model="robin_resnet34", model_kwargs=KWARGS)
    assert isinstance(err.value, ExportFormatError) and isinstance(err.value, InputError)
    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(ModelFileError, match="never unpickles"):
        load_model(tmp_path / "evil.pt", model="robin_resnet18", model_kwargs=KWARGS)
    with pytest.raises(ModelFileError, match="does not exist"):
        load_model(tmp_path / "nothing.safetensors", model="robin_resnet18")
    export_compact(model, tmp_path / "c.safetensors")
    with pytest.raises(ConfigError, match="names its own architecture"):
        load_model(tmp_path / "c.safetensors", model="robin_resnet18")
    with pytest.raises(ConfigError, match="needs model="):
        load_model(None)


def test_is_masked_is_the_one_answer() -> None:
    from robin_plugin import robinify

    assert is_masked(timm.create_model("robin_resnet18", width=4))
    assert not is_masked(timm.create_model("robin_resnet18_dense", width=4))
    plain = torch.nn.Sequential(torch.nn.Linear(4, 4))
    assert not is_masked(plain) and is_masked(robinify(plain, keep_ratio=0.5))
