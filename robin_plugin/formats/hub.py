"""The hub folder's ``config.json``: what timm reads to build the model of a hub folder.

A hub folder (``robin export --format hub``) holds ``config.json``, ``model.safetensors`` and a
``README.md`` model card; timm builds the model from ``config.json`` (``architecture``,
``model_args``, ``pretrained_cfg``) and reads ``model.safetensors`` into it. robin adds a
``robin`` entry (:data:`HUB_FORMAT`, the encoding, the keep ratio, the input statistics).
What goes into the config is :func:`robin_plugin.export.hub.hub_config`; this module writes and
reads the file.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ..io import read_limited
from .files import parse_json

__all__ = ["HUB_CONFIG", "HUB_FORMAT", "MAX_HUB_CONFIG_BYTES", "read_hub_config", "write_hub_config"]

HUB_FORMAT = "robin_hub/1"
HUB_CONFIG = "config.json"
"""File name of the config in a hub folder (timm's name)."""
MAX_HUB_CONFIG_BYTES = 2**20
"""Size limit of a hub folder's config.json read by robin (robin writes about 2 KiB)."""


def write_hub_config(folder: str | os.PathLike, config: dict[str, Any]) -> Path:
    """Write ``config`` as ``folder/config.json`` (sorted keys, indented: same model -> same bytes).

    The folder is the hub folder's private temporary folder, renamed into place when complete.
    """
    path = Path(folder) / HUB_CONFIG
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return path


def read_hub_config(folder: str | os.PathLike) -> dict[str, Any] | None:
    """The config of the hub folder ``folder``, or None if it is not one.

    A hub folder's ``config.json`` is a JSON object naming an ``architecture`` and its
    ``model_args``; it is read with a size and depth limit before anything parses it. The model
    arguments are not checked here: timm and the model spec check them when they build the model.
    """
    try:
        config = parse_json(read_limited(Path(folder) / HUB_CONFIG, MAX_HUB_CONFIG_BYTES))
    except (OSError, ValueError):  # no config, unreadable, too large, not JSON (FileContentError is a ValueError)
        return None
    if isinstance(config, dict) and "architecture" in config and "model_args" in config:
        return config
    return None
