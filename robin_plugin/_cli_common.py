"""Argument helpers shared by the ``robin`` sub-commands (CLI layer only)."""
from __future__ import annotations

from typing import Any

import timm

from . import models  # noqa: F401  (registers the robin models with timm)
from .errors import ConfigError, UnknownNameError, closest
from .formats.files import FileContentError, parse_json

__all__ = ["parse_model_kwargs", "check_model_name"]


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
