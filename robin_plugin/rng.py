"""Seeded random streams and an isolated global RNG: the package's only sources of seeded randomness.

A *stream* is named by a tuple of parts, e.g. ``(seed, "body")`` for a model's fixed weights or
``(seed, "shuffle", epoch)`` for the trainer's data order. :func:`derive_seed` hashes the parts
to a 63-bit seed (SHA-256, stable across runs, machines and Python versions) and
:func:`stream_generator` turns it into a CPU ``torch.Generator``, so every stream is independent
of the others and of the global RNG, and can be regenerated from its parts alone.

Some code draws from the global RNG and cannot be given a generator (torchattacks' random
starts; several torchattacks attacks even call ``torch.manual_seed``). :func:`isolated_rng` runs
such code with the global CPU (and CUDA) state saved and restored, optionally seeded first.
"""
from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from typing import Any

import torch

from ._checks import is_int
from .errors import ConfigError

__all__ = ["derive_seed", "isolated_rng", "stream_generator"]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed in [0, 2**63 - 1] from ``parts``: the first 8 bytes of SHA-256("p0/p1/..."), little-endian.

    Example: ``derive_seed(0, "shuffle", 3)`` seeds epoch 3's data order of a run with seed 0.
    """
    digest = hashlib.sha256("/".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def stream_generator(seed: int, *stream: Any) -> torch.Generator:
    """A CPU generator for the random stream ``(seed, *stream)``, seeded with :func:`derive_seed`.

    Args:
        seed: the owner's seed (a model's ``seed``, a run's ``TrainConfig.seed``), an integer >= 0.
        stream: the stream's name, e.g. ``"body"``, ``"head/10"`` or ``"shuffle", epoch``.

    Raises:
        ConfigError: ``seed`` is not an integer >= 0.
    """
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    return torch.Generator().manual_seed(derive_seed(seed, *stream))


@contextlib.contextmanager
def isolated_rng(seed: int | None = None, device: torch.device | None = None) -> Iterator[None]:
    """Run the block with the global random state saved and restored afterwards; seeded first if ``seed`` is given.

    Args:
        seed: if not None, ``torch.manual_seed(seed)`` at the start of the block.
        device: the device the block draws on. A CUDA device: only its state is saved (under
            DDP a rank must not touch the other GPUs); a CPU device: only the CPU state; None:
            the CPU and every visible CUDA device.
    """
    if device is None:
        devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    else:
        devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        if seed is not None:
            torch.manual_seed(seed)
        yield
