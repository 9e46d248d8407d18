"""Helpers for DistributedDataParallel runs (``torchrun``), on CUDA and on the CPU.

PyTorch's ``SyncBatchNorm`` only runs on CUDA. :class:`CpuSyncBatchNorm` does the same on the
CPU (gloo): batch statistics are summed over all ranks with the autograd-aware
``torch.distributed.nn.functional.all_reduce``, so a run on k processes with global batch B
normalises exactly as one process with batch B does.
"""
from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn as nn
import torch.nn.functional as F
from torch.distributed.nn.functional import all_reduce

__all__ = ["CpuSyncBatchNorm", "convert_sync_batchnorm", "wrap_ddp", "all_gather_cat"]


class CpuSyncBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm whose training statistics are computed over the whole distributed batch.

    Same arguments and state as ``nn.BatchNorm2d`` / ``BatchNorm1d``; in eval mode or outside a
    process group it is plain BatchNorm. Shapes: (N, C, *) -> (N, C, *).
    """

    def _check_input_dim(self, x: torch.Tensor) -> None:
        if x.dim() < 2:
            raise ValueError(f"expected at least 2-D input, got {x.dim()}-D")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(x)
        dims = [0] + list(range(2, x.dim()))
        count = torch.tensor([x.numel() / x.shape[1]], dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dims), (x * x).sum(dims), count])  # (2C + 1,)
        stats = all_reduce(stats)  # summed over ranks, gradient flows back to every rank
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c:2 * c] / n - mean * mean  # biased, as BatchNorm normalises with
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.mul_(1 - m).add_(mean.detach() * m)
                self.running_var.mul_(1 - m).add_(var.detach() * (n / (n - 1)) * m)
        shape = [1, c] + [1] * (x.dim() - 2)
        out = (x - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm by a synchronised one (torch's on CUDA, ours on the CPU), in place."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in list(model.named_children()):
        if isinstance(child, nn.modules.batchnorm._BatchNorm) and not isinstance(child, CpuSyncBatchNorm):
            new = CpuSyncBatchNorm(child.num_features, child.eps, child.momentum, child.affine, child.track_running_stats,
                                   device=child.running_mean.device if child.running_mean is not None else None)
            new.load_state_dict(child.state_dict())
            new.train(child.training)
            setattr(model, name, new)
        else:
            convert_sync_batchnorm(child, device)
    return model


def wrap_ddp(model: nn.Module, device: torch.device) -> nn.parallel.DistributedDataParallel:
    """``model`` in DistributedDataParallel, for the training forward pass (``TrainState.net``).

    Buffers are not broadcast: the fixed weights and statistics are identical on every rank (same
    seed), and synchronised BatchNorm keeps the running statistics equal.
    """
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None, broadcast_buffers=False,
    )


def all_gather_cat(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every rank along dim 0 (all ranks must pass the same shape)."""
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)
