"""ResNets with masked binary weights, and their dense full-precision twins: CIFAR and ImageNet stems.

He et al., "Deep Residual Learning for Image Recognition" (CVPR 2016), in the two forms used by
Liu et al., "Robust Binary Models by Pruning Randomly-initialized Networks" (NeurIPS 2022):

- CIFAR (``robin_resnet18/34/50``; official ``code/arch/resnet_cifar.py``): a 3x3 stem with
  stride 1 and no max-pool, four stages of widths (w, 2w, 4w, 8w) at strides 1, 2, 4, 8;
- ImageNet (``robin_resnet18/34/50_imagenet``; official ``code/arch/resnet.py``): a 7x7 stem with
  stride 2 and a 3x3 stride-2 max-pool, the same stages at strides 4, 8, 16, 32; default cfg
  224 px, 100 classes (ImageNet-100), ImageNet input statistics.

Masked models (``robin_resnet18/34/50``) have fixed +-1 weights, learned scores, non-affine
BatchNorm and by default a final BatchNorm on the logits. Dense twins
(``robin_resnet18/34/50_dense``) have the same architecture with trainable weights and affine
BatchNorm, for the dense adversarial-training baseline.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Type

import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.layers import DropPath, register_notrace_module
from timm.models import checkpoint_seq, generate_default_cfgs, register_model

from ..errors import ConfigError
from ..layers.masked import MaskedConv2d, MaskedLinear
from .args import check_int
from .base import RobinNetBase, default_cfg
from .channels import ChannelGraph
from .factory import LayerFactory
from .inputs import IMAGENET_MEAN, IMAGENET_STD
from .spec import variant

__all__ = ["RobinResNet", "BasicBlock", "Bottleneck", "STEMS"]

STEMS = ("cifar", "imagenet")
"""The stems of :class:`RobinResNet`: CIFAR (3x3, stride 1) and ImageNet (7x7 stride 2, max-pool)."""

# timm's FX feature extraction traces through modules; a masked layer's top-k selection is data
# dependent, so it must stay a leaf (called as a whole) in the traced graph
register_notrace_module(MaskedConv2d)
register_notrace_module(MaskedLinear)


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with a residual connection. Shapes: (N, C, H, W) -> (N, planes, H/s, W/s).

    ``drop_path`` is the stochastic-depth probability of the residual branch (training only).
    """

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, factory: LayerFactory, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = factory.conv(inplanes, planes, 3, stride, 1)
        self.bn1 = factory.norm2d(planes)
        self.conv2 = factory.conv(planes, planes, 3, 1, 1)
        self.bn2 = factory.norm2d(planes)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, factory)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(self.drop_path(out) + self.downsample(x))

    def channel_flow(self, g: ChannelGraph, x: int) -> int:
        """Declare :meth:`forward` in the channel graph ``g`` (input value ``x``); returns the output value."""
        h = g.relu(g.norm(self.bn1, g.conv(self.conv1, x)))
        shortcut = _shortcut_flow(self.downsample, g, x)
        return g.relu(g.add(g.norm(self.bn2, g.conv(self.conv2, h)), shortcut))

    @staticmethod
    def count_weights(inplanes: int, planes: int, stride: int) -> int:
        """Convolution weights of ``BasicBlock(inplanes, planes, stride, ...)``, without building it."""
        return inplanes * planes * 9 + planes * planes * 9 + _shortcut_weights(inplanes, planes, stride)


