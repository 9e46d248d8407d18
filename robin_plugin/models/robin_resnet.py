"""CIFAR-style ResNets with masked binary weights, and their dense full-precision twins.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), in the CIFAR form used by
Liu et al., "Robust Binary Models by Pruning Randomly-initialized Networks" (NeurIPS 2022):
a 3x3 stem with stride 1 and no max-pool, four stages of widths (w, 2w, 4w, 8w).

Masked models (``robin_resnet18/34/50``) have fixed +-1 weights, learned scores, non-affine
BatchNorm and by default a final BatchNorm on the logits. Dense twins
(``robin_resnet18/34/50_dense``) have the same architecture with trainable weights and affine
BatchNorm, for the dense adversarial-training baseline.
"""
from __future__ import annotations

from typing import Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..errors import ConfigError
from ._common import Layers, RobinNetBase, check_weight_source, default_cfg

__all__ = ["RobinResNet", "BasicBlock", "Bottleneck"]


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection. Shapes: (N, C, H, W) -> (N, planes, H/s, W/s)."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, layers: Layers):
        super().__init__()
        self.conv1 = layers.conv(inplanes, planes, 3, stride, 1)
        self.bn1 = layers.norm2d(planes)
        self.conv2 = layers.conv(planes, planes, 3, 1, 1)
        self.bn2 = layers.norm2d(planes)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.downsample(x))


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a residual connection."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, layers: Layers):
        super().__init__()
        self.conv1 = layers.conv(inplanes, planes, 1, 1, 0)
        self.bn1 = layers.norm2d(planes)
        self.conv2 = layers.conv(planes, planes, 3, stride, 1)
        self.bn2 = layers.norm2d(planes)
        self.conv3 = layers.conv(planes, planes * self.expansion, 1, 1, 0)
        self.bn3 = layers.norm2d(planes * self.expansion)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + self.downsample(x))


def _shortcut(inplanes: int, outplanes: int, stride: int, layers: Layers) -> nn.Module:
    if stride == 1 and inplanes == outplanes:
        return nn.Identity()
    return nn.Sequential(layers.conv(inplanes, outplanes, 1, stride, 0), layers.norm2d(outplanes))


class RobinResNet(RobinNetBase):
    """CIFAR-style ResNet, masked binary (default) or dense.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage, e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        num_classes: number of classes (0: no classifier). Default 10.
        in_chans: input channels. Default 3.
        width: channels of the first stage (64 in the paper; 16 makes a fast CPU model).
        masked: masked binary layers (True) or the dense full-precision twin (False).
        keep_ratio: fraction of all weights kept, in (0, 1]. Masked only; default 0.01.
        p: adaptive keep-ratio exponent in [0, 1]. Masked only; default 0.1.
        init: ``"binary"`` (+-1, default), ``"signed_kaiming_constant"`` or ``"kaiming_normal"``.
        score_init_scale: a in U(-a, a) for the scores. Default 0.01.
        score_scale_by_fan_in: divide a by sqrt(fan_in). Default False.
        last_bn: non-affine BatchNorm on the logits. Default True when masked, False when dense.
        seed: seed of every random draw at construction (weights and scores). Default 0.
        mean, std: input statistics used inside the model. Default CIFAR-10 for 3 channels.
        check_inputs: validate every batch (shape, dtype, NaN, values in [0, 1]); a debugging aid
            with a host sync per forward pass. Default False: inputs are checked at the boundaries.

    Shapes: (N, in_chans, H, W) in [0, 1] -> (N, num_classes) logits; any H, W >= 8.
    """

    def __init__(
        self,
        block: Type[BasicBlock | Bottleneck],
        layers: tuple[int, ...],
        num_classes: int = 10,
        in_chans: int = 3,
        width: int = 64,
        masked: bool = True,
        keep_ratio: float | None = None,
        p: float | None = None,
        init: str | None = None,
        score_init_scale: float | None = None,
        score_scale_by_fan_in: bool | None = None,
        last_bn: bool | None = None,
        seed: int = 0,
        mean: tuple[float, ...] | None = None,
        std: tuple[float, ...] | None = None,
        check_inputs: bool = False,
    ):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"width must be an integer >= 1, got {width!r}")
        mk = self._setup(
            masked=masked, num_classes=num_classes, in_chans=in_chans, seed=seed, last_bn=last_bn,
            mean=mean, std=std, check_inputs=check_inputs,
            masked_kwargs=dict(keep_ratio=keep_ratio, p=p, init=init, score_init_scale=score_init_scale,
                               score_scale_by_fan_in=score_scale_by_fan_in),
        )
        self.width = width
        self.conv1 = mk.conv(in_chans, width, 3, 1, 1)
        self.bn1 = mk.norm2d(width)
        inplanes = width
        stages = []
        for i, blocks in enumerate(layers):
            planes = width * 2**i
            stage = []
            for j in range(blocks):
                stage.append(block(inplanes, planes, (1 if i == 0 else 2) if j == 0 else 1, mk))
                inplanes = planes * block.expansion
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.num_features = inplanes
        self._finish(mk)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)  # (N, C, H, W), checked and normalised
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)  # (N, num_features, H/8, W/8)


def _create_robin_resnet(variant: str, pretrained: bool = False, **kwargs) -> RobinResNet:
    pretrained = check_weight_source(variant, pretrained, kwargs)  # no downloads; checkpoint_path= loads later
    from ..export.timm_loading import checkpoint_filter_fn  # lazy: export imports the models

    return build_model_with_cfg(RobinResNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    return default_cfg((4, 4), **kwargs)


default_cfgs = generate_default_cfgs({
    "robin_resnet18": _cfg(),
    "robin_resnet34": _cfg(),
    "robin_resnet50": _cfg(),
    "robin_resnet18_dense": _cfg(),
    "robin_resnet34_dense": _cfg(),
    "robin_resnet50_dense": _cfg(),
})


@register_model
def robin_resnet18(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary CIFAR ResNet-18."""
    return _create_robin_resnet("robin_resnet18", pretrained, block=BasicBlock, layers=(2, 2, 2, 2), **kwargs)


@register_model
def robin_resnet34(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary CIFAR ResNet-34 (the paper's main model)."""
    return _create_robin_resnet("robin_resnet34", pretrained, block=BasicBlock, layers=(3, 4, 6, 3), **kwargs)


@register_model
def robin_resnet50(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary CIFAR ResNet-50."""
    return _create_robin_resnet("robin_resnet50", pretrained, block=Bottleneck, layers=(3, 4, 6, 3), **kwargs)


@register_model
def robin_resnet18_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet18`."""
    return _create_robin_resnet("robin_resnet18_dense", pretrained, block=BasicBlock, layers=(2, 2, 2, 2), masked=False, **kwargs)


@register_model
def robin_resnet34_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet34`."""
    return _create_robin_resnet("robin_resnet34_dense", pretrained, block=BasicBlock, layers=(3, 4, 6, 3), masked=False, **kwargs)


@register_model
def robin_resnet50_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet50`."""
    return _create_robin_resnet("robin_resnet50_dense", pretrained, block=Bottleneck, layers=(3, 4, 6, 3), masked=False, **kwargs)
