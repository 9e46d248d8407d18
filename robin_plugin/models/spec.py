"""The model spec: which robin architecture a file names, and the only arguments it may pass.

Every file format that names a model (a compact file's header, a dense export's metadata, a run's
``config.json``, ``--model-kwargs``, a YAML config, a timm hub folder's ``config.json``) carries a
spec: a timm model name and keyword arguments. A file is data: it must never choose what code
runs, what is downloaded or how much memory is taken. So a spec is validated here before
anything is built:

- the name must be a registered robin model;
- only the arguments of :class:`~robin_plugin.models.args.ModelArgs` and the model class's own
  (its ``arch_args``: ``width``, ``depth`` ...) pass, each with its check;
  ``pretrained``, ``pretrained_cfg*``, ``checkpoint_path``, ``cache_dir`` and anything unknown are
  refused with a typed error that names the key (and the closest valid one);
- the model's size is estimated from the spec (:func:`count_weights`) and checked against a
  limit (:data:`DEFAULT_MAX_MODEL_BYTES`, raised with ``ROBIN_MAX_MODEL_BYTES``) before anything
  is allocated;
- :func:`build_model` always builds with ``pretrained=False``.

What a name means is read from timm's registry: each robin entry point is declared with
:func:`variant`, which records on it the model class it builds and the constructor arguments it
fixes (:func:`declared`). The class gives the rest (``arch_args``, ``count_weights``). This
module imports no model file, so every model file can import it.
"""
from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Callable

import timm
import torch.nn as nn

from ..errors import ConfigError, UnknownNameError, closest
from ..pruning import is_masked
from .args import ModelArgs

__all__ = [
    "DEFAULT_MAX_MODEL_BYTES", "ModelSpec", "allowed_args", "build_model", "builds_masked", "check_model_args",
    "check_model_name", "check_model_size", "count_weights", "declared", "estimate_model_bytes", "max_model_bytes",
    "model_spec", "variant",
]

# keys timm or robin would act on that no file may set
_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
            "features_only", "feature_cls", "pretrained_strict", "pretrained_model_args")


