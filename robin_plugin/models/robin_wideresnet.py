"""WideResNets with masked binary weights, and their dense full-precision twins.

Zagoruyko and Komodakis, "Wide Residual Networks" (BMVC 2016), in the pre-activation form that
RobustBench uses for its WideResNet-34-10 and -28-10 entries; masked binary variant after
Liu et al., "Robust Binary Models by Pruning Randomly-initialized Networks" (NeurIPS 2022).

Registered as ``robin_wrn34`` (WideResNet-34-10, the RobustBench standard architecture and the
name the design card uses) and ``robin_wrn28_10`` (WideResNet-28-10), each with a dense twin
``<name>_dense``.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, register_notrace_module
from timm.models import checkpoint_seq, generate_default_cfgs, register_model

from .._checks import is_int
from ..errors import ConfigError
from ..layers.masked import MaskedConv2d, MaskedLinear
from .args import check_int
from .base import RobinNetBase, default_cfg
from .channels import ChannelGraph
from .factory import LayerFactory
from .spec import variant

__all__ = ["RobinWideResNet", "PreActBlock"]

# masked layers stay leaves of timm's FX graphs (data-dependent top-k); robin_resnet does the same
register_notrace_module(MaskedConv2d)
register_notrace_module(MaskedLinear)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3, BN-ReLU-conv3x3, with a 1x1 shortcut when the shape changes.

    ``drop_path`` is the stochastic-depth probability of the residual branch (training only).
    Shapes: (N, inplanes, H, W) -> (N, planes, H/stride, W/stride).
    """

    def __init__(self, inplanes: int, planes: int, stride: int, factory: LayerFactory, drop_path: float = 0.0):
        super().__init__()
        self.bn1 = factory.norm2d(inplanes)
        self.conv1 = factory.conv(inplanes, planes, 3, stride, 1)
        self.bn2 = factory.norm2d(planes)
        self.conv2 = factory.conv(planes, planes, 3, 1, 1)
        self.shortcut = (
            factory.conv(inplanes, planes, 1, stride, 0) if (stride != 1 or inplanes != planes) else None
        )
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        o = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(o)
        out = self.conv1(o)
        out = self.conv2(F.relu(self.bn2(out)))
        return self.drop_path(out) + residual

    def channel_flow(self, g: ChannelGraph, x: int) -> int:
        """Declare :meth:`forward` in the channel graph ``g`` (input value ``x``); returns the output value."""
        o = g.relu(g.norm(self.bn1, x))
        h = g.relu(g.norm(self.bn2, g.conv(self.conv1, o)))
        residual = x if self.shortcut is None else g.conv(self.shortcut, o)
        return g.add(g.conv(self.conv2, h), residual)

    @staticmethod
    def count_weights(inplanes: int, planes: int, stride: int) -> int:
        """Convolution weights of ``PreActBlock(inplanes, planes, stride, ...)``, without building it."""
        shortcut = inplanes * planes if stride != 1 or inplanes != planes else 0
        return inplanes * planes * 9 + planes * planes * 9 + shortcut


