"""Typed errors raised by robin_plugin at its boundaries.

Every error names the bad value and what would be valid. All derive from
:class:`RobinError`, so callers can catch the package's errors in one place; each also derives
from the closest built-in type (``ValueError``, ``KeyError`` ...) so generic handlers keep working.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "RobinError",
    "CheckpointError",
    "ConfigError",
    "InputError",
    "UnknownNameError",
    "closest",
]


class RobinError(Exception):
    """Base class of every error robin_plugin raises on purpose."""


class ConfigError(RobinError, ValueError):
    """A setting (keep ratio, p, eps, ...) is outside its valid range or has the wrong type."""


class CheckpointError(RobinError, ValueError):
    """A training checkpoint or run folder is missing, truncated, corrupt, foreign, or does not match the run."""


class InputError(RobinError, ValueError):
    """A tensor handed to a model or attack has the wrong shape, dtype, channels or range."""


class UnknownNameError(RobinError, KeyError):
    """A name (init scheme, preset, config key, ...) is not one of the known choices."""

    def __str__(self) -> str:  # KeyError would otherwise quote the whole message
        return str(self.args[0]) if self.args else ""


def closest(name: str, choices: Iterable[str]) -> str:
    """Return ``" (did you mean 'x'?)"`` for the closest choice, or ``""`` if none is close.

    A name more than three times as long as every choice cannot be close (difflib's ratio
    ``2 * matches / (len(name) + len(choice))`` stays under the 0.5 cutoff), so it is not
    compared at all: a huge name read from a file costs nothing here.
    """
    choices = [c for c in choices if isinstance(c, str)]
    if not isinstance(name, str) or not choices or len(name) > 3 * max(len(c) for c in choices):
        return ""
    match = difflib.get_close_matches(name, choices, n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
