"""Robin models under RobustBench's timm naming, ``{model}_{dataset}_{threat}``.

robustbench 1.1.1's ``robustbench.utils.load_model(model_name, dataset=..., threat_model=...,
custom_checkpoint=...)`` first builds the name
``f"{model_name.lower().replace('-', '_')}_{dataset}_{threat.lower()}"`` and, if timm knows it,
returns::

    timm.create_model(name, num_classes=DATASET_CLASSES[dataset], pretrained=True,
                      checkpoint_path=custom_checkpoint).eval()

Registering ``robin_wrn34_cifar10_linf``, ``robin_resnet34_cifar100_linf`` ... (one alias per
masked CIFAR-size robin model registered with timm) therefore makes
``load_model("robin_wrn34", dataset="cifar10", threat_model="Linf", custom_checkpoint="w.safetensors")``
return a robin model. timm loads ``checkpoint_path`` itself, after the
entry point has built the model (``weights_only=True``; ``.safetensors`` files are read with
safetensors). Robin models have no hosted weights: ``pretrained=True`` with no ``checkpoint_path``
(robustbench's default ``custom_checkpoint=""``) raises :class:`~robin_plugin.errors.ConfigError`,
as for every robin name.

Keep ratios and input statistics are part of a robin state dict, so the checkpoint decides
them; the architecture arguments (``width`` ...) must match it. Without a checkpoint, input
statistics default to the dataset's (CIFAR-10's or CIFAR-100's), as ``robin train`` uses.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import timm
import torch.nn as nn
from timm.models import generate_default_cfgs, get_pretrained_cfg, register_model

from . import robin_resnet, robin_wideresnet  # noqa: F401  (their models must be registered first)
from .inputs import CIFAR100_MEAN, CIFAR100_STD
from .spec import builds_masked, declared, variant

__all__ = ["ROBUSTBENCH_DATASETS", "ROBUSTBENCH_THREATS", "robustbench_name", "robustbench_names"]


#: RobustBench dataset name -> class count (robustbench.model_zoo.enums.DATASET_CLASSES).
ROBUSTBENCH_DATASETS: dict[str, int] = {"cifar10": 10, "cifar100": 100}
#: RobustBench threat models (``ThreatModel`` values, lower-cased as in the timm name).
ROBUSTBENCH_THREATS: tuple[str, ...] = ("linf", "l2")

# the base robin models, read from timm's registry: masked, CIFAR-size models only (RobustBench's
# CIFAR boards are 32x32; its ImageNet board is ImageNet-1k at 224 px, not the paper's ImageNet-100)
_BASES: tuple[str, ...] = tuple(
    name for name in timm.list_models("robin_*")
    if (found := declared(name)) is not None and builds_masked(name) and found[1].get("stem", "cifar") == "cifar"
)


# input statistics per dataset (the base models default to CIFAR-10's)
_STATS: dict[str, dict] = {"cifar100": {"mean": CIFAR100_MEAN, "std": CIFAR100_STD}}


def robustbench_name(model: str, dataset: str, threat: str) -> str:
    """The timm name robustbench's ``load_model`` looks up: ``robin_wrn34``, ``cifar10``, ``Linf`` -> ``robin_wrn34_cifar10_linf``."""
    return f"{model.lower().replace('-', '_')}_{dataset.lower()}_{threat.lower()}"


def robustbench_names() -> list[str]:
    """Every alias this module registers."""
    return [robustbench_name(m, d, t) for m in _BASES for d in ROBUSTBENCH_DATASETS for t in ROBUSTBENCH_THREATS]


default_cfgs = generate_default_cfgs({
    robustbench_name(m, d, t): dataclasses.replace(get_pretrained_cfg(m), num_classes=c)
    for m in _BASES for d, c in ROBUSTBENCH_DATASETS.items() for t in ROBUSTBENCH_THREATS
})


def _make_entry(alias: str, base: str, num_classes: int) -> Callable[..., nn.Module]:
    cls, fixed = declared(base)

    @variant(cls, **fixed)
    def entry(pretrained: bool = False, **kwargs) -> nn.Module:
        kwargs.setdefault("num_classes", num_classes)
        if kwargs.get("in_chans", 3) == 3:  # the dataset's statistics are RGB
            for key, value in _STATS.get(alias.split("_")[-2], {}).items():
                kwargs.setdefault(key, value)
        return cls.create(alias, pretrained, **kwargs)

    entry.__name__ = alias
    entry.__qualname__ = alias
    entry.__doc__ = (f"{base} for RobustBench {alias.split('_')[-2]} {alias.split('_')[-1]} ({num_classes} classes); "
                     f"loadable by robustbench.utils.load_model('{base}', ...).")
    entry.__module__ = __name__
    return entry


for _m in _BASES:
    for _d, _c in ROBUSTBENCH_DATASETS.items():
        for _t in ROBUSTBENCH_THREATS:
            _alias = robustbench_name(_m, _d, _t)
            globals()[_alias] = register_model(_make_entry(_alias, _m, _c))