class RobinWideResNet(RobinNetBase):
    """WideResNet-depth-widen_factor, masked binary (default) or dense.

    Args:
        depth: 6n + 4 (28 or 34 for the registered variants).
        widen_factor: channel multiplier k (stage widths 16k, 32k, 64k). Default 10.
        masked: masked binary layers (True) or the dense full-precision twin (False).
        device, dtype: where and in which floating-point type the model lives (timm's factory
            arguments). Fixed weights are always drawn on the CPU, so they do not depend on it.
        **kwargs: the arguments of every robin model (:class:`~robin_plugin.models.args.ModelArgs`);
            ``drop_path_rate`` is the rate of the last of the 3n blocks.

    Feature levels (``feature_info``, ``features_only=True``, ``forward_intermediates``):
    0 the stem convolution (``conv1``, stride 1), 1-3 the stages ``block1``-``block3``
    (strides 1, 2, 4). The final norm (``bn1`` and ``act1``) follows the last stage; it applies to
    ``forward_intermediates``' last level with ``norm=True``.

    Shapes: (N, in_chans, H, W) in [0, 1] -> (N, num_classes) logits.
    """

    stage_names = ("block1", "block2", "block3")
    norm_names = ("bn1", "act1")

    arch_args = {"depth": check_int(10, 202), "widen_factor": check_int(1, 64)}  # besides ModelArgs (see models.spec)

    def __init__(
        self,
        depth: int = 34,
        widen_factor: int = 10,
        masked: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        if (depth - 4) % 6 != 0 or depth < 10:
            raise ConfigError(f"WideResNet depth must be 6n + 4 with n >= 1, got {depth}")
        if not is_int(widen_factor) or widen_factor < 1:
            raise ConfigError(f"widen_factor must be an integer >= 1, got {widen_factor!r}")
        with self._building(device, dtype):
            mk = self._setup(masked, kwargs)
            in_chans = self.in_chans
            self.depth, self.widen_factor = depth, widen_factor
            n = (depth - 4) // 6
            widths = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
            self.conv1 = mk.conv(in_chans, widths[0], 3, 1, 1)
            self.feature_info = [dict(num_chs=widths[0], reduction=1, module="conv1")]
            dpr = iter(self.drop_path_rates(3 * n, self.drop_path_rate))
            inplanes = widths[0]
            for i, (name, planes) in enumerate(zip(self.stage_names, widths[1:])):
                stage = [PreActBlock(inplanes if j == 0 else planes, planes, (1 if i == 0 else 2) if j == 0 else 1, mk,
                                     drop_path=next(dpr))
                         for j in range(n)]
                setattr(self, name, nn.Sequential(*stage))
                self.feature_info.append(dict(num_chs=planes, reduction=2**i, module=name))
                inplanes = planes
            self.bn1 = mk.norm2d(inplanes)
            self.act1 = nn.ReLU()
            self.num_features = inplanes
            self._finish(mk)

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv1(self.normalize(x))  # (N, 16, H, W)

    def _forward_norm(self, x: torch.Tensor) -> torch.Tensor:
        return self.act1(self.bn1(x))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._forward_stem(x)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.block1, self.block2, self.block3], x, flatten=True)
        else:
            x = self.block3(self.block2(self.block1(x)))
        return self._forward_norm(x)  # (N, 64k, H/4, W/4)

    def channel_graph(self) -> ChannelGraph:
        """This model's forward pass as channel operations (see :mod:`robin_plugin.models.channels`)."""
        g = ChannelGraph(self)
        x = g.conv(self.conv1, g.input())
        for name in self.stage_names:
            for block in getattr(self, name):
                x = block.channel_flow(g, x)
        self.head.channel_flow(g, g.relu(g.norm(self.bn1, x)))  # bn1, act1
        return g

    @classmethod
    def count_weights(cls, kwargs: Mapping[str, Any]) -> int:
        """Convolution and classifier weights of ``RobinWideResNet(**kwargs)``, without building it."""
        depth, k = kwargs["depth"], kwargs["widen_factor"]
        if (depth - 4) % 6:
            raise ConfigError(f"WideResNet depth must be 6n + 4, got {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
        total, inplanes = kwargs["in_chans"] * 16 * 9, 16
        for i, planes in enumerate(widths[1:]):
            for j in range(n):
                stride = (1 if i == 0 else 2) if j == 0 else 1
                total += PreActBlock.count_weights(inplanes if j == 0 else planes, planes, stride)
            inplanes = planes
        return total + inplanes * kwargs["num_classes"]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise learning-rate decay: stem, stages or blocks, final norm."""
        if coarse:
            return dict(stem=r"^conv1\.", blocks=r"^block(\d+)")
        return dict(stem=r"^conv1\.", blocks=[(r"^block(\d+)\.(\d+)", None), (r"^bn1\.", (99999,))])


def _cfg(**kwargs) -> dict:
    return default_cfg((8, 8), **kwargs)


default_cfgs = generate_default_cfgs({
    "robin_wrn28_10": _cfg(),
    "robin_wrn34": _cfg(),
    "robin_wrn28_10_dense": _cfg(),
    "robin_wrn34_dense": _cfg(),
})


@register_model
@variant(RobinWideResNet, depth=28, widen_factor=10)
def robin_wrn28_10(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Masked binary WideResNet-28-10."""
    return RobinWideResNet.create("robin_wrn28_10", pretrained, **kwargs)


@register_model
@variant(RobinWideResNet, depth=34, widen_factor=10)
def robin_wrn34(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Masked binary WideResNet-34-10 (the RobustBench standard architecture)."""
    return RobinWideResNet.create("robin_wrn34", pretrained, **kwargs)


@register_model
@variant(RobinWideResNet, depth=28, widen_factor=10, masked=False)
def robin_wrn28_10_dense(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Dense full-precision twin of :func:`robin_wrn28_10`."""
    return RobinWideResNet.create("robin_wrn28_10_dense", pretrained, **kwargs)


@register_model
@variant(RobinWideResNet, depth=34, widen_factor=10, masked=False)
def robin_wrn34_dense(pretrained: bool = False, **kwargs) -> RobinWideResNet:
    """Dense full-precision twin of :func:`robin_wrn34`."""
    return RobinWideResNet.create("robin_wrn34_dense", pretrained, **kwargs)
