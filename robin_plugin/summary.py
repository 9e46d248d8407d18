"""Per-layer keep ratios, kept counts and storage figures of a model: :func:`summarize`, :func:`storage_bytes`.

:func:`storage_bytes` is the one storage figure of the package: ``robin models``, the
``results.json`` of ``robin train`` and the result file of ``robin eval`` all print it
(:func:`format_storage`). Every figure counts, besides the masked weights, every other
floating-point parameter and buffer of the model (BatchNorm statistics, input mean and std) at
fp32; a dense model's only figure is all of its floating-point tensors at fp32.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch.nn as nn

from .pruning import masked_layers

__all__ = ["LayerSummary", "ModelSummary", "binary_entropy", "format_storage", "storage_bytes", "summarize"]


def binary_entropy(k: float) -> float:
    """H(k) = -k log2 k - (1-k) log2 (1-k), in bits; 0 at k in {0, 1}."""
    if k <= 0.0 or k >= 1.0:
        return 0.0
    return -k * math.log2(k) - (1.0 - k) * math.log2(1.0 - k)


@dataclass(frozen=True)
class LayerSummary:
    """One masked layer: its name, weight shape, size n, keep ratio k and kept count."""

    name: str
    shape: tuple[int, ...]
    numel: int
    keep_ratio: float
    kept: int

    @property
    def entropy_bits(self) -> float:
        """Information in this layer's mask: n * H(kept / n) bits."""
        return self.numel * binary_entropy(self.kept / self.numel)


@dataclass(frozen=True)
class ModelSummary:
    """Totals and storage figures; ``str()`` gives a readable table.

    Storage figures (bytes) all include ``other_bytes``: BatchNorm running statistics and any
    remaining float parameters or buffers, at fp32.

    - ``fp32_bytes``: the dense model at 4 bytes per weight.
    - ``sign_mask_bytes``: one sign bit (+-1) and one mask bit per weight.
    - ``seeded_mask_bytes``: weights regenerated from the seed, one mask bit per weight.
    - ``entropy_bound_bytes``: the information bound, sum of n_i * H(k_i) bits.
    """

    layers: list[LayerSummary]
    other_bytes: int
    binary: bool = field(default=True)

    @property
    def total(self) -> int:
        return sum(layer.numel for layer in self.layers)

    @property
    def kept(self) -> int:
        return sum(layer.kept for layer in self.layers)

    @property
    def keep_ratio(self) -> float:
        return self.kept / self.total if self.total else 0.0

    @property
    def fp32_bytes(self) -> int:
        return 4 * self.total + self.other_bytes

    @property
    def sign_mask_bytes(self) -> int:
        return math.ceil(2 * self.total / 8) + self.other_bytes

    @property
    def seeded_mask_bytes(self) -> int:
        return math.ceil(self.total / 8) + self.other_bytes

    @property
    def entropy_bound_bytes(self) -> int:
        return math.ceil(sum(layer.entropy_bits for layer in self.layers) / 8) + self.other_bytes

    def storage(self) -> dict[str, int]:
        """The storage figures as a dict (bytes)."""
        return {
            "fp32_bytes": self.fp32_bytes,
            "sign_mask_bytes": self.sign_mask_bytes,
            "seeded_mask_bytes": self.seeded_mask_bytes,
            "entropy_bound_bytes": self.entropy_bound_bytes,
        }

    def __str__(self) -> str:
        name_w = max([len("layer")] + [len(layer.name) for layer in self.layers])
        lines = [f"{'layer':<{name_w}}  {'shape':<18} {'weights':>10} {'keep_ratio':>10} {'kept':>9}"]
        for layer in self.layers:
            shape = "x".join(str(s) for s in layer.shape)
            lines.append(
                f"{layer.name:<{name_w}}  {shape:<18} {layer.numel:>10,} {layer.keep_ratio:>10.4f} {layer.kept:>9,}"
            )
        lines.append(f"{'total':<{name_w}}  {'':<18} {self.total:>10,} {self.keep_ratio:>10.4f} {self.kept:>9,}")
        lines.append("storage:")
        lines.append(f"  dense fp32                 {_mb(self.fp32_bytes)}")
        lines.append(f"  +-1 signs + bit mask        {_mb(self.sign_mask_bytes)}  ({_times(self.fp32_bytes, self.sign_mask_bytes)})")
        lines.append(f"  seeded weights + bit mask   {_mb(self.seeded_mask_bytes)}  ({_times(self.fp32_bytes, self.seeded_mask_bytes)})")
        lines.append(f"  information bound n*H(k)    {_mb(self.entropy_bound_bytes)}  ({_times(self.fp32_bytes, self.entropy_bound_bytes)})")
        return "\n".join(lines)


def _times(a: int, b: int) -> str:
    return f"{a / b:.1f}x smaller" if b else "n/a"


def _mb(n: int) -> str:
    return f"{n / 1e6:10.3f} MB"


def summarize(model: nn.Module) -> ModelSummary:
    """Summarise the masked layers of ``model`` (see :class:`ModelSummary`)."""
    layers = [
        LayerSummary(name, tuple(m.weight.shape), m.weight.numel(), m.keep_ratio, m.kept)
        for name, m in masked_layers(model)
    ]
    masked_ids = {id(t) for _, m in masked_layers(model) for t in (m.weight, m.scores)}
    other = 0
    for _, t in list(model.named_parameters()) + list(model.named_buffers()):
        if id(t) in masked_ids or not t.is_floating_point():
            continue
        other += 4 * t.numel()
    return ModelSummary(layers, other)


def storage_bytes(model: nn.Module) -> dict[str, int]:
    """The storage figures of ``model`` in bytes: the package's one definition.

    A masked model: the four figures of :class:`ModelSummary` (``fp32_bytes``,
    ``sign_mask_bytes``, ``seeded_mask_bytes``, ``entropy_bound_bytes``). A model without masked
    layers: ``{"fp32_bytes": 4 * (its floating-point parameters and buffers)}``, the same rule
    as a masked model's ``fp32_bytes`` (BatchNorm statistics included, integer buffers not).
    """
    s = summarize(model)
    return s.storage() if s.layers else {"fp32_bytes": s.fp32_bytes}


def format_storage(storage: Mapping[str, int]) -> str:
    """``"fp32_bytes 44.698 MB, sign_mask_bytes ..."``: how every report prints :func:`storage_bytes`."""
    return ", ".join(f"{k} {v / 1e6:.3f} MB" for k, v in storage.items())

