"""Channel shrinking: remove the channels of a dense model whose removal cannot change the output.

:func:`shrink_model` removes channels whose removal cannot change the
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

:func:`narrow_to` is the inverse step of loading a shrunk export: it narrows a freshly built
model's layers to the shapes stored in the file. :func:`pruned_channels` counts the output
channels whose weights are all pruned, in a masked model.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn

from ..models.base import RobinNetBase
from ..models.channels import ChannelGraph
from ..pruning import is_masked, masked_layers
from .compact import ExportError

__all__ = ["narrow_to", "pruned_channels", "shrink_model", "shrink_plan"]

_log = logging.getLogger(__name__)


def pruned_channels(model: nn.Module) -> dict[str, int]:
    """Per masked layer, the number of output channels (filters / rows) whose weights are all pruned."""
    out = {}
    for name, m in masked_layers(model):
        mask = m.mask().detach().reshape(m.weight.shape[0], -1)
        out[name] = int((mask == 0).all(dim=1).sum())
    return out



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



@torch.no_grad()
def narrow_to(model: nn.Module, sd: dict[str, torch.Tensor]) -> None:
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
