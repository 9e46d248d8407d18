"""Tests of ``robin_plugin.robinify`` (``robin_plugin.models.convert``)."""
from __future__ import annotations

import logging
import math

import pytest
import timm
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import Conv2dSame

from robin_plugin import (
    ConfigError,
    MaskedConv2d,
    MaskedLinear,
    UnknownNameError,
    adaptive_keep_ratios,
    masked_layers,
    robinify,
)
from robin_plugin.layers.selection import topk_mask


@pytest.fixture(scope="module")
def timm_resnet18() -> nn.Module:
    """timm's ImageNet ResNet-18 with 10 classes, robinified once (tests must not modify it)."""
    return robinify(timm.create_model("resnet18", num_classes=10), keep_ratio=0.05, p=0.1)


def test_every_conv_and_linear_becomes_masked(timm_resnet18: nn.Module) -> None:
    reference = timm.create_model("resnet18", num_classes=10)
    dense = {n: m for n, m in reference.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    converted = dict(timm_resnet18.named_modules())
    for name, layer in dense.items():
        new = converted[name]
        assert isinstance(new, MaskedConv2d if isinstance(layer, nn.Conv2d) else MaskedLinear), name
        assert new.weight.shape == layer.weight.shape, name
        if isinstance(layer, nn.Conv2d):
            assert (new.stride, new.padding, new.dilation, new.groups) == (
                layer.stride, layer.padding, layer.dilation, layer.groups
            ), name
    assert [n for n, _ in masked_layers(timm_resnet18)] == list(dense)


def test_only_scores_are_trainable_and_batchnorm_is_non_affine(timm_resnet18: nn.Module) -> None:
    assert all(n.endswith(".scores") for n, _ in timm_resnet18.named_parameters())
    norms = [m for m in timm_resnet18.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms and all(not m.affine and m.weight is None and m.bias is None for m in norms)
    assert all(m.running_mean is not None for m in norms)  # running statistics are kept
    assert timm_resnet18.fc.bias is None
    for _, m in masked_layers(timm_resnet18):  # two values per layer: +-1 / sqrt(kept fan-in)
        c = 1.0 / math.sqrt(max(1.0, m.keep_ratio * m.weight[0].numel()))
        assert torch.equal(m.weight.abs(), torch.full_like(m.weight, c)) and set(m.weight.sign().unique().tolist()) == {-1.0, 1.0}


def test_scale_weights_false_keeps_exact_signs() -> None:
    model = robinify(timm.create_model("resnet18", num_classes=10), keep_ratio=0.05, scale_weights=False)
    for _, m in masked_layers(model):
        assert set(m.weight.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("arch", ["resnet18", "convnext_atto"])
def test_default_robinify_gives_logits_of_order_one(arch: str) -> None:
    """Untrained, in eval mode (BatchNorm at its initial statistics): exact +-1 weights give ~1e10."""
    x = torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        std = robinify(timm.create_model(arch, num_classes=10), keep_ratio=0.01).eval()(x).std().item()
        raw = robinify(timm.create_model(arch, num_classes=10), keep_ratio=0.01, scale_weights=False).eval()(x).std().item()
    assert 0.05 < std < 20, std
    if arch == "resnet18":
        assert raw > 1e6  # what the scaling fixes


def test_total_kept_matches_keep_ratio(timm_resnet18: nn.Module) -> None:
    layers = masked_layers(timm_resnet18)
    sizes = [m.weight.numel() for _, m in layers]
    assert [m.keep_ratio for _, m in layers] == adaptive_keep_ratios(sizes, 0.05, 0.1)
    kept = sum(int(m.mask().sum()) for _, m in layers)
    assert abs(kept - 0.05 * sum(sizes)) <= len(layers)


def test_robinified_model_trains_only_scores() -> None:
    model = robinify(timm.create_model("resnet18", num_classes=10), keep_ratio=0.05)
    weights = {n: m.weight.clone() for n, m in masked_layers(model)}
    masks = {n: m.mask().clone() for n, m in masked_layers(model)}
    opt = torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.9, weight_decay=5e-4)
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (4, 10)
    F.cross_entropy(out, torch.tensor([0, 1, 2, 3])).backward()
    opt.step()
    changed = 0
    for name, m in masked_layers(model):
        assert torch.equal(m.weight, weights[name])
        new_mask = m.mask()
        assert torch.equal(new_mask, topk_mask(m.scores.detach().abs(), m.kept))  # cache refreshed
        changed += int(not torch.equal(new_mask, masks[name]))
    assert changed > 0  # a large step moves the selection


def test_in_place_and_running_stats_kept() -> None:
    model = timm.create_model("resnet18", num_classes=10)
    with torch.no_grad():
        model.bn1.running_mean.fill_(0.25)
    out = robinify(model, keep_ratio=0.1)
    assert out is model
    assert torch.all(model.bn1.running_mean == 0.25)


def test_same_seed_same_weights_different_seed_different() -> None:
    def make(seed: int) -> nn.Module:
        return robinify(nn.Sequential(nn.Conv2d(3, 8, 3), nn.Flatten(), nn.Linear(8, 2)), 0.5, 0.1, seed=seed)

    a, b, c = make(1), make(1), make(2)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a[0].weight, c[0].weight)


@pytest.mark.parametrize("init", ["signed_kaiming_constant", "kaiming_normal", "uniform_pm1"])
def test_init_options_pass_through(init: str) -> None:
    model = robinify(nn.Sequential(nn.Linear(16, 8)), 0.5, 1.0, init=init, score_init_scale=0.5)
    assert model[0].init == init
    assert model[0].scores.abs().max() <= 0.5


def test_unsupported_subclasses_stay_dense_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    model = nn.Sequential(Conv2dSame(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3))
    with caplog.at_level(logging.WARNING, logger="robin_plugin"):
        robinify(model, keep_ratio=0.5)
    assert type(model[0]) is Conv2dSame and isinstance(model[0].weight, nn.Parameter)
    assert isinstance(model[2], MaskedConv2d)
    assert "0 (Conv2dSame)" in caplog.text


def test_bad_settings_raise() -> None:
    def fresh() -> nn.Module:
        return nn.Sequential(nn.Linear(4, 4))

    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        robinify(fresh(), keep_ratio=0.0)
    with pytest.raises(ConfigError, match=r"\(0, 1\]"):
        robinify(fresh(), keep_ratio=1.5)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        robinify(fresh(), keep_ratio=0.1, p=2.0)
    with pytest.raises(UnknownNameError, match="did you mean 'binary'"):
        robinify(fresh(), init="binery")
    with pytest.raises(ConfigError, match="score_init_scale"):
        robinify(fresh(), score_init_scale=0.0)
    with pytest.raises(ConfigError, match="has no nn.Conv2d or nn.Linear"):
        robinify(nn.Sequential(nn.ReLU()))


def test_bad_settings_leave_the_model_untouched() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    with pytest.raises(ConfigError):
        robinify(model, keep_ratio=2.0)
    assert type(model[0]) is nn.Linear and model[1].affine


def test_bad_score_scale_leaves_the_model_untouched() -> None:
    model = nn.Sequential(nn.BatchNorm1d(4), nn.Linear(4, 4))
    with pytest.raises(ConfigError):
        robinify(model, score_init_scale=-1.0)
    assert model[0].affine and type(model[1]) is nn.Linear
