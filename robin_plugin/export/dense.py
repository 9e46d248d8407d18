"""Dense export: materialise ``mask * weight`` into plain layers, and remove dead channels.

:func:`dense_state_dict` turns a masked robin model into a plain state dict for its dense twin
(``<name>_dense`` in timm, built with the same ``last_bn``, width, classes and input
statistics): masked weights become ``weight * mask``, scores disappear, and the entries the
twin has but the masked model lacks are filled so that the twin computes the same function:
BatchNorm ``weight = 1`` and ``bias = 0`` (masked models use non-affine BatchNorm) and a zero
classifier bias. The twin's logits equal the masked model's exactly (CPU, eval mode).

Channel shrinking (:func:`shrink_model`) removes channels whose removal cannot change the
output, and the input channels of the layers that read them. A channel of a tensor may go when
every layer that reads that tensor either multiplies it by all-zero weights, or reads it where
it is exactly zero. A channel is exactly zero only where the analysis can prove it:

- a convolution output channel whose weights are all pruned is 0, but the BatchNorm after it
  turns 0 into the constant ``(0 - running_mean) / sqrt(running_var + eps)``, which is not 0
  in general (a channel that died during training keeps a decaying running mean); after a ReLU
  it is 0 exactly when that constant is <= 0, which is checked per channel in float32 with the
  model's own BatchNorm;
- a constant non-zero channel cannot be dropped even if it looks like a bias: zero padding makes
  its contribution to the next 3x3 convolution vary at the borders;
- residual additions tie channels together: tensors joined by identity shortcuts form one group
  and a channel is removed from the whole group or not at all; an addition's output channel is
  zero only if both branches are provably zero there (``relu(a + b)`` checked on the constants).

The analysis knows no architecture: it reads the model's own declaration of its forward pass
(``channel_graph()``, see :mod:`robin_plugin.models.channels`: convolutions, BatchNorms, ReLUs,
additions, pooling and the classifier, with the groups of channels that additions tie together)
and propagates, per channel, "exactly the constant c" through it. The robin ResNet (basic and
bottleneck blocks) and WideResNet families declare their graphs; other models raise
:class:`~robin_plugin.export.compact.ExportError`. At least one channel is kept in every group, so
every layer keeps a valid shape.
"""
from __future__ import annotations

import copy
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn as nn

from ..errors import RobinError
from ..formats.files import FileContentError, SafetensorsLimits, nonfinite_tensor, parse_json, read_safetensors, read_safetensors_header
from ..io import FileExistsRobinError, save_safetensors
from ..layers.masked import MaskedConv2d, MaskedLinear
from ..models.args import MASKED_ARGS
from ..models.base import RobinNetBase
from ..models.channels import ChannelGraph
from ..models.spec import ModelSpec, build_model
from ..pruning import is_masked, masked_layers
from .compact import ExportError, ExportFormatError, infer_model_spec

__all__ = [
    "DENSE_FORMAT",
    "dense_model",
    "dense_state_dict",
    "dense_twin_spec",
    "export_dense",
    "load_dense",
    "pruned_channels",
    "shrink_model",
    "shrink_plan",
]

_log = logging.getLogger(__name__)

DENSE_FORMAT = "robin_dense/1"


def pruned_channels(model: nn.Module) -> dict[str, int]:
    """Per masked layer, the number of output channels (filters / rows) whose weights are all pruned."""
    out = {}
    for name, m in masked_layers(model):
        mask = m.mask().detach().reshape(m.weight.shape[0], -1)
        out[name] = int((mask == 0).all(dim=1).sum())
    return out


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


# --- channel shrinking ------------------------------------------------------------------------


@dataclass
class _Group:
    """Channels shared by tensors joined by identity shortcuts."""

    size: int
    producers: list[str]  # convs whose output channels these are
    norms: list[str]  # BatchNorms acting on these channels
    consumers: list[tuple[str, torch.Tensor]]  # (layer, input-is-zero per channel)


def _dead_out(conv: nn.Module) -> torch.Tensor:
    return (conv.weight.detach().reshape(conv.weight.shape[0], -1) == 0).all(dim=1)


def _unused_in(layer: nn.Module) -> torch.Tensor:
    w = layer.weight.detach()
    return (w.transpose(0, 1).reshape(w.shape[1], -1) == 0).all(dim=1)


@torch.no_grad()
def _bn_of(bn: nn.Module, const: torch.Tensor) -> torch.Tensor:
    """BatchNorm (eval) output on an input that is ``const[c]`` everywhere in channel c."""
    bn_eval = copy.deepcopy(bn).eval()
    x = const.reshape(1, -1, 1, 1).expand(1, bn.num_features, 2, 2).contiguous()
    return bn_eval(x).reshape(bn.num_features, -1)[:, 0]


# What the analysis knows of a value, per channel: (known, const) = "the channel is exactly
# const[c] wherever known[c]"; None when nothing is known (the input, the logits).
_Value = tuple[torch.Tensor, torch.Tensor] | None


