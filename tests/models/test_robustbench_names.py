"""RobustBench timm naming: robin models load through robustbench.utils.load_model's timm branch.

This file runs the exact timm branch of robustbench 1.1.1's ``load_model`` (copied below from
robustbench/utils.py, v1.1.1, lines 126-144) with its enums replaced by plain stand-ins, plus
timm directly, so it needs no robustbench install; ``test_robustbench_compat.py`` runs the real
robustbench through ``robin_plugin.eval.robustbench_compat``.
"""
from __future__ import annotations

from enum import Enum

import pytest
import timm
import torch
from safetensors.torch import save_file

import robin_plugin  # noqa: F401
from robin_plugin import ConfigError
from robin_plugin.models import robustbench_names as rbn


class BenchmarkDataset(Enum):  # robustbench.model_zoo.enums, v1.1.1
    cifar_10 = "cifar10"
    cifar_100 = "cifar100"
    imagenet = "imagenet"


class ThreatModel(Enum):
    Linf = "Linf"
    L2 = "L2"
    corruptions = "corruptions"


DATASET_CLASSES = {BenchmarkDataset.cifar_10: 10, BenchmarkDataset.cifar_100: 100, BenchmarkDataset.imagenet: 1000}


def load_model(model_name, model_dir="./models", dataset=BenchmarkDataset.cifar_10, threat_model=ThreatModel.Linf,
               custom_checkpoint="", norm=None):
    """robustbench.utils.load_model up to its timm branch (v1.1.1, verbatim apart from the warning branch)."""
    dataset_: BenchmarkDataset = BenchmarkDataset(dataset)
    threat_model = ThreatModel(threat_model).value.replace('_3d', '')
    threat_model_: ThreatModel = ThreatModel(threat_model)

    lower_model_name = model_name.lower().replace('-', '_')
    timm_model_name = f"{lower_model_name}_{dataset_.value.lower()}_{threat_model_.value.lower()}"

    if timm.is_model(timm_model_name):
        return timm.create_model(timm_model_name,
                                 num_classes=DATASET_CLASSES[dataset_],
                                 pretrained=True,
                                 checkpoint_path=custom_checkpoint).eval()
    raise AssertionError(f"{timm_model_name} is not a timm model")


@pytest.mark.parametrize("name", rbn.robustbench_names())
def test_alias_registered_with_right_classes(name):
    assert timm.is_model(name)
    classes = rbn.ROBUSTBENCH_DATASETS[name.split("_")[-2]]
    assert timm.get_pretrained_cfg(name).num_classes == classes
    if "resnet18" in name:  # build the cheap ones
        m = timm.create_model(name, width=4)
        assert m.num_classes == classes
        assert m(torch.rand(2, 3, 32, 32)).shape == (2, classes)


def test_naming_matches_robustbench():
    assert rbn.robustbench_name("robin_wrn34", "cifar10", "Linf") == "robin_wrn34_cifar10_linf"
    assert rbn.robustbench_name("Robin-ResNet34", "cifar100", "L2") == "robin_resnet34_cifar100_l2"
    assert {"robin_wrn34_cifar10_linf", "robin_resnet34_cifar100_linf"} <= set(rbn.robustbench_names())
    assert len(rbn.robustbench_names()) == 20  # 5 architectures x 2 datasets x 2 threat models


@pytest.mark.parametrize("dataset,classes", [("cifar10", 10), ("cifar100", 100)])
def test_robustbench_load_model_returns_the_trained_robin_model(tmp_path, dataset, classes):
    """load_model passes no model kwargs, so it builds the default (full-size) model: save one,
    with the dataset's input statistics as robin train builds it."""
    from robin_plugin.data import dataset_info

    info = dataset_info(dataset)
    trained = timm.create_model("robin_resnet18", num_classes=classes, mean=info.mean, std=info.std)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))  # "training": scores differ from a fresh model's
    trained.eval()
    ckpt = tmp_path / "w.safetensors"
    save_file(trained.state_dict(), str(ckpt))
    model = load_model("robin_resnet18", dataset=dataset, threat_model="Linf", custom_checkpoint=str(ckpt))
    assert type(model).__name__ == "RobinResNet" and model.num_classes == classes and not model.training
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(model(x), trained(x))


def test_timm_checkpoint_path_with_model_kwargs(tmp_path):
    """Through timm directly, model kwargs (width, keep ratio, seed) go with the checkpoint."""
    from robin_plugin.data import dataset_info

    info = dataset_info("cifar100")
    trained = timm.create_model("robin_resnet18", num_classes=100, width=4, keep_ratio=0.05, seed=3, mean=info.mean, std=info.std)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(torch.randn_like(p))
    trained.eval()
    ckpt = tmp_path / "w.safetensors"
    save_file(trained.state_dict(), str(ckpt))
    small = timm.create_model("robin_resnet18_cifar100_linf", num_classes=100, pretrained=True,
                              checkpoint_path=str(ckpt), width=4, keep_ratio=0.05, seed=3).eval()
    x = torch.rand(3, 3, 32, 32)
    assert torch.equal(small(x), trained(x))


def test_missing_checkpoint_is_a_clear_error():
    """robustbench's default custom_checkpoint="": the same error as every robin name, not random scores."""
    with pytest.raises(ConfigError, match="no hosted weights"):  # robustbench's load_model calls .eval()
        timm.create_model("robin_resnet18_cifar10_linf", pretrained=True, checkpoint_path="", width=4).eval()


def test_mismatched_checkpoint_is_refused(tmp_path):
    other = timm.create_model("robin_resnet18", num_classes=100, width=4)
    ckpt = tmp_path / "c100.safetensors"
    save_file(other.state_dict(), str(ckpt))
    with pytest.raises(RuntimeError, match="size mismatch"):
        timm.create_model("robin_resnet18_cifar10_linf", pretrained=True, checkpoint_path=str(ckpt), width=4)
