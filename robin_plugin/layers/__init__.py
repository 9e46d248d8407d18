"""Masked binary layers and the pure selection functions behind them."""
from .masked import INITS, MaskedConv2d, MaskedLayer, MaskedLinear, init_scores, init_weight
from .selection import kept_count, straight_through, topk_keep, topk_mask, topk_mask_by_sort

__all__ = [
    "INITS", "MaskedConv2d", "MaskedLayer", "MaskedLinear", "init_scores", "init_weight",
    "kept_count", "straight_through", "topk_keep", "topk_mask", "topk_mask_by_sort",
]
