"""Type tests for values read from files, configs and arguments.

``True`` is an ``int`` to Python, but a count, a seed or a size given as ``true`` in JSON or YAML
is a mistake: these tests refuse booleans where a number is wanted.
"""
from __future__ import annotations

from typing import Any

__all__ = ["is_int", "is_number"]


def is_int(value: Any) -> bool:
    """Whether ``value`` is an ``int`` and not a ``bool``."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """Whether ``value`` is an ``int`` or a ``float`` and not a ``bool`` (NaN and infinities included)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)
