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
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any, Callable

import torch.nn as nn

from ..errors import ConfigError, UnknownNameError, closest
from ..layers.masked import INITS

__all__ = [
    "ARCH_ARGS", "DEFAULT_MAX_MODEL_BYTES", "ModelSpec", "build_model", "check_model_args", "check_model_name",
    "check_model_size", "count_weights", "estimate_model_bytes", "max_model_bytes", "model_spec",
]

# keys timm or robin would act on that no file may set
_REFUSED = ("pretrained", "pretrained_cfg", "pretrained_cfg_overlay", "checkpoint_path", "cache_dir",
            "features_only", "feature_cls", "pretrained_strict", "pretrained_model_args")


def _int(lo: int, hi: int) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> int:
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise ConfigError(f"model argument {key!r} must be an integer in [{lo}, {hi}], got {v!r:.80}")
        return v
    return check


def _float(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Callable[[str, Any], Any]:
    def check(key: str, v: Any) -> float:
        ok = (not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
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
    "keep_ratio": _float(0.0, 1.0, lo_open=True),
    "p": _float(0.0, 1.0),
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

# arguments each family's constructor does not take
_FAMILY_EXCLUDES = {"robin_resnet": {"depth", "widen_factor"}, "robin_wrn": {"width"}}


def _excluded(name: str) -> set[str]:
    return next((ex for prefix, ex in _FAMILY_EXCLUDES.items() if name.startswith(prefix)), set())


def check_model_name(name: Any) -> str:
    """Return ``name`` if it is a registered robin model, else raise :class:`UnknownNameError`."""
    import timm

    from . import robin_resnet  # noqa: F401  (registers the robin models with timm)

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

# family -> (block kind, blocks per stage); names of RobustBench aliases start with the base name
_ARCH_TABLE = {
    "robin_resnet18": ("basic", (2, 2, 2, 2)),
    "robin_resnet34": ("basic", (3, 4, 6, 3)),
    "robin_resnet50": ("bottleneck", (3, 4, 6, 3)),
    "robin_wrn28_10": ("wrn", (28, 10)),
    "robin_wrn34": ("wrn", (34, 10)),
}


def _default_classes(name: str) -> int:
    import timm

    cfg = timm.models.get_pretrained_cfg(name)
    return cfg.num_classes if cfg is not None else 10


def count_weights(spec: ModelSpec) -> int:
    """Number of convolution and classifier weights of the model ``spec`` builds, without building it.

    Exact for the registered families (a test compares it with built models); the arithmetic
    follows the constructors in :mod:`.robin_resnet` and :mod:`.robin_wideresnet`.
    """
    base = max((b for b in _ARCH_TABLE if spec.name.startswith(b)), key=len)
    kind, cfg = _ARCH_TABLE[base]
    kw = spec.kwargs
    cin, classes = kw.get("in_chans", 3), kw.get("num_classes", _default_classes(spec.name))
    if kind == "wrn":
        depth, k = kw.get("depth", cfg[0]), kw.get("widen_factor", cfg[1])
        if (depth - 4) % 6:
            raise ConfigError(f"WideResNet depth must be 6n + 4, got {depth}")
        n, widths = (depth - 4) // 6, [16, 16 * k, 32 * k, 64 * k]
        total, inplanes = cin * 16 * 9, 16
        for i, planes in enumerate(widths[1:]):
            for j in range(n):
                inp, stride = (inplanes if j == 0 else planes), (1 if i == 0 else 2) if j == 0 else 1
                total += inp * planes * 9 + planes * planes * 9 + (inp * planes if stride != 1 or inp != planes else 0)
            inplanes = planes
        return total + inplanes * classes
    width = kw.get("width", 64)
    expansion = 4 if kind == "bottleneck" else 1
    total, inplanes = cin * width * 9, width
    for i, blocks in enumerate(cfg):
        planes = width * 2**i
        for j in range(blocks):
            stride = (1 if i == 0 else 2) if j == 0 else 1
            if kind == "basic":
                total += inplanes * planes * 9 + planes * planes * 9
            else:
                total += inplanes * planes + planes * planes * 9 + planes * planes * expansion
            out = planes * expansion
            total += inplanes * out if stride != 1 or inplanes != out else 0
            inplanes = out
    return total + inplanes * classes


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
    import timm

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
    architecture). Keep ratios and input statistics are state, not spec; they are included
    (``keep_ratio``/``p`` at construction, current ``mean``/``std``) so the rebuilt model starts
    from the same values, but a state dict overrides them.

    Args:
        model: a robin model.
        include_masked: include the masked-only arguments (False for the dense twin's spec).
    """
    from ._common import RobinNetBase

    if not isinstance(model, RobinNetBase):
        return None
    name = (getattr(model, "pretrained_cfg", None) or {}).get("architecture")
    try:
        name = check_model_name(name)
    except UnknownNameError:
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
    if include_masked and model.masked:
        kwargs.update(model.masked_kwargs)
    if getattr(model, "global_pool", "avg") != "avg":  # "" changes what the model returns
        kwargs["global_pool"] = model.global_pool
    for key in ("width", "depth", "widen_factor"):
        if hasattr(model, key) and key not in _excluded(name):
            kwargs[key] = getattr(model, key)
    return ModelSpec(name, kwargs)
