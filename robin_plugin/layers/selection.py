"""Pure functions for top-k mask selection and its straight-through gradient.

The mask of a layer keeps the ``count`` entries with the largest ``|score|``. Ties are broken
deterministically by position (lower flat index wins), which is exactly what a stable
descending sort would select. Selection finds the threshold with a partial ``torch.topk`` of
the smaller side instead of sorting the whole layer on every forward pass.
"""
from __future__ import annotations

import torch

from .._checks import is_number
from ..errors import ConfigError

__all__ = ["check_keep_ratio", "kept_count", "topk_keep", "topk_mask", "topk_mask_by_sort", "straight_through"]


def check_keep_ratio(keep_ratio: float) -> float:
    """Return ``keep_ratio`` as a float, or raise :class:`ConfigError` if it is not a number in (0, 1].

    The package's one range check of a keep ratio (also :func:`robin_plugin.pruning.check_keep_ratio`);
    it sits here, below the masked layers, so that they can use it too.
    """
    if not is_number(keep_ratio) or not 0.0 < keep_ratio <= 1.0:
        raise ConfigError(f"keep_ratio is the fraction of weights KEPT and must be in (0, 1], got {keep_ratio!r:.80}")
    return float(keep_ratio)


def kept_count(numel: int, keep_ratio: float) -> int:
    """Number of weights a layer of ``numel`` weights keeps at ``keep_ratio``.

    ``round(keep_ratio * numel)`` (Python rounding), and never fewer than 1.

    Args:
        numel: number of weights in the layer, >= 1.
        keep_ratio: fraction of weights kept, in (0, 1].
    """
    if numel < 1:
        raise ConfigError(f"a layer needs at least one weight, got numel={numel}")
    return min(numel, max(1, round(check_keep_ratio(keep_ratio) * numel)))


def topk_mask(abs_scores: torch.Tensor, count: int) -> torch.Tensor:
    """0/1 mask (same shape and dtype as ``abs_scores``) keeping the ``count`` largest entries.

    Exact and deterministic: equals :func:`topk_mask_by_sort`, ties broken by lower flat index.
    Cost: one partial ``topk`` plus one or (with ties at the threshold, or off the CPU) four
    elementwise passes; no full sort.

    Args:
        abs_scores: non-negative scores of any shape (usually ``|score|``), no NaNs.
        count: number of entries to keep, 1 <= count <= numel.
    """
    keep, _ = topk_keep(abs_scores, count)
    return keep.to(abs_scores.dtype).reshape(abs_scores.shape)


def topk_keep(abs_scores: torch.Tensor, count: int, hint: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`topk_mask` as a flat boolean tensor, with the threshold it used.

    Args:
        abs_scores: non-negative scores of any shape, no NaNs.
        count: number of entries to keep, 1 <= count <= numel.
        hint: a value believed to lie a little below the threshold (e.g. the previous step's).
            It only changes the speed, never the result: when at least ``count`` entries are
            >= ``hint``, the threshold is searched among those entries only; otherwise among all.

    Returns:
        ``(keep, threshold)``: keep (n,) bool, exactly ``count`` True; threshold the
        ``count``-th largest value (0-d tensor).
    """
    flat = abs_scores.detach().reshape(-1)  # (n,)
    n = flat.numel()
    if not 1 <= count <= n:
        raise ConfigError(f"count must be in [1, {n}], got {count}")
    threshold = _kth_largest(flat, count, hint)
    keep = flat >= threshold
    # ties at the threshold may straddle the cut; then keep the first of them by index. On the CPU
    # the check is free and skips three passes; on a GPU it would wait for the device (and break a
    # compiled graph), so there the tie-breaking passes always run (same result)
    eager_cpu = flat.device.type == "cpu" and not torch.compiler.is_compiling()
    if not eager_cpu or int(keep.sum()) != count:
        above = flat > threshold
        ties = flat == threshold
        need = count - above.sum()
        keep = above | (ties & (torch.cumsum(ties, 0) <= need))
    return keep, threshold


def _kth_largest(flat: torch.Tensor, count: int, hint: float | None = None) -> torch.Tensor:
    """The ``count``-th largest value of ``flat`` (exact), by ``topk`` of the smaller side.

    With ``hint``: if at least ``count`` entries are >= hint, the ``count``-th largest of all is
    among them and equals their ``count``-th largest, so only they are searched.
    """
    if hint is not None:
        candidates = flat[flat >= hint]
        if candidates.numel() >= count:
            flat = candidates
    n = flat.numel()
    if count <= n - count + 1:
        return torch.topk(flat, count, sorted=False).values.min()
    return torch.topk(flat, n - count + 1, largest=False, sorted=False).values.max()


def topk_mask_by_sort(abs_scores: torch.Tensor, count: int) -> torch.Tensor:
    """Reference selection by a full stable sort; used by tests and benchmarks only."""
    flat = abs_scores.detach().reshape(-1)
    order = torch.sort(flat, descending=True, stable=True).indices
    mask = torch.zeros_like(flat)
    mask[order[:count]] = 1
    return mask.reshape(abs_scores.shape)


class _StraightThrough(torch.autograd.Function):
    """Forward: return ``mask``. Backward: pass the gradient to ``abs_scores`` unchanged."""

    @staticmethod
    def forward(ctx, abs_scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return mask.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def straight_through(scores: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mask with a straight-through gradient to ``scores`` through ``|scores|``.

    The value is ``mask``; the gradient with respect to ``scores`` is
    ``grad * sign(scores)`` (autograd's derivative of ``abs``). Without the sign every
    negative score would be pushed the wrong way and the network would not learn.
    """
    return _StraightThrough.apply(scores.abs(), mask)