def variant(cls: type[nn.Module], **fixed: Any) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    """Declare a timm entry point of a robin model: the class it builds and the constructor arguments it fixes.

    Put under ``@register_model``. The entry point is called with ``fixed`` under the caller's
    keyword arguments (a caller may override them, ``depth=10`` builds a small WideResNet), and
    carries ``robin_cls`` and ``robin_args`` for :func:`declared`::

        @register_model
        @variant(RobinResNet, block=BasicBlock, layers=(2, 2, 2, 2))
        def robin_resnet18(pretrained: bool = False, **kwargs) -> RobinResNet:
            return RobinResNet.create("robin_resnet18", pretrained, **kwargs)

    ``cls`` must have ``arch_args`` (its own arguments a file may pass, name -> check) and
    ``count_weights(kwargs)`` (its convolution and classifier weights, computed without building
    it). A dense twin fixes ``masked=False``.
    """
    def declare(entry: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        @functools.wraps(entry)
        def entry_point(pretrained: bool = False, **kwargs: Any) -> nn.Module:
            return entry(pretrained, **{**fixed, **kwargs})

        entry_point.robin_cls = cls
        entry_point.robin_args = MappingProxyType(dict(fixed))
        return entry_point
    return declare


def declared(name: str) -> tuple[type[nn.Module], Mapping[str, Any]] | None:
    """The model class robin model ``name`` builds and the arguments its entry point fixes (see
    :func:`variant`), read from timm's registry; None for a name that is not a robin model."""
    if not isinstance(name, str) or not timm.is_model(name):
        return None
    entry = timm.models.model_entrypoint(name)
    cls = getattr(entry, "robin_cls", None)
    return None if cls is None else (cls, entry.robin_args)


def builds_masked(name: str) -> bool:
    """Whether registered robin model ``name`` is masked (False for the dense twins, which fix ``masked=False``)."""
    found = declared(name)
    return found is None or found[1].get("masked", True)


def allowed_args(name: str) -> dict[str, Callable[[str, Any], Any]]:
    """Every argument a file may give robin model ``name``, with its check: :class:`ModelArgs`'s and its class's."""
    found = declared(name)
    return {**ModelArgs.checks(), **(found[0].arch_args if found else {})}


def check_model_name(name: Any) -> str:
    """Return ``name`` if it is a registered robin model, else raise :class:`UnknownNameError`."""
    names = timm.list_models("robin_*")
    if not isinstance(name, str) or name not in names:
        raise UnknownNameError(f"unknown model {name!r:.80}{closest(str(name), names)}; robin models: {', '.join(names)}")
    return name


def check_model_args(name: str, kwargs: Any, *, source: str = "model arguments") -> dict[str, Any]:
    """Validate the keyword arguments a file gives robin model ``name``; return them checked.

    Args:
        name: a registered robin model name.
        kwargs: the mapping read from the file.
        source: what to call the mapping in errors (e.g. ``"the compact header's model.kwargs"``).

    Raises:
        ConfigError: not a mapping, a refused key (``pretrained`` ...), a null value, or a value of
            the wrong type or out of bounds.
        UnknownNameError: a key that is not an architecture argument (with the closest one).
    """
    if not isinstance(kwargs, dict):
        raise ConfigError(f"{source} must be a mapping of argument names to values, got {type(kwargs).__name__}")
    checks = allowed_args(name)
    allowed = list(checks)
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _REFUSED:
            raise ConfigError(f"{source}: {key!r} is refused: a file never decides what is downloaded or loaded "
                              f"(robin builds models from files with pretrained=False)")
        if key not in allowed:
            raise UnknownNameError(f"{source}: unknown model argument {key!r:.80}{closest(str(key), allowed)}; "
                                   f"valid for {name}: {', '.join(allowed)}")
        if value is None and not ModelArgs.nullable(key):
            raise ConfigError(f"{source}: {key!r} has no value (null); give a value or leave the key out")
        out[key] = value if value is None else checks[key](key, value)
    try:  # the checks across arguments (mean and std have in_chans values)
        ModelArgs(**{k: v for k, v in out.items() if k in ModelArgs.checks()})
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    return out


@dataclass(frozen=True)
class ModelSpec:
    """A validated robin model spec: a registered name and checked architecture arguments."""

    name: str
    kwargs: dict

    @classmethod
    def parse(cls, name: Any, kwargs: Any, *, source: str = "model arguments") -> "ModelSpec":
        """Validate ``name`` and ``kwargs`` (see :func:`check_model_args`)."""
        name = check_model_name(name)
        return cls(name, check_model_args(name, kwargs if kwargs is not None else {}, source=source))

    def to_json(self) -> dict[str, Any]:
        """``{"name": ..., "kwargs": {...}}`` with tuples as lists and keys sorted."""
        return {"name": self.name, "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(self.kwargs.items())}}


DEFAULT_MAX_MODEL_BYTES = 4 * 2**30
"""Largest model (bytes of weights and scores, see :func:`estimate_model_bytes`) built from a file:
4 GiB, about 500M masked weights (WRN-34-10 has 46M). Raise it with the environment variable
``ROBIN_MAX_MODEL_BYTES`` or ``build_model(spec, max_bytes=...)``."""

def _default_classes(name: str) -> int:
    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.num_classes if cfg is not None else 10


def count_weights(spec: ModelSpec) -> int:
    """Number of convolution and classifier weights of the model ``spec`` builds, without building it.

    Exact for the registered models (a test compares it with built models): each model class
    declares the arithmetic next to its constructor (its ``count_weights``).
    """
    found = declared(spec.name)
    if found is None:
        raise UnknownNameError(f"{spec.name!r:.80} is not a registered robin model")
    cls, fixed = found
    kwargs = {**fixed, "in_chans": 3, "num_classes": _default_classes(spec.name), **spec.kwargs}
    return cls.count_weights(kwargs)


def estimate_model_bytes(spec: ModelSpec) -> int:
    """Bytes a built model holds: 8 per weight for a masked model (fixed weight + score, float32), 4 for a dense one."""
    return count_weights(spec) * (8 if builds_masked(spec.name) else 4)


def max_model_bytes() -> int:
    """The limit :func:`build_model` applies: ``ROBIN_MAX_MODEL_BYTES`` if set, else :data:`DEFAULT_MAX_MODEL_BYTES`."""
    raw = os.environ.get("ROBIN_MAX_MODEL_BYTES")
    if raw is None:
        return DEFAULT_MAX_MODEL_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"ROBIN_MAX_MODEL_BYTES must be an integer number of bytes, got {raw!r:.40}") from None
    if value < 1:
        raise ConfigError(f"ROBIN_MAX_MODEL_BYTES must be >= 1, got {value}")
    return value


def check_model_size(spec: ModelSpec, max_bytes: int | None = None) -> int:
    """Raise :class:`ConfigError` if ``spec`` would build a model above the limit; return its estimated bytes.

    Runs before anything is allocated, so a tiny file naming ``width: 2048`` fails in
    microseconds instead of allocating gigabytes.
    """
    limit = max_model_bytes() if max_bytes is None else max_bytes
    size = estimate_model_bytes(spec)
    if size > limit:
        raise ConfigError(
            f"{spec.name} with {spec.to_json()['kwargs']} would take about {size / 2**30:.1f} GiB "
            f"({count_weights(spec):,} weights), above robin_plugin's limit of {limit / 2**30:.1f} GiB (a tiny file "
            "naming such a model must not take the machine's memory); raise it with ROBIN_MAX_MODEL_BYTES=<bytes> "
            "if you mean it"
        )
    return size


def build_model(spec: ModelSpec, *, max_bytes: int | None = None) -> nn.Module:
    """``timm.create_model(spec.name, pretrained=False, **spec.kwargs)`` after the size check.

    Args:
        spec: a validated spec.
        max_bytes: size limit (default :func:`max_model_bytes`).

    Raises:
        ConfigError: the model would be too large, or timm / the constructor refused the arguments.
    """
    check_model_size(spec, max_bytes)
    try:
        return timm.create_model(spec.name, pretrained=False, **spec.kwargs)
    except (ConfigError, UnknownNameError):
        raise
    except (TypeError, ValueError, RuntimeError) as e:
        raise ConfigError(f"cannot build {spec.name} from {spec.kwargs}: {e}") from e


def model_spec(model: nn.Module, *, include_masked: bool = True) -> ModelSpec | None:
    """The spec that rebuilds ``model``'s architecture and fixed weights, or None if unknown.

    Works for robin models made with ``timm.create_model`` (their ``pretrained_cfg`` names the
    architecture, and the model is an instance of the class that name builds). Keep ratios and
    input statistics are state, not spec; they are included
    (``keep_ratio``/``p`` at construction, current ``mean``/``std``) so the rebuilt model starts
    from the same values, but a state dict overrides them.

    Args:
        model: a robin model.
        include_masked: include the masked-only arguments (False for the dense twin's spec).
    """
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    found = declared(name)
    if found is None or not isinstance(model, found[0]):
        return None
    kwargs = model.current_args().spec_kwargs(masked=include_masked and is_masked(model))
    kwargs.update({key: getattr(model, key) for key in found[0].arch_args})
    return ModelSpec(name, kwargs)
