"""Channel graphs: a model family's own declaration of which tensors share channels.

A channel graph is the model's forward pass written down as the few operations that matter for
reasoning about channels: a convolution makes new channels, BatchNorm, ReLU and pooling keep
them, and a residual addition ties the channels of its two inputs together. Each robin family
declares its graph next to its ``forward`` (``RobinNetBase.channel_graph``, and
``channel_flow`` on each block), with the modules themselves, never attribute-name strings;
:meth:`ChannelGraph.groups` derives from it the channel groups (which convolutions, BatchNorms
and shortcuts share output channels, and which layers read them).

Channel shrinking (:func:`robin_plugin.export.dense.shrink_model`) reads this declaration; it
contains no architecture of its own.

Example (a basic residual block, as :class:`robin_plugin.models.robin_resnet.BasicBlock`
declares it)::

    def channel_flow(self, g: ChannelGraph, x: int) -> int:
        h = g.relu(g.norm(self.bn1, g.conv(self.conv1, x)))
        main = g.norm(self.bn2, g.conv(self.conv2, h))
        return g.relu(g.add(main, x))
"""
from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn

__all__ = ["OPS", "ChannelGraph", "ChannelGroup", "Node"]

OPS = ("input", "conv", "norm", "relu", "add", "pool", "linear")
"""The operations of a channel graph; see :class:`ChannelGraph` for what each means."""


@dataclass(frozen=True)
class Node:
    """One operation of a channel graph; it produces the value with its own index.

    Attributes:
        op: one of :data:`OPS`.
        inputs: indices of the values it reads (earlier nodes).
        module: the name of its module in the model (``conv``, ``norm`` and ``linear``), else None.
    """

    op: str
    inputs: tuple[int, ...]
    module: str | None = None


@dataclass(frozen=True)
class ChannelGroup:
    """Channels shared by the values joined by residual additions.

    Attributes:
        producers: convolutions whose output channels these are, in forward order.
        norms: BatchNorms acting on these channels, in forward order.
        consumers: ``(layer, value)`` for each convolution or linear layer reading these
            channels, with the index of the value it reads, in forward order.
    """

    producers: tuple[str, ...]
    norms: tuple[str, ...]
    consumers: tuple[tuple[str, int], ...]


class ChannelGraph:
    """A model's forward pass as channel operations, built by the model itself.

    Each method appends one node and returns the index of the value it produces:

    - :meth:`input`: the model's input (its channels are never removed);
    - :meth:`conv`: a convolution: new channels (its output channels), whatever it reads;
    - :meth:`norm`: a BatchNorm over the channels it reads (an ``nn.Identity`` passes through);
    - :meth:`relu`: ReLU, channel by channel;
    - :meth:`add`: a residual addition: both inputs and the output share their channels;
    - :meth:`pool`: global pooling, channel by channel;
    - :meth:`linear`: a classifier reading channels; its outputs (logits) are never removed.

    Args:
        model: the model the modules belong to (their names are looked up in it).
    """

    def __init__(self, model: nn.Module):
        self.model = model  # kept alive: the names are looked up by the modules' ids
        self._names = {id(m): name for name, m in model.named_modules()}
        self.nodes: list[Node] = []

    def _node(self, op: str, inputs: tuple[int, ...], module: nn.Module | None = None) -> int:
        name = None
        if module is not None:
            if id(module) not in self._names:
                raise ValueError(f"{type(module).__name__} is not a module of the model this graph describes")
            name = self._names[id(module)]
        for i in inputs:
            if not 0 <= i < len(self.nodes):
                raise ValueError(f"a {op} node reads value {i}, which no earlier node produced")
        self.nodes.append(Node(op, inputs, name))
        return len(self.nodes) - 1

    def input(self) -> int:
        """The model's input image (its channels are never removed)."""
        return self._node("input", ())

    def conv(self, module: nn.Module, x: int) -> int:
        """Convolution ``module`` reading value ``x``: new channels, its output channels."""
        return self._node("conv", (x,), module)

    def norm(self, module: nn.Module, x: int) -> int:
        """BatchNorm ``module`` over value ``x``'s channels (an ``nn.Identity`` adds no node)."""
        if isinstance(module, nn.Identity):
            return x
        return self._node("norm", (x,), module)

    def relu(self, x: int) -> int:
        """ReLU of value ``x``, channel by channel."""
        return self._node("relu", (x,))

    def add(self, a: int, b: int) -> int:
        """Residual addition of values ``a`` and ``b``: all three share their channels."""
        return self._node("add", (a, b))

    def pool(self, x: int) -> int:
        """Global pooling of value ``x``, channel by channel."""
        return self._node("pool", (x,))

    def linear(self, module: nn.Module, x: int) -> int:
        """Classifier ``module`` reading value ``x``'s channels; its outputs are never removed."""
        return self._node("linear", (x,), module)

    def groups(self) -> list[ChannelGroup]:
        """The channel groups, ordered by where their first channels are made.

        A convolution (or the input, or a linear layer) makes a new set of channels; norm, ReLU
        and pooling keep their input's; an addition merges its inputs' sets. A group is a merged
        set made by at least one convolution (the input's and the logits' are not groups).
        """
        parent: list[int] = []  # union-find over channel sets, by creation order

        def find(i: int) -> int:
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        space: list[int] = []  # channel set of each value
        for node in self.nodes:
            if node.op in ("input", "conv", "linear"):
                parent.append(len(parent))
                space.append(parent[-1])
            elif node.op == "add":
                a, b = find(space[node.inputs[0]]), find(space[node.inputs[1]])
                parent[max(a, b)] = min(a, b)  # the older set names the group
                space.append(min(a, b))
            else:
                space.append(space[node.inputs[0]])
        producers: dict[int, list[str]] = {}
        norms: dict[int, list[str]] = {}
        consumers: dict[int, list[tuple[str, int]]] = {}
        for i, node in enumerate(self.nodes):
            if node.op == "conv":
                producers.setdefault(find(space[i]), []).append(node.module)
            elif node.op == "norm":
                norms.setdefault(find(space[i]), []).append(node.module)
            if node.op in ("conv", "linear"):
                consumers.setdefault(find(space[node.inputs[0]]), []).append((node.module, node.inputs[0]))
        return [
            ChannelGroup(tuple(producers[root]), tuple(norms.get(root, ())), tuple(consumers.get(root, ())))
            for root in sorted(producers)
        ]
