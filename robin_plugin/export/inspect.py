"""Deprecated alias of :mod:`robin_plugin.viz`, where the ``robin inspect`` viewer moved (removed in the next release).

Tables and plots of a model are a viewer, not an export.
"""
from __future__ import annotations

import warnings

from ..viz import *  # noqa: F401,F403
from ..viz import __all__  # noqa: F401

warnings.warn(
    "robin_plugin.export.inspect moved to robin_plugin.viz; the old path goes in the next release",
    DeprecationWarning, stacklevel=2,
)
