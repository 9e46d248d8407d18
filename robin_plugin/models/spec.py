"""The model spec: which robin architecture a file names, and the only arguments it may pass.

Every file format that names a model (a compact file's header, a dense export's metadata, a run's
``config.json``, ``--model-kwargs``, a YAML config, a timm hub folder's ``config.json``) carries a
spec: a timm model name and keyword arguments. A file is data: it must never choose what code
runs, what is downloaded or how much memory is taken. So a spec is validated here before
anything is built:

- the name must be a registered robin model;
- only the architecture arguments in :data:`ARCH_ARGS` pass, each with its type and bounds;
  ``pretrained``, ``pretrained_cfg*``, ``checkpoint_path``, ``cache_dir`` and anything unknown are
  refused with a typed error that names the key (and the closest valid one);
- the model's size is estimated from the spec (:func:`count_weights`) and checked against a
  limit (:data:`DEFAULT_MAX_MODEL_BYTES`, raised with ``ROBIN_MAX_MODEL_BYTES``) before anything
  is allocated;
- :func:`build_model` always builds with ``pretrained=False``.

What a name means is declared by the model files: each family registers a :class:`Family` (its
class, the constructor arguments each registered name fixes, the arguments it does not take,
and how many weights a spec builds) with :func:`register_family`. This module imports no model
file, so every model file can import it.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Callable

import timm
import torch.nn as nn

from .._checks import is_int, is_number
from ..errors import ConfigError, UnknownNameError, closest
from ..layers.masked import INITS
from ..pruning import check_keep_ratio, check_p, is_masked

__all__ = [
    "ARCH_ARGS", "DEFAULT_MAX_MODEL_BYTES", "Family", "ModelSpec", "build_model", "check_model_args",
    "check_model_name", "check_model_size", "count_weights", "estimate_model_bytes", "families",
    "family_of", "max_model_bytes", "model_spec", "register_family",
]

# keys timm or robin would act on that no file may set
_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
            "features_only", "feature_cls", "pretrained_strict", "pretrained_model_args")


def _int(lo: int, hi: int) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> int:
        if not is_int(v) or not lo <= v <= hi:
            raise ConfigError(f"model argument {key!r} must be an integer in [{lo}, {hi}], got {v!r:.80}")
        return v
    return check


def _float(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> float:
        ok = (is_number(v) and math.isfinite(v)
              and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi))
        if not ok:
            raise ConfigError(f"model argument {key!r} must be a number in {'(' if lo_open else '['}{lo}, {hi}"
                              f"{')' if hi_open else ']'}, got {v!r:.80}")
        return float(v)
    return check


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, bool):
        raise ConfigError(f"model argument {key!r} must be true or false, got {v!r:.80}")
    return v


def _optional_bool(key: str, v: Any) -> bool | None:
    return None if v is None else _bool(key, v)


def _choice(*choices: str) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> str:
        if v not in choices:
            raise ConfigError(f"model argument {key!r} must be one of {', '.join(map(repr, choices))}, got {v!r:.80}")
        return v
    return check


def _stats(key: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 64:
        raise ConfigError(f"model argument {key!r} must be a list of 1 to 64 numbers (one per channel), got {v!r:.80}")
    out = tuple(_float(-1e6, 1e6)(key, x) for x in v)
    if key == "std" and not all(x > 0 for x in out):
        raise ConfigError(f"model argument 'std' must be > 0 for every channel, got {list(out)}")
    return out


ARCH_ARGS: dict[str, Callable[[str, Any], Any]] = {
    "num_classes": _int(0, 100_000),
    "in_chans": _int(1, 64),
    "width": _int(1, 1024),                  # robin ResNets: channels of the first stage
    "depth": _int(10, 202),                  # robin WideResNets: 6n + 4
    "widen_factor": _int(1, 64),             # robin WideResNets
    "keep_ratio": lambda key, v: check_keep_ratio(v),
    "p": lambda key, v: check_p(v),
    "init": _choice(*INITS),
    "score_init_scale": _float(0.0, 1e6, lo_open=True),
    "score_scale_by_fan_in": _bool,
    "last_bn": _optional_bool,
    "seed": _int(0, 2**63 - 1),
    "mean": _stats,
    "std": _stats,
    "check_inputs": _bool,
    "drop_rate": _float(0.0, 1.0, hi_open=True),
    "drop_path_rate": _float(0.0, 1.0, hi_open=True),
    "global_pool": _choice("avg", ""),
}
"""Every keyword argument a file may pass to a robin model, with its check (type and bounds)."""

# --- the families, as the model files declare them ----------------------------------------


@dataclass(frozen=True)
class Family:
    """A robin model family, declared by its model file with :func:`register_family`.

    Attributes:
        cls: the model class every name of the family builds.
        variants: registered base name -> the constructor arguments its entry point fixes
            (``{"robin_resnet18": {"block": BasicBlock, "layers": (2, 2, 2, 2)}}``). Dense twins
            (``<base>_dense``) and RobustBench aliases (``<base>_<dataset>_<threat>``) share
            their base's entry.
        excluded_args: names of :data:`ARCH_ARGS` the constructor does not take.
        count_weights: ``count_weights(kwargs) -> int``: convolution and classifier weights of
            the model the constructor arguments ``kwargs`` build (the variant's, then the spec's;
            ``in_chans`` and ``num_classes`` always present), computed without building it.
        create: ``create(variant, pretrained, **kwargs)``, the family's ``_create_*`` builder.
        default_cfg: ``default_cfg(**overrides) -> dict``, the family's timm ``default_cfgs`` entry.
    """

    cls: type[nn.Module]
    variants: Mapping[str, Mapping[str, Any]]
    excluded_args: frozenset[str]
    count_weights: Callable[[Mapping[str, Any]], int]
    create: Callable[..., nn.Module]
    default_cfg: Callable[..., dict]


_FAMILIES: list[Family] = []


def register_family(family: Family) -> Family:
    """Declare a model family (each model file calls it once, at import); returns ``family``.

    Registering a family again from the same module (a reloaded model file) replaces it; a base
    name claimed by another family raises :class:`ConfigError`.
    """
    def key(f: Family) -> tuple[str, str]:
        return f.cls.__module__, f.cls.__qualname__

    _FAMILIES[:] = [f for f in _FAMILIES if key(f) != key(family)]
    for other in _FAMILIES:
        clash = set(other.variants) & set(family.variants)
        if clash:
            raise ConfigError(f"model names {sorted(clash)} are registered by two families")
    _FAMILIES.append(family)
    return family


def families() -> tuple[Family, ...]:
    """The registered families, in registration order."""
    return tuple(_FAMILIES)


def family_of(name: str) -> tuple[Family, str] | None:
    """The family of model ``name`` and the base name it extends, or None for a non-robin name.

    The longest base name that ``name`` starts with wins (``robin_wrn34_dense`` extends
    ``robin_wrn34``).
    """
    matches = [(base, fam) for fam in _FAMILIES for base in fam.variants if name.startswith(base)]
    if not matches:
        return None
    base, fam = max(matches, key=lambda m: len(m[0]))
    return fam, base


def _excluded(name: str) -> frozenset[str]:
    found = family_of(name)
    return found[0].excluded_args if found else frozenset()


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
    allowed = [k for k in ARCH_ARGS if k not in _excluded(name)]
    out: dict[str, Any] = {}
    for key, value in kwargs.items():
        if key in _REFUSED:
            raise ConfigError(f"{source}: {key!r} is refused: a file never decides what is downloaded or loaded "
                              f"(robin builds models from files with pretrained=False)")
        if key not in allowed:
            raise UnknownNameError(f"{source}: unknown model argument {key!r:.80}{closest(str(key), allowed)}; "
                                   f"valid for {name}: {', '.join(allowed)}")
        if value is None and key != "last_bn":
            raise ConfigError(f"{source}: {key!r} has no value (null); give a value or leave the key out")
        out[key] = ARCH_ARGS[key](key, value)
    if "mean" in out or "std" in out:
        chans = out.get("in_chans", 3)
        for key in ("mean", "std"):
            if key in out and len(out[key]) != chans:
                raise ConfigError(f"{source}: {key!r} needs {chans} values (in_chans={chans}), got {len(out[key])}")
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

    Exact for the registered families (a test compares it with built models): each model file
    declares the arithmetic next to its constructor (:attr:`Family.count_weights`).
    """
    found = family_of(spec.name)
    if found is None:
        raise UnknownNameError(f"{spec.name!r:.80} is not a model of a registered robin family")
    fam, base = found
    kwargs = {**fam.variants[base], "in_chans": 3, "num_classes": _default_classes(spec.name), **spec.kwargs}
    return fam.count_weights(kwargs)


