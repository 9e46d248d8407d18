"""Deprecated alias of :mod:`robin_plugin.formats.codec`, where the codings moved (removed in the next release).

The mask codings now sit below the models, which decode compact files and never import
``robin_plugin.export``.
"""
from __future__ import annotations

import warnings

from ..formats.codec import *  # noqa: F401,F403
from ..formats.codec import __all__  # noqa: F401

warnings.warn(
    "robin_plugin.export.codec moved to robin_plugin.formats.codec; the old path goes in the next release",
    DeprecationWarning, stacklevel=2,
)
