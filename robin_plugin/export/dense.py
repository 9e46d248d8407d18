"""Dense export: materialise ``mask * weight`` into plain layers, and read the file back.

:func:`dense_state_dict` turns a masked robin model into a plain state dict for its dense twin
(``<name>_dense`` in timm, built with the same ``last_bn``, width, classes and input
statistics): masked weights become ``weight * mask``, scores disappear, and the entries the
twin has but the masked model lacks are filled so that the twin computes the same function:
BatchNorm ``weight = 1`` and ``bias = 0`` (masked models use non-affine BatchNorm) and a zero
classifier bias. The twin's logits equal the masked model's exactly (CPU, eval mode).

The file's layout and its checks are :mod:`robin_plugin.formats.dense`; removing provably dead
channels (``shrink=True``) is :mod:`robin_plugin.export.shrink`.
"""
from __future__ import annotations

import copy
import os
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from ..errors import RobinError
from ..formats.compact import ExportFormatError
from ..formats.dense import read_dense_file, write_dense_file
from ..io import FileExistsRobinError
from ..layers.masked import MaskedConv2d, MaskedLinear
from ..models.args import MASKED_ARGS
from ..models.spec import ModelSpec, build_model
from ..pruning import masked_layers
from .compact import ExportError, infer_model_spec
from .shrink import narrow_to, shrink_model

__all__ = ["dense_model", "dense_state_dict", "dense_twin_spec", "export_dense", "load_dense"]




def dense_twin_spec(model: nn.Module) -> tuple[str, dict[str, Any]] | None:
    """``(name, kwargs)`` of the dense twin of a robin timm model, or None for other models."""
    spec = infer_model_spec(model)
    if spec is None or not timm.is_model(spec[0] + "_dense"):
        return None
    name, kwargs = spec
    return name + "_dense", {k: v for k, v in kwargs.items() if k not in MASKED_ARGS}


def _masked_weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: (m.weight * m.mask()).detach().cpu() for name, m in masked_layers(model)}


def dense_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain state dict with ``weight * mask`` materialised and no scores.

    For robin timm models the keys are those of the dense twin (see :func:`dense_twin_spec`)
    and it loads with ``twin.load_state_dict(sd, strict=True)``. For other models (robinified
    ones) the keys are those of :func:`dense_model`'s plain copy of the model.
    """
    masked = _masked_weights(model)
    if not masked:
        raise ExportError(f"{type(model).__name__} has no masked layers; nothing to materialise")
    ours: dict[str, torch.Tensor] = {}
    for k, v in model.state_dict().items():
        layer, _, leaf = k.rpartition(".")
        if layer in masked:
            if leaf == "weight":
                ours[k] = masked[layer].clone()
            continue  # scores
        ours[k] = v.detach().cpu().clone()
    spec = dense_twin_spec(model)
    if spec is None:
        return ours
    twin = timm.create_model(spec[0], **spec[1])
    out: dict[str, torch.Tensor] = {}
    for k, v in twin.state_dict().items():
        if k in ours:
            if ours[k].shape != v.shape:
                raise ExportError(f"{k}: masked model has shape {tuple(ours[k].shape)}, dense twin {tuple(v.shape)}")
            out[k] = ours[k]
            continue
        module = twin.get_submodule(k.rpartition(".")[0])
        leaf = k.rpartition(".")[2]
        if isinstance(module, nn.modules.batchnorm._NormBase) and leaf == "weight":
            out[k] = torch.ones_like(v)
        elif leaf == "bias":
            out[k] = torch.zeros_like(v)
        else:
            raise ExportError(f"the dense twin {spec[0]} has an entry {k!r} the masked model cannot fill")
    extra = set(ours) - set(out)
    if extra:
        raise ExportError(f"the dense twin {spec[0]} lacks entries of the masked model: {sorted(extra)[:3]}")
    return out


def _plain_copy(model: nn.Module) -> nn.Module:
    """Deep copy of ``model`` with every masked layer replaced by a plain Conv2d / Linear."""
    dense = copy.deepcopy(model).cpu()
    weights = _masked_weights(model)
    for name, m in masked_layers(dense):
        if isinstance(m, MaskedConv2d):
            new: nn.Module = nn.Conv2d(m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding,
                                       m.dilation, m.groups, bias=False, padding_mode=m.padding_mode)
        elif isinstance(m, MaskedLinear):
            new = nn.Linear(m.in_features, m.out_features, bias=False)
        else:
            raise ExportError(f"cannot materialise masked layer {name} of type {type(m).__name__}")
        with torch.no_grad():
            new.weight.copy_(weights[name])
        parent, _, child = name.rpartition(".")
        setattr(dense.get_submodule(parent) if parent else dense, child, new)
    return dense


def dense_model(model: nn.Module, *, shrink: bool = False) -> nn.Module:
    """A plain dense module computing the same logits as ``model`` (CPU, eval mode).

    Args:
        model: masked binary model.
        shrink: also remove the channels :func:`shrink_plan` proves removable (robin ResNet /
            WideResNet only).

    Returns:
        The dense twin with :func:`dense_state_dict` loaded (robin timm models), or a deep copy
        with plain layers (other models); in eval mode.
    """
    spec = dense_twin_spec(model)
    if spec is None:
        dense = _plain_copy(model)
    else:
        dense = timm.create_model(spec[0], **spec[1])
        dense.load_state_dict(dense_state_dict(model), strict=True)
    dense.eval()
    return shrink_model(dense) if shrink else dense



def export_dense(
    model: nn.Module, path: str | os.PathLike | None = None, *, shrink: bool = False, overwrite: bool = False
) -> dict[str, torch.Tensor]:
    """Materialise ``model`` densely; optionally write the state dict as safetensors.

    Args:
        model: masked binary model.
        path: where to write (atomically); None returns the state dict only.
        shrink: remove provably dead channels first (robin ResNet / WideResNet only); the
            shapes then differ from the twin's: load with :func:`load_dense`.
        overwrite: replace an existing file (default: refuse).

    Returns:
        The plain state dict. Unshrunk robin models: it loads into
        ``timm.create_model(name + "_dense", **kwargs)`` with ``strict=True``, no robin code
        needed (the metadata names the model and its arguments).
    """
    if path is not None and not overwrite and Path(path).exists():
        raise FileExistsRobinError(f"{path} exists; pass overwrite=True (CLI: --overwrite) to replace it")
    if shrink:
        sd = {k: v.detach().clone() for k, v in dense_model(model, shrink=True).state_dict().items()}
    else:
        sd = dense_state_dict(model)
    if path is not None:
        write_dense_file(sd, path, spec=dense_twin_spec(model), shrunk=shrink, overwrite=overwrite)
    return sd


def load_dense(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model written by :func:`export_dense` from a robin timm model (eval mode).

    The dense twin is built from the metadata; for a shrunk export, each convolution,
    BatchNorm and linear layer is first narrowed to the shape stored in the file.
    """
    file = read_dense_file(path)
    path = Path(path)
    try:
        model = build_model(ModelSpec.parse(file.model, file.kwargs, source=f"{path}'s metadata kwargs"))
    except RobinError as e:
        raise ExportFormatError(f"{path}: {e}") from e
    except Exception as e:
        raise ExportFormatError(f"{path} is not a readable dense export ({type(e).__name__}: {str(e)[:200]})") from e
    if file.shrunk:
        narrow_to(model, file.tensors)
    try:
        model.load_state_dict(file.tensors, strict=True)
    except RuntimeError as e:
        raise ExportFormatError(f"{path} does not fit {file.model}: {e}") from e
    return model.eval()
