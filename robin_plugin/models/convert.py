"""Turn an existing model into a masked binary one (``robinify``)."""
from __future__ import annotations

import logging
import math

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..layers.masked import MaskedConv2d, MaskedLinear
from ..pruning import masked_layers, set_keep_ratio
from ..rng import stream_generator
from .args import MASKED_ARGS, ModelArgs
from .factory import masked_layer_kwargs

__all__ = ["robinify"]

_log = logging.getLogger(__name__)


def robinify(
    model: nn.Module,
    keep_ratio: float = 0.01,
    p: float = 0.1,
    *,
    scale_weights: bool = True,
    seed: int = 0,
    **init_args,
) -> nn.Module:
    """Make ``model`` a robust-binary-subnetwork candidate, in place, and return it.

    Every ``nn.Conv2d`` and ``nn.Linear`` (exact types) becomes a masked binary layer with fresh
    fixed weights (their old weights and biases are dropped: the method never trains weights),
    every BatchNorm becomes non-affine (its running statistics are kept), and the adaptive keep
    ratios are applied. Subclasses of Conv2d / Linear with their own forward (e.g. timm's
    ``Conv2dSame``) are left dense and reported in a warning. The model's inputs are unchanged:
    unlike the registered robin models, a robinified model does not check or normalise them.
    Its architecture is the caller's, so it declares no channel graph
    (:mod:`robin_plugin.models.channels`): dense export gives a plain copy of it, and channel
    shrinking refuses it.

    Args:
        model: any module.
        keep_ratio: fraction of all masked weights kept, in (0, 1]. Default 0.01.
        p: adaptive keep-ratio exponent in [0, 1]. Default 0.1.
        scale_weights: with ``init="binary"``, multiply each layer's +-1 weights by
            ``1 / sqrt(keep_ratio_i * fan_in)`` (its kept fan-in at the target ratio), so the
            untrained model's logits are of order 1 in eval mode, where BatchNorm still has its
            initial statistics (with exact +-1 weights a ResNet-18's are ~1e10). The weights stay
            two-valued per layer (one bit each, one scale per layer) and, behind a BatchNorm, the
            scale does not change the function. False keeps exactly +-1 (the registered robin
            models' choice, which add a final BatchNorm on the logits instead). Default True.
        seed: seed of the new weights and scores (drawn in module order).
        **init_args: the other masked-model arguments of
            :class:`~robin_plugin.models.args.ModelArgs` (the weight and score initialisation:
            ``init="binary"`` ...), with the same defaults as the registered models.

    Example:
        >>> model = robinify(timm.create_model("resnet18", num_classes=10), keep_ratio=0.05)
    """
    unknown = sorted(set(init_args) - set(MASKED_ARGS))
    if unknown:
        raise TypeError(f"robinify() got unexpected keyword arguments {unknown}; it takes {', '.join(MASKED_ARGS)}")
    args = ModelArgs(keep_ratio=keep_ratio, p=p, **init_args).for_model(masked=True)
    g = stream_generator(seed, "robinify")
    kw = dict(masked_layer_kwargs(args), generator=g)
    skipped: list[str] = []
    replaced = 0
    for name, module in list(model.named_modules()):
        for child_name, child in list(module.named_children()):
            full = f"{name}.{child_name}" if name else child_name
            new = _masked_twin(child, kw)
            if new is not None:
                setattr(module, child_name, new)
                replaced += 1
            elif isinstance(child, (nn.Conv2d, nn.Linear)) and not isinstance(child, (MaskedConv2d, MaskedLinear)):
                skipped.append(f"{full} ({type(child).__name__})")
            elif isinstance(child, nn.modules.batchnorm._NormBase) and child.affine:
                child.affine = False
                child.register_parameter("weight", None)
                child.register_parameter("bias", None)
    if replaced == 0:
        raise ConfigError(f"{type(model).__name__} has no nn.Conv2d or nn.Linear layer to robinify")
    if skipped:
        _log.warning("robinify left these layers dense (unsupported subclasses): %s", ", ".join(skipped))
    set_keep_ratio(model, args.keep_ratio, args.p)
    if scale_weights and args.init == "binary":
        with torch.no_grad():
            for _, layer in masked_layers(model):
                fan_in = layer.weight[0].numel()
                layer.weight.mul_(1.0 / math.sqrt(max(1.0, layer.keep_ratio * fan_in)))
    return model


def _masked_twin(layer: nn.Module, kw: dict) -> nn.Module | None:
    device = layer.weight.device if isinstance(layer, (nn.Conv2d, nn.Linear)) else None
    if type(layer) is nn.Conv2d:
        return MaskedConv2d(
            layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride, layer.padding,
            layer.dilation, layer.groups, layer.padding_mode, device=device, **kw,
        )
    if type(layer) is nn.Linear:
        return MaskedLinear(layer.in_features, layer.out_features, device=device, **kw)
    return None
