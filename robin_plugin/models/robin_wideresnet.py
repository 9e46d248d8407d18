"""WideResNets with masked binary weights, and their dense full-precision twins.

Zagoruyko and Komodakis, "Wide Residual Networks" (BMVC 2016), in the pre-activation form that
RobustBench uses for its WideResNet-34-10 and -28-10 entries; masked binary variant after
Liu et al., "Robust Binary Models by Pruning Randomly-initialized Networks" (NeurIPS 2022).
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from ..errors import ConfigError
from ._common import Layers, RobinNetBase, check_weight_source, default_cfg

__all__ = ["RobinWideResNet", "PreActBlock"]


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, with a 1x1 shortcut when the shape changes."""

    def __init__(self, inplanes: int, planes: int, stride: int, layers: Layers):
        super().__init__()
        self.bn1 = layers.norm2d(inplanes)
        self.conv1 = layers.conv(inplanes, planes, 3, stride, 1)
        self.bn2 = layers.norm2d(planes)
        self.conv2 = layers.conv(planes, planes, 3, 1, 1)
        self.shortcut = (
            layers.conv(inplanes, planes, 1, stride, 0) if (stride != 1 or inplanes != planes) else None
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + residual


class RobinWideResNet(RobinNetBase):
    """WideResNet-depth-widen_factor, masked binary (default) or dense.

    Args:
        depth: 6n + 4 (28 or 34 for the registered variants).
        widen_factor: channel multiplier k (stage widths 16k, 32k, 64k). Default 10.
        Other arguments as :class:`robin_plugin.models.robin_resnet.RobinResNet`.

    Shapes: (N, in_chans, H, W) in [0, 1] -> (N, num_classes) logits.
    """

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_chans: int = 3,
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
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ConfigError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        if isinstance(widen_factor, bool) or not isinstance(widen_factor, int) or widen_factor < 1:
            raise ConfigError(f"widen_factor must be an integer >= 1, got {widen_factor!r}")
        mk = self._setup(
            masked=masked, num_classes=num_classes, in_chans=in_chans, seed=seed, last_bn=last_bn,
            mean=mean, std=std, check_inputs=check_inputs,
            masked_kwargs=dict(keep_ratio=keep_ratio, p=p, init=init, score_init_scale=score_init_scale,
                               score_scale_by_fan_in=score_scale_by_fan_in),
        )
        self.depth, self.widen_factor = depth, widen_factor
        n = (depth - 4) // 6
        widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = mk.conv(in_chans, widths[0], 3, 1, 1)
        blocks = []
        inplanes = widths[0]
        for i, planes in enumerate(widths[1:]):
            stage = [PreActBlock(inplanes if j == 0 else planes, planes, (1 if i == 0 else 2) if j == 0 else 1, mk)
                     for j in range(n)]
            blocks.append(nn.Sequential(*stage))
            inplanes = planes
        self.block1, self.block2, self.block3 = blocks
        self.bn1 = mk.norm2d(inplanes)
        self.num_features = inplanes
        self._finish(mk)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        x = self.conv1(x)  # (N, 16, H, W)
        x = self.block3(self.block2(self.block1(x)))
        return F.relu(self.bn1(x))  # (N, 64k, H/4, W/4)


def _create_robin_wrn(variant: str, pretrained: bool = False, **kwargs) -> RobinWideResNet:
    pretrained = check_weight_source(variant, pretrained, kwargs)  # no downloads; checkpoint_path= loads later
    from ..export.timm_loading import checkpoint_filter_fn  # lazy: export imports the models

    return build_model_with_cfg(RobinWideResNet, variant, pretrained, pretrained_filter_fn=checkpoint_filter_fn, **kwargs)


def _cfg(**kwargs) -> dict:
    return default_cfg((8, 8), **kwargs)


default_cfgs = generate_default_cfgs({
    "robin_wrn28_10": _cfg(),
    "robin_wrn34": _cfg(),
    "robin_wrn28_10_dense": _cfg(),
    "robin_wrn34_dense": _cfg(),
})


@register_model
def robin_wrn28_10(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Masked binary WideResNet-28-10."""
    return _create_robin_wrn("robin_wrn28_10", pretrained, **dict(dict(depth=28, widen_factor=10), **kwargs))


@register_model
def robin_wrn34(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Masked binary WideResNet-34-10 (the RobustBench standard architecture)."""
    return _create_robin_wrn("robin_wrn34", pretrained, **dict(dict(depth=34, widen_factor=10), **kwargs))


@register_model
def robin_wrn28_10_dense(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Dense full-precision twin of :func:`robin_wrn28_10`."""
    return _create_robin_wrn("robin_wrn28_10_dense", pretrained, **dict(dict(depth=28, widen_factor=10, masked=False), **kwargs))


@register_model
def robin_wrn34_dense(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Dense full-precision twin of :func:`robin_wrn34`."""
    return _create_robin_wrn("robin_wrn34_dense", pretrained, **dict(dict(depth=34, widen_factor=10, masked=False), **kwargs))
