"""The channels_last guard: the torch CPU crash case is never run, whatever the CPU.

These tests assert the guard's decision, never the crash itself (a CPU that runs the bad
convolution silently would prove nothing).
"""
from __future__ import annotations

import logging

import pytest
import timm
import torch
import torch.nn as nn

import robin_plugin  # noqa: F401  (registers the models)
from robin_plugin.memory_format import channels_last_crash_convs, to_channels_last
from robin_plugin.training import Trainer, TrainConfig
from robin_plugin.training.config import apply_overrides, get_preset
from robin_plugin.training.run import resolve_attack_sizes
from robin_plugin.models.spec import build_model


@pytest.mark.parametrize("cin,kernel,stride,crashes", [
    (4, 1, 2, True), (1, 1, 2, True), (7, 1, 2, True), (7, 1, (2, 1), True),
    (8, 1, 2, False),   # 8 or more input channels: fine
    (4, 1, 1, False),   # 1x1 stride 1: fine
    (4, 3, 2, False),   # 3x3 stride 2: fine
])
def test_crash_condition_matches_the_measured_shapes(cin, kernel, stride, crashes):
    conv = nn.Sequential(nn.Conv2d(cin, 16, kernel, stride=stride, bias=False))
    assert bool(channels_last_crash_convs(conv)) is crashes
    assert channels_last_crash_convs(conv, "cuda") == []  # only the CPU takes the crashing path


def test_grouped_conv_counts_input_channels_per_group():
    assert channels_last_crash_convs(nn.Conv2d(16, 16, 1, stride=2, groups=4)) == [""]
    assert channels_last_crash_convs(nn.Conv2d(16, 16, 1, stride=2, groups=2)) == []


def test_narrow_robin_resnet_shortcuts_are_found_and_wide_ones_are_not():
    narrow = timm.create_model("robin_resnet18", in_chans=1, width=4, keep_ratio=0.5)
    assert channels_last_crash_convs(narrow) == ["layer2.0.downsample.0"]  # 4 -> 8 channels, stride 2
    assert channels_last_crash_convs(timm.create_model("robin_resnet18", in_chans=1, width=8)) == []


def test_to_channels_last_keeps_default_layout_and_warns(caplog):
    model = timm.create_model("robin_resnet18_dense", in_chans=1, width=4)
    with caplog.at_level(logging.WARNING, logger="robin_plugin.memory_format"):
        assert to_channels_last(model) is False
    assert "channels_last turned off" in caplog.text and "layer2.0.downsample.0" in caplog.text
    assert all(p.is_contiguous() for p in model.parameters())

    wide = timm.create_model("robin_resnet18_dense", in_chans=1, width=8)
    assert to_channels_last(wide) is True
    assert wide.conv1.weight.is_contiguous(memory_format=torch.channels_last)


def test_width4_fmnist_fast_trains_in_the_default_layout(caplog):
    """The configuration that aborted the test suite on AMD EPYC: fmnist-fast with width 4."""
    preset = get_preset("fmnist-fast")
    assert preset["channels_last"] is True
    cfg = resolve_attack_sizes(apply_overrides(preset, {"model_kwargs": {"width": 4}, "device": "cpu", "epochs": 1,
                                                         "progress": False}))
    model = build_model(cfg.model_spec(10, 1, (0.5,), (0.25,)))
    g = torch.Generator().manual_seed(0)
    ds = _Toy(torch.randint(0, 256, (32, 1, 16, 16), dtype=torch.uint8, generator=g), torch.arange(32) % 10)
    with caplog.at_level(logging.WARNING, logger="robin_plugin.memory_format"):
        trainer = Trainer(model, cfg, ds)
    assert trainer.channels_last is False
    assert "channels_last turned off" in caplog.text
    assert all(b.is_contiguous() for b in trainer.model.buffers())
    trainer.fit()  # trains in NCHW: the crashing backward is never run

    # a width that is safe keeps the preset's layout
    cfg16 = TrainConfig(**{**cfg.to_dict(), "model_kwargs": {"width": 8}, "lr_milestones": (0.5, 0.75)})
    assert Trainer(build_model(cfg16.model_spec(10, 1, (0.5,), (0.25,))), cfg16, ds).channels_last is True


class _Toy:
    def __init__(self, images, labels):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.labels)


@pytest.mark.parametrize("grad", [True, False])
def test_a_channels_last_masked_model_stays_channels_last_like_its_dense_twin(grad):
    """Layers whose layout is ambiguous (1 input channel, 1x1 kernels) once got NCHW masked weights,
    so a channels_last robin model ran its stem in NCHW and converted activations back and forth."""
    kw = dict(num_classes=10, in_chans=1, width=8, seed=0)
    robin = timm.create_model("robin_resnet18", keep_ratio=0.05, p=0.1, **kw).to(memory_format=torch.channels_last)
    dense = timm.create_model("robin_resnet18_dense", **kw).to(memory_format=torch.channels_last)
    masked = {n: m for n, m in robin.named_modules() if hasattr(m, "masked_weight")}
    assert any(m.weight.shape[1] == 1 for m in masked.values())  # the ambiguous cases are there
    assert any(m.weight.shape[-1] == 1 for m in masked.values())
    with torch.set_grad_enabled(grad):
        for name, m in masked.items():
            assert m.masked_weight().stride() == m.weight.stride(), name
    x = torch.rand(2, 1, 28, 28)
    with torch.set_grad_enabled(grad):
        for model in (robin, dense):
            stem = model.act1(model.bn1(model.conv1(model.normalize(x))))
            assert stem.is_contiguous(memory_format=torch.channels_last)
            assert not stem.is_contiguous()  # unambiguously NHWC (8 channels)