class Bottleneck(nn.Module):
    """1x1 reduce, 3x3, 1x1 expand (x4), with a residual connection and optional stochastic depth."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, factory: LayerFactory, drop_path: float = 0.0):
        super().__init__()
        self.conv1 = factory.conv(inplanes, planes, 1, 1, 0)
        self.bn1 = factory.norm2d(planes)
        self.conv2 = factory.conv(planes, planes, 3, stride, 1)
        self.bn2 = factory.norm2d(planes)
        self.conv3 = factory.conv(planes, planes * self.expansion, 1, 1, 0)
        self.bn3 = factory.norm2d(planes * self.expansion)
        self.downsample = _shortcut(inplanes, planes * self.expansion, stride, factory)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(self.drop_path(out) + self.downsample(x))

    def channel_flow(self, g: ChannelGraph, x: int) -> int:
        """Declare :meth:`forward` in the channel graph ``g`` (input value ``x``); returns the output value."""
        h = g.relu(g.norm(self.bn1, g.conv(self.conv1, x)))
        h = g.relu(g.norm(self.bn2, g.conv(self.conv2, h)))
        shortcut = _shortcut_flow(self.downsample, g, x)
        return g.relu(g.add(g.norm(self.bn3, g.conv(self.conv3, h)), shortcut))

    @staticmethod
    def count_weights(inplanes: int, planes: int, stride: int) -> int:
        """Convolution weights of ``Bottleneck(inplanes, planes, stride, ...)``, without building it."""
        out = planes * Bottleneck.expansion
        return inplanes * planes + planes * planes * 9 + planes * out + _shortcut_weights(inplanes, out, stride)


def _shortcut(inplanes: int, outplanes: int, stride: int, factory: LayerFactory) -> nn.Module:
    if stride == 1 and inplanes == outplanes:
        return nn.Identity()
    return nn.Sequential(factory.conv(inplanes, outplanes, 1, stride, 0), factory.norm2d(outplanes))


def _shortcut_flow(shortcut: nn.Module, g: ChannelGraph, x: int) -> int:
    # declared before a block's last convolution, so a group lists the shortcut first (as it always has)
    if isinstance(shortcut, nn.Identity):
        return x
    return g.norm(shortcut[1], g.conv(shortcut[0], x))


def _shortcut_weights(inplanes: int, outplanes: int, stride: int) -> int:
    return inplanes * outplanes if stride != 1 or inplanes != outplanes else 0


class RobinResNet(RobinNetBase):
    """CIFAR-style ResNet, masked binary (default) or dense.

    Args:
        block: :class:`BasicBlock` or :class:`Bottleneck`.
        layers: blocks per stage (four stages), e.g. ``(2, 2, 2, 2)`` for ResNet-18.
        width: channels of the first stage (64 in the paper; 16 makes a fast CPU model).
        masked: masked binary layers (True) or the dense full-precision twin (False).
        stem: ``"cifar"`` (3x3, stride 1, no pool; default) or ``"imagenet"`` (7x7 stride 2 and
            a 3x3 stride-2 max-pool). Fixed by the registered name.
        **kwargs: the arguments of every robin model (:class:`~robin_plugin.models.args.ModelArgs`:
            ``num_classes``, ``in_chans``, ``keep_ratio``, ``p``, ``seed``, ``mean``, ``std`` ...).
            Input statistics default, for 3 channels, to CIFAR-10's (ImageNet's with the ImageNet
            stem). ``drop_path_rate`` is the stochastic depth of the last residual block; block i
            of B drops its residual branch with probability ``drop_path_rate * i / (B - 1)``.
            ``global_pool=""`` gives unpooled features with ``num_classes=0``, per-position logit
            maps (N, num_classes, H/8, W/8) otherwise.
        device, dtype: where and in which floating-point type the model lives (timm's factory
            arguments). Fixed weights are always drawn on the CPU, so they do not depend on it.

    Feature levels (``feature_info``, ``features_only=True``, ``forward_intermediates``):
    0 the stem (``act1``, stride 1; ImageNet stem 2), 1-4 the stages ``layer1``-``layer4``
    (strides 1, 2, 4, 8; ImageNet stem 4, 8, 16, 32).

    Shapes: (N, in_chans, H, W) in [0, 1] -> (N, num_classes) logits; any H, W >= 8 (ImageNet
    stem: >= 32).
    """

    stage_names = ("layer1", "layer2", "layer3", "layer4")

    arch_args = {"width": check_int(1, 1024)}  # what a file may pass besides ModelArgs (see models.spec)

    def __init__(
        self,
        block: Type[BasicBlock | Bottleneck],
        layers: tuple[int, ...],
        width: int = 64,
        masked: bool = True,
        stem: str = "cifar",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        **kwargs: Any,
    ):
        super().__init__()
        if isinstance(width, bool) or not isinstance(width, int) or width < 1:
            raise ConfigError(f"width must be an integer >= 1, got {width!r}")
        if len(layers) != len(self.stage_names) or not all(isinstance(n, int) and n >= 1 for n in layers):
            raise ConfigError(f"layers must give four stage depths >= 1, got {layers!r}")
        if stem not in STEMS:
            raise ConfigError(f"stem must be one of {', '.join(STEMS)}, got {stem!r}")
        stats = (IMAGENET_MEAN, IMAGENET_STD) if stem == "imagenet" else (None, None)
        with self._building(device, dtype):
            mk = self._setup(masked, kwargs, *stats)
            in_chans = self.in_chans
            self.width, self.stem = width, stem
            big = stem == "imagenet"
            self.conv1 = mk.conv(in_chans, width, 7, 2, 3) if big else mk.conv(in_chans, width, 3, 1, 1)
            self.bn1 = mk.norm2d(width)
            self.act1 = nn.ReLU()
            # Identity with the CIFAR stem, so TorchScript finds the attribute; forward skips it then
            self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1) if big else nn.Identity()
            stem_stride = 4 if big else 1  # of layer1's input
            self.feature_info = [dict(num_chs=width, reduction=2 if big else 1, module="act1")]
            dpr = iter(self.drop_path_rates(sum(layers), self.drop_path_rate))
            inplanes = width
            for i, (name, blocks) in enumerate(zip(self.stage_names, layers)):
                planes = width * 2**i
                stage = []
                for j in range(blocks):
                    stride = (1 if i == 0 else 2) if j == 0 else 1
                    stage.append(block(inplanes, planes, stride, mk, drop_path=next(dpr)))
                    inplanes = planes * block.expansion
                setattr(self, name, nn.Sequential(*stage))
                self.feature_info.append(dict(num_chs=inplanes, reduction=stem_stride * 2**i, module=name))
            self.num_features = inplanes
            self._finish(mk)

    def _forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)  # (N, C, H, W), normalised
        return self.act1(self.bn1(self.conv1(x)))  # (N, width, H, W)

    def _forward_stage(self, stage: nn.Module, x: torch.Tensor) -> torch.Tensor:
        if self.stem == "imagenet" and stage is self.layer1:
            x = self.maxpool(x)  # (N, width, H/4, W/4)
        return super()._forward_stage(stage, x)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self._forward_stem(x)
        if self.stem == "imagenet":
            x = self.maxpool(x)  # (N, width, H/4, W/4)
        if self.grad_checkpointing and not torch.jit.is_scripting():
            x = checkpoint_seq([self.layer1, self.layer2, self.layer3, self.layer4], x, flatten=True)
        else:
            x = self.layer1(x)
            x = self.layer2(x)
            x = self.layer3(x)
            x = self.layer4(x)
        return x  # (N, num_features, H/8, W/8); ImageNet stem: H/32, W/32

    def channel_graph(self) -> ChannelGraph:
        """This model's forward pass as channel operations (see :mod:`robin_plugin.models.channels`)."""
        g = ChannelGraph(self)
        x = g.relu(g.norm(self.bn1, g.conv(self.conv1, g.input())))  # act1; the max-pool acts per channel
        for name in self.stage_names:
            for block in getattr(self, name):
                x = _block_flow(block, g, x)
        self.head.channel_flow(g, x)
        return g

    @classmethod
    def count_weights(cls, kwargs: Mapping[str, Any]) -> int:
        """Convolution and classifier weights of ``RobinResNet(**kwargs)``, without building it."""
        block, width = kwargs["block"], kwargs.get("width", 64)
        stem_kernel = 7 if kwargs.get("stem", "cifar") == "imagenet" else 3
        total, inplanes = kwargs["in_chans"] * width * stem_kernel**2, width
        for i, blocks in enumerate(kwargs["layers"]):
            planes = width * 2**i
            for j in range(blocks):
                total += block.count_weights(inplanes, planes, (1 if i == 0 else 2) if j == 0 else 1)
                inplanes = planes * block.expansion
        return total + inplanes * kwargs["num_classes"]

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict[str, str]:
        """Parameter groups for timm's layer-wise learning-rate decay: stem, then stages or blocks."""
        return dict(stem=r"^(?:conv1|bn1)\.", blocks=r"^layer(\d+)" if coarse else r"^layer(\d+)\.(\d+)")


