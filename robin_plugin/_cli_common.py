"""Argument helpers shared by the ``robin`` sub-commands (CLI layer only)."""
from __future__ import annotations

import os
import stat
import tempfile
from typing import Any

import timm

from . import models  # noqa: F401  (registers the robin models with timm)
from .errors import ConfigError, UnknownNameError, closest
from .formats.files import FileContentError, parse_json

__all__ = ["check_model_name", "keep_matplotlib_out_of_home", "parse_model_kwargs"]


def parse_model_kwargs(text: str) -> dict[str, Any]:
    """``--model-kwargs`` as a dict: a JSON object; list values of ``mean`` / ``std`` become tuples."""
    try:
        kwargs = parse_json(text, max_bytes=1 << 20)
    except FileContentError as e:
        raise ConfigError(f"--model-kwargs must be a JSON object, got {text!r:.200} ({e})") from None
    if not isinstance(kwargs, dict):
        raise ConfigError(f"--model-kwargs must be a JSON object, got {text!r}")
    for key in ("mean", "std"):
        if isinstance(kwargs.get(key), list):
            kwargs[key] = tuple(kwargs[key])
    return kwargs


def check_model_name(name: str) -> str:
    """Return ``name`` if timm knows it, else raise :class:`UnknownNameError` with the closest robin model."""
    if not timm.is_model(name):
        names = timm.list_models("robin_*")
        raise UnknownNameError(f"unknown model {name!r}{closest(name, names)}; robin models: {', '.join(names)}")
    return name


def keep_matplotlib_out_of_home() -> None:
    """Point matplotlib's config and cache folder (``MPLCONFIGDIR``) away from the home directory.

    matplotlib creates ``~/.config/matplotlib`` and ``~/.cache/matplotlib`` (its font cache) on
    import; a command that only draws PNGs with the Agg canvas should not write there. Unless the
    user set ``MPLCONFIGDIR``, it becomes ``<tmp>/robin-matplotlib-<uid>`` (created 0700, used
    only if it is our own folder and not a link), or else a fresh temporary folder. Call it
    before matplotlib is imported (``robin inspect``, ``robin leaderboard``).
    """
    if os.environ.get("MPLCONFIGDIR"):
        return
    uid = os.getuid() if hasattr(os, "getuid") else 0
    folder = os.path.join(tempfile.gettempdir(), f"robin-matplotlib-{uid}")
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        st = os.lstat(folder)
        ours = stat.S_ISDIR(st.st_mode) and (not hasattr(os, "getuid") or st.st_uid == uid) and not st.st_mode & 0o022
    except OSError:
        ours = False
    os.environ["MPLCONFIGDIR"] = folder if ours else tempfile.mkdtemp(prefix="robin-matplotlib-")
