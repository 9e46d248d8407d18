"""The classifier head of every robin model: pooling, dropout, classifier, optional BatchNorm on the logits."""
from __future__ import annotations

import torch
import torch.nn as nn

from .args import check_global_pool
from .channels import ChannelGraph
from .factory import LayerFactory

__all__ = ["ClassifierHead"]


class ClassifierHead(nn.Module):
    """Global pooling, dropout, classifier, and (optionally) a final BatchNorm on the logits.

    Args:
        num_features: channels C of the features it takes.
        num_classes: number of classes; 0 gives no classifier (the head returns pooled features).
        factory: the model's layer constructors (masked or dense classifier).
        last_bn: non-affine BatchNorm on the logits (only with a classifier).
        global_pool: ``"avg"`` (global average pool) or ``""`` (no pooling: without a
            classifier the head returns the features unchanged; with one, the classifier acts
            on each position like a 1x1 convolution and gives logit maps).
        drop_rate: dropout probability on the pooled features, before the classifier.

    Shapes: ``"avg"``: (N, C, H, W) -> (N, num_classes), or (N, C) with ``pre_logits=True`` or
    ``num_classes=0``. ``""``: (N, C, H, W) -> (N, num_classes, H, W), or (N, C, H, W) with
    ``pre_logits=True`` or ``num_classes=0``.
    """

    def __init__(
        self, num_features: int, num_classes: int, factory: LayerFactory, last_bn: bool,
        global_pool: str = "avg", drop_rate: float = 0.0,
    ):
        super().__init__()
        check_global_pool("global_pool", global_pool)
        self.pool_type = global_pool
        self.per_position = not global_pool and num_classes > 0  # logit maps, see forward
        self.drop = nn.Dropout(drop_rate) if drop_rate > 0 else nn.Identity()
        self.fc = factory.linear(num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.last_bn = factory.norm1d(num_classes) if (last_bn and num_classes > 0) else nn.Identity()

    def forward(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if self.pool_type == "avg":
            x = x.mean(dim=(2, 3))  # (N, C)
        x = self.drop(x)
        if pre_logits:
            return x
        if not self.per_position:
            return self.last_bn(self.fc(x))  # (N, num_classes), or x itself without a classifier
        logits = self.fc(x.flatten(2).transpose(1, 2))  # (N, H*W, num_classes)
        logits = self.last_bn(logits.transpose(1, 2))  # (N, num_classes, H*W): BatchNorm1d over classes
        return logits.reshape(x.shape[0], -1, x.shape[2], x.shape[3])  # (N, num_classes, H, W)

    def channel_flow(self, g: ChannelGraph, x: int) -> None:
        """Declare the head in the channel graph ``g``: pooling, then the classifier reading value ``x``."""
        if self.pool_type == "avg":
            x = g.pool(x)
        if not isinstance(self.fc, nn.Identity):
            g.linear(self.fc, x)

    def extra_repr(self) -> str:
        return f"pool_type={self.pool_type!r}"

