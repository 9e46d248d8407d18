"""Deprecated alias of :mod:`robin_plugin.models.timm_loading`, where this moved (removed in the next release).

How robin models accept files is the models' own business; they no longer import ``export``.
``checkpoint_filter_fn`` and ``compact_load_pre_hook`` stay importable from ``robin_plugin.export``.
"""
from __future__ import annotations

import warnings

from ..models.timm_loading import checkpoint_filter_fn, compact_load_pre_hook  # noqa: F401

__all__ = ["checkpoint_filter_fn", "compact_load_pre_hook"]

warnings.warn(
    "robin_plugin.export.timm_loading moved to robin_plugin.models.timm_loading; the old path goes in the next release",
    DeprecationWarning, stacklevel=2,
)