def _constants(dense: nn.Module, graph: ChannelGraph) -> list[_Value]:
    """Propagate exact per-channel constants through the declared forward pass.

    A convolution whose output channel has all-zero weights gives exactly 0 there, whatever it
    reads; BatchNorm maps a constant to a constant (in float32, with the model's own
    statistics); ReLU keeps only what it makes exactly zero; an addition of two constants is a
    constant; pooling keeps constants.
    """
    values: list[_Value] = []
    for node in graph.nodes:
        src = [values[i] for i in node.inputs]
        if node.op in ("input", "linear"):
            out: _Value = None
        elif node.op == "conv":
            dead = _dead_out(dense.get_submodule(node.module))
            out = (dead, torch.zeros(dead.shape))
        elif src[0] is None:
            out = None
        elif node.op == "norm":
            out = (src[0][0], _bn_of(dense.get_submodule(node.module), src[0][1]))
        elif node.op == "relu":
            known, const = src[0]
            out = (known & (torch.relu(const) == 0), torch.zeros_like(const))
        elif node.op == "add":
            out = None if src[1] is None else (src[0][0] & src[1][0], src[0][1] + src[1][1])
        elif node.op == "pool":
            out = src[0]
        else:
            raise ExportError(f"unknown channel-graph operation {node.op!r}")
        values.append(out)
    return values


def _groups(dense: nn.Module) -> list[_Group]:
    """The channel groups of ``dense`` with, per consumer, which of its input channels are exactly zero."""
    if not isinstance(dense, RobinNetBase) or is_masked(dense):
        raise ExportError(
            f"channel shrinking supports the dense twins of robin models, got {type(dense).__name__}"
            + (" (masked)" if is_masked(dense) else "") + "; use dense_model(model, shrink=True)"
        )
    try:
        graph = dense.channel_graph()
    except NotImplementedError as e:
        raise ExportError(f"channel shrinking needs the model's channel graph: {e}") from e
    values = _constants(dense, graph)

    def zero(value: _Value, size: int) -> torch.Tensor:
        if value is None:
            return torch.zeros(size, dtype=torch.bool)
        return value[0] & (value[1] == 0)

    out = []
    for g in graph.groups():
        size = dense.get_submodule(g.producers[0]).out_channels
        consumers = [(name, zero(values[v], size)) for name, v in g.consumers]
        out.append(_Group(size, list(g.producers), list(g.norms), consumers))
    return out


def shrink_plan(dense: nn.Module) -> list[dict[str, Any]]:
    """Which channels :func:`shrink_model` keeps: one entry per channel group.

    Args:
        dense: a dense robin ResNet / WideResNet (e.g. from :func:`dense_model`).

    Returns:
        ``[{"producers": [...], "channels": C, "keep": [indices kept]}, ...]``.
    """
    plan = []
    for g in _groups(dense):
        removable = torch.ones(g.size, dtype=torch.bool)
        for name, input_zero in g.consumers:
            removable &= input_zero | _unused_in(dense.get_submodule(name))
        keep = torch.nonzero(~removable).flatten()
        if keep.numel() == 0:
            keep = torch.zeros(1, dtype=torch.long)  # keep one channel so every layer stays valid
        plan.append(dict(producers=list(g.producers), channels=g.size, keep=keep.tolist(),
                         norms=list(g.norms), consumers=[n for n, _ in g.consumers]))
    return plan


@torch.no_grad()
def shrink_model(dense: nn.Module) -> nn.Module:
    """A copy of ``dense`` with provably removable channels physically removed (eval mode).

    Args:
        dense: a dense robin ResNet / WideResNet in which pruned weights are zero
            (from :func:`dense_model`).

    Returns:
        A smaller model of the same class with the same logits. Its convolutions, BatchNorms
        and classifier are narrower; ``num_features`` is updated.
    """
    plan = shrink_plan(dense)
    small = copy.deepcopy(dense).eval()
    out_idx: dict[str, torch.Tensor] = {}
    in_idx: dict[str, torch.Tensor] = {}
    norm_idx: dict[str, torch.Tensor] = {}
    for g in plan:
        keep = torch.tensor(g["keep"], dtype=torch.long)
        for n in g["producers"]:
            out_idx[n] = keep
        for n in g["norms"]:
            norm_idx[n] = keep
        for n in g["consumers"]:
            in_idx[n] = keep
    names = set(out_idx) | set(in_idx) | set(norm_idx)
    for name in names:
        old = small.get_submodule(name)
        if isinstance(old, nn.Conv2d):
            w = old.weight
            w = w[out_idx[name]] if name in out_idx else w
            w = w[:, in_idx[name]] if name in in_idx else w
            new: nn.Module = nn.Conv2d(w.shape[1], w.shape[0], old.kernel_size, old.stride, old.padding,
                                       old.dilation, old.groups, bias=old.bias is not None, padding_mode=old.padding_mode)
            new.weight.copy_(w)
            if old.bias is not None:
                new.bias.copy_(old.bias[out_idx[name]] if name in out_idx else old.bias)
        elif isinstance(old, nn.Linear):
            w = old.weight[:, in_idx[name]]
            new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None)
            new.weight.copy_(w)
            if old.bias is not None:
                new.bias.copy_(old.bias)
        elif isinstance(old, nn.BatchNorm2d):
            idx = norm_idx[name]
            new = nn.BatchNorm2d(len(idx), eps=old.eps, momentum=old.momentum, affine=old.affine,
                                 track_running_stats=old.track_running_stats)
            if old.affine:
                new.weight.copy_(old.weight[idx])
                new.bias.copy_(old.bias[idx])
            if old.track_running_stats:
                new.running_mean.copy_(old.running_mean[idx])
                new.running_var.copy_(old.running_var[idx])
                new.num_batches_tracked.copy_(old.num_batches_tracked)
        else:
            raise ExportError(f"cannot shrink {name} of type {type(old).__name__}")
        parent, _, child = name.rpartition(".")
        setattr(small.get_submodule(parent) if parent else small, child, new)
    if not isinstance(small.head.fc, nn.Identity):
        small.num_features = small.head.fc.in_features
    before = sum(t.numel() for t in dense.parameters())
    after = sum(t.numel() for t in small.parameters())
    _log.info("shrinking removed %d of %d parameters", before - after, before)
    return small.eval()