def estimate_model_bytes(spec: ModelSpec) -> int:
    """Bytes a built model holds: 8 per weight for a masked model (fixed weight + score, float32), 4 for a dense one."""
    return count_weights(spec) * (4 if spec.name.endswith("_dense") else 8)


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
    architecture, and the model is an instance of that family's class). Keep ratios and input statistics are state, not spec; they are included
    (``keep_ratio``/``p`` at construction, current ``mean``/``std``) so the rebuilt model starts
    from the same values, but a state dict overrides them.

    Args:
        model: a robin model.
        include_masked: include the masked-only arguments (False for the dense twin's spec).
    """
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    try:
        name = check_model_name(name)
    except UnknownNameError:
        return None
    found = family_of(name)
    if found is None or not isinstance(model, found[0].cls):
        return None
    kwargs: dict[str, Any] = dict(
        num_classes=model.num_classes,
        in_chans=model.in_chans,
        seed=model.seed,
        last_bn=model.last_bn,
        mean=tuple(float(v) for v in model.normalize.mean.flatten().tolist()),
        std=tuple(float(v) for v in model.normalize.std.flatten().tolist()),
        check_inputs=bool(model.normalize.check_inputs),
    )
    if include_masked and is_masked(model):
        kwargs.update(model.masked_kwargs)
    if getattr(model, "global_pool", "avg") != "avg":  # "" changes what the model returns
        kwargs["global_pool"] = model.global_pool
    for key in ("width", "depth", "widen_factor"):
        if hasattr(model, key) and key not in _excluded(name):
            kwargs[key] = getattr(model, key)
    return ModelSpec(name, kwargs)