def _block_flow(block: nn.Module, g: ChannelGraph, x: int) -> int:
    if not hasattr(block, "channel_flow"):
        raise NotImplementedError(f"{type(block).__name__} declares no channel flow (BasicBlock and Bottleneck do)")
    return block.channel_flow(g, x)


def _cfg(**kwargs) -> dict:
    return default_cfg((4, 4), **kwargs)


def _imagenet_cfg(**kwargs) -> dict:
    # ImageNet-100 at 224 px; timm's eval transform Resize(256) + CenterCrop(224) (crop_pct 0.875),
    # the official code's test transform
    return default_cfg((7, 7), num_classes=100, input_size=(3, 224, 224), crop_pct=0.875, **kwargs)


default_cfgs = generate_default_cfgs({
    "robin_resnet18": _cfg(),
    "robin_resnet34": _cfg(),
    "robin_resnet50": _cfg(),
    "robin_resnet18_dense": _cfg(),
    "robin_resnet34_dense": _cfg(),
    "robin_resnet50_dense": _cfg(),
    "robin_resnet18_imagenet": _imagenet_cfg(),
    "robin_resnet34_imagenet": _imagenet_cfg(),
    "robin_resnet50_imagenet": _imagenet_cfg(),
    "robin_resnet18_imagenet_dense": _imagenet_cfg(),
    "robin_resnet34_imagenet_dense": _imagenet_cfg(),
    "robin_resnet50_imagenet_dense": _imagenet_cfg(),
})


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(2, 2, 2, 2))
def robin_resnet18(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary CIFAR ResNet-18."""
    return RobinResNet.create("robin_resnet18", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(3, 4, 6, 3))
def robin_resnet34(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary CIFAR ResNet-34 (the paper's main model)."""
    return RobinResNet.create("robin_resnet34", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=Bottleneck, layers=(3, 4, 6, 3))
def robin_resnet50(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary CIFAR ResNet-50."""
    return RobinResNet.create("robin_resnet50", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(2, 2, 2, 2), masked=False)
def robin_resnet18_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet18`."""
    return RobinResNet.create("robin_resnet18_dense", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(3, 4, 6, 3), masked=False)
def robin_resnet34_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet34`."""
    return RobinResNet.create("robin_resnet34_dense", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=Bottleneck, layers=(3, 4, 6, 3), masked=False)
def robin_resnet50_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet50`."""
    return RobinResNet.create("robin_resnet50_dense", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(2, 2, 2, 2), stem="imagenet")
def robin_resnet18_imagenet(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary ImageNet-style ResNet-18 (7x7 stem, max-pool; 224 px, 100 classes)."""
    return RobinResNet.create("robin_resnet18_imagenet", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(3, 4, 6, 3), stem="imagenet")
def robin_resnet34_imagenet(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary ImageNet-style ResNet-34 (the paper's ImageNet-100 model)."""
    return RobinResNet.create("robin_resnet34_imagenet", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=Bottleneck, layers=(3, 4, 6, 3), stem="imagenet")
def robin_resnet50_imagenet(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Masked binary ImageNet-style ResNet-50 (7x7 stem, max-pool; 224 px, 100 classes)."""
    return RobinResNet.create("robin_resnet50_imagenet", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(2, 2, 2, 2), stem="imagenet", masked=False)
def robin_resnet18_imagenet_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet18_imagenet`."""
    return RobinResNet.create("robin_resnet18_imagenet_dense", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=BasicBlock, layers=(3, 4, 6, 3), stem="imagenet", masked=False)
def robin_resnet34_imagenet_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet34_imagenet`."""
    return RobinResNet.create("robin_resnet34_imagenet_dense", pretrained, **kwargs)


@register_model
@variant(RobinResNet, block=Bottleneck, layers=(3, 4, 6, 3), stem="imagenet", masked=False)
def robin_resnet50_imagenet_dense(pretrained: bool = False, **kwargs) -> RobinResNet:
    """Dense full-precision twin of :func:`robin_resnet50_imagenet`."""
    return RobinResNet.create("robin_resnet50_imagenet_dense", pretrained, **kwargs)