# --- files ------------------------------------------------------------------------------------


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
        spec = dense_twin_spec(model)
        metadata = {"format": DENSE_FORMAT, "shrunk": json.dumps(bool(shrink))}
        if spec is not None:
            metadata.update(model=spec[0], kwargs=json.dumps(spec[1]))
        tensors = {k: v.contiguous() for k, v in sd.items()}
        save_safetensors(tensors, path, metadata, overwrite=overwrite)  # sorted header: same model -> same bytes
    return sd


_DENSE_LIMITS = SafetensorsLimits(max_metadata_chars=1 << 20)
"""A dense export's metadata (format, model name, kwargs) is short."""


def load_dense(path: str | os.PathLike) -> nn.Module:
    """Rebuild a model written by :func:`export_dense` from a robin timm model (eval mode).

    The dense twin is built from the metadata; for a shrunk export, each convolution,
    BatchNorm and linear layer is first narrowed to the shape stored in the file.
    """
    path = Path(path)
    if not path.is_file():
        raise ExportFormatError(f"no dense export at {path}")
    try:
        metadata = read_safetensors_header(path, _DENSE_LIMITS).metadata  # checked before the body is read
        if metadata.get("format") != DENSE_FORMAT:
            raise ExportFormatError(f"{path} is not a robin dense export (metadata format {metadata.get('format')!r:.60})")
        if "model" not in metadata:
            raise ExportFormatError(f"{path} comes from a model without a timm name; load it into your own architecture")
        spec = ModelSpec.parse(metadata["model"], parse_json(metadata.get("kwargs", "{}"), max_bytes=1 << 20),
                               source=f"{path}'s metadata kwargs")
        sd, _ = read_safetensors(path, _DENSE_LIMITS)
        bad = nonfinite_tensor(sd)
        if bad is not None:
            raise ExportFormatError(f"{path}: tensor {bad!r} holds NaN or Inf; a dense export must hold finite "
                                    "weights and statistics")
        model = build_model(spec)
    except ExportFormatError:
        raise
    except RobinError as e:
        raise ExportFormatError(f"{path}: {e}") from e
    except (OSError, FileContentError) as e:
        raise ExportFormatError(f"{path} is not a readable dense export ({e})") from None
    except Exception as e:
        raise ExportFormatError(f"{path} is not a readable dense export ({type(e).__name__}: {str(e)[:200]})") from e
    shrunk = metadata.get("shrunk", "false")
    if shrunk not in ("true", "false"):
        raise ExportFormatError(f"{path}: metadata 'shrunk' must be true or false, got {shrunk!r:.40}")
    if shrunk == "true":
        _narrow_to(model, sd)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        raise ExportFormatError(f"{path} does not fit {metadata['model']}: {e}") from e
    return model.eval()


@torch.no_grad()
def _narrow_to(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
    """Replace layers of ``model`` by narrower ones matching the shapes in ``sd`` (module surgery)."""
    for name, old in list(model.named_modules()):
        new: nn.Module | None = None
        if isinstance(old, nn.Conv2d) and f"{name}.weight" in sd:
            w = sd[f"{name}.weight"]
            if w.shape != old.weight.shape:
                new = nn.Conv2d(w.shape[1], w.shape[0], old.kernel_size, old.stride, old.padding, old.dilation,
                                old.groups, bias=old.bias is not None, padding_mode=old.padding_mode)
        elif isinstance(old, nn.Linear) and f"{name}.weight" in sd:
            w = sd[f"{name}.weight"]
            if w.shape != old.weight.shape:
                new = nn.Linear(w.shape[1], w.shape[0], bias=old.bias is not None)
        elif isinstance(old, nn.BatchNorm2d) and f"{name}.running_mean" in sd:
            c = sd[f"{name}.running_mean"].shape[0]
            if c != old.num_features:
                new = nn.BatchNorm2d(c, eps=old.eps, momentum=old.momentum, affine=old.affine)
        if new is not None:
            parent, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, child, new)
    if hasattr(model, "head") and isinstance(getattr(model.head, "fc", None), nn.Linear):
        model.num_features = model.head.fc.in_features
