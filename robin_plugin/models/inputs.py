"""Model inputs: images in [0, 1], their check, and the normalisation every robin model applies inside."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from ..data.base import pixel_range_problem
from ..errors import ConfigError, InputError

__all__ = [
    "CIFAR100_MEAN", "CIFAR100_STD", "CIFAR10_MEAN", "CIFAR10_STD", "IMAGENET_MEAN", "IMAGENET_STD", "InputNormalize",
    "check_images", "check_stats", "default_stats",
]

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2471, 0.2435, 0.2616)
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

class InputNormalize(nn.Module):
    """Normalise images in [0, 1] with the model's own mean and std.

    Models take inputs in [0, 1] (the RobustBench convention) so attacks work in pixel units.
    ``mean`` and ``std`` are persistent buffers: they travel in the state dict, so a model
    loaded from a file normalises as the saved model did, whatever statistics it was built with.

    Inputs are validated at the package's boundaries (CLI, :func:`robin_plugin.evaluate`, the
    trainer's data), not here: ``forward`` does no data-dependent check, so it costs no host
    synchronisation and compiles into one graph.

    Args:
        in_chans: expected channel count C.
        mean, std: per-channel statistics (length C; std > 0, all finite).
        check_inputs: debugging aid: validate every batch with :func:`check_images` (shape,
            dtype, channels, NaN/Inf, values in [0, 1]); one min/max reduction and a host sync
            per forward pass. Default False.

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, in_chans: int, mean: tuple[float, ...], std: tuple[float, ...], check_inputs: bool = False):
        super().__init__()
        check_stats(in_chans, mean, std)
        self.in_chans = in_chans
        self.check_inputs = bool(check_inputs)
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.check_inputs and not torch.jit.is_scripting():  # a Python-only debugging check
            check_images(x, self.in_chans, self.mean.dtype)
        return (x - self.mean) / self.std

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs)
        mean, std = state_dict.get(prefix + "mean"), state_dict.get(prefix + "std")
        if mean is None or std is None:
            return  # a missing key, which load_state_dict reports
        if mean.shape == self.mean.shape and std.shape == self.std.shape:
            try:
                check_stats(self.in_chans, mean.flatten().tolist(), std.flatten().tolist())
            except ConfigError as e:
                error_msgs.append(f"{prefix}mean/std: {e}")

    def extra_repr(self) -> str:
        return f"in_chans={self.in_chans}, check_inputs={self.check_inputs}"


def check_stats(in_chans: int, mean, std) -> None:
    """Raise :class:`ConfigError` unless mean and std have ``in_chans`` finite values and std > 0."""
    if len(mean) != in_chans or len(std) != in_chans:
        raise ConfigError(f"mean and std need {in_chans} values (one per channel), got {list(mean)} and {list(std)}")
    if not all(math.isfinite(m) for m in mean):
        raise ConfigError(f"mean values must be finite, got {list(mean)}")
    if not all(math.isfinite(s) and s > 0 for s in std):
        raise ConfigError(f"std values must be finite and > 0, got {list(std)}")


def check_images(x: torch.Tensor, in_chans: int, dtype: torch.dtype | None = None) -> None:
    """Raise :class:`InputError` unless ``x`` is a float (N, in_chans, H, W) batch in [0, 1].

    The input contract of every robin model: float images in [0, 1] (the model normalises
    inside), shape (N, C, H, W); with ``dtype`` (the model's parameter dtype) also of that
    dtype, so a float64 batch for a float32 model gets this message, not torch's.
    """
    if not isinstance(x, torch.Tensor):
        raise InputError(f"expected a torch.Tensor of images, got {type(x).__name__}")
    if x.dim() != 4:
        raise InputError(f"expected images of shape (N, {in_chans}, H, W), got shape {tuple(x.shape)}")
    if x.shape[1] != in_chans:
        raise InputError(
            f"expected {in_chans} input channel(s), got {x.shape[1]} (shape {tuple(x.shape)}); "
            f"build the model with in_chans={x.shape[1]} for such inputs"
        )
    if not x.is_floating_point():
        raise InputError(f"expected floating-point images in [0, 1], got dtype {x.dtype}")
    if dtype is not None and x.dtype != dtype:
        raise InputError(f"expected {str(dtype).removeprefix('torch.')} images (the model's dtype), got dtype "
                         f"{x.dtype}; convert them with images.to({dtype})")
    problem = pixel_range_problem(x)
    if problem == "NaN or Inf":
        raise InputError("images contain NaN or Inf")
    if problem is not None:
        raise InputError(f"images must lie in [0, 1] (models normalise inside), got {problem}")


def default_stats(in_chans: int, mean, std) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """CIFAR-10 statistics for RGB; 0.5 / 0.25 per channel otherwise, unless given."""
    if mean is None:
        mean = CIFAR10_MEAN if in_chans == 3 else (0.5,) * in_chans
    if std is None:
        std = CIFAR10_STD if in_chans == 3 else (0.25,) * in_chans
    return tuple(float(m) for m in mean), tuple(float(s) for s in std)

