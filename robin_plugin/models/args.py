"""The keyword arguments every robin model takes, defined once: name, default, check, and where it goes.

:class:`ModelArgs` is the one list of them. The model constructors take them through it
(``RobinResNet(**kwargs)`` builds ``ModelArgs(**kwargs)``), the model spec
(:mod:`robin_plugin.models.spec`) derives the arguments a file may pass from its fields, and
:func:`~robin_plugin.models.spec.model_spec` derives what it writes back. Adding an argument is
one new field here (with its check) and its use in the model base class.

The arguments of one architecture only (a ResNet's ``width``, a WideResNet's ``depth`` and
``widen_factor``) are parameters of that model class; it declares their checks in its
``spec_args``.

Every check raises :class:`~robin_plugin.errors.ConfigError` (an unknown ``init``:
:class:`~robin_plugin.errors.UnknownNameError`) naming the argument. The bounds are those a file
may ask for: a model file must not choose a model that takes the machine's memory.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any, Callable

from .._checks import is_int, is_number
from ..errors import ConfigError
from ..layers.masked import check_init, check_score_scale
from ..pruning import check_keep_ratio, check_p

__all__ = ["MASKED_ARGS", "POOL_TYPES", "ModelArgs", "check_float", "check_global_pool", "check_int"]

Check = Callable[[str, Any], Any]


def check_int(lo: int, hi: int) -> Check:
    """A check: an integer (not a bool) in [lo, hi]."""
    def check(key: str, v: Any) -> int:
        if not is_int(v) or not lo <= v <= hi:
            raise ConfigError(f"model argument {key!r} must be an integer in [{lo}, {hi}], got {v!r:.80}")
        return v
    return check


def check_float(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False) -> Check:
    """A check: a finite number in the interval from lo to hi (open or closed at each end); returns a float."""
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


POOL_TYPES = ("avg", "")
"""The classifier head's pooling: ``"avg"`` (global average pool) or ``""`` (none)."""


def check_global_pool(key: str, v: Any) -> str:
    """A check: one of :data:`POOL_TYPES`."""
    if v not in POOL_TYPES:
        raise ConfigError(f"robin models support global_pool='avg' (global average pool) or '' (no pooling), got {v!r:.80}")
    return v


def _stats(key: str, v: Any) -> tuple[float, ...]:
    if not isinstance(v, (list, tuple)) or not 1 <= len(v) <= 64:
        raise ConfigError(f"model argument {key!r} must be a list of 1 to 64 numbers (one per channel), got {v!r:.80}")
    out = tuple(check_float(-1e6, 1e6)(key, x) for x in v)
    if key == "std" and not all(x > 0 for x in out):
        raise ConfigError(f"model argument 'std' must be > 0 for every channel, got {list(out)}")
    return out


def _score_scale(key: str, v: Any) -> float:
    v = check_score_scale(v)
    if v > 1e6:
        raise ConfigError(f"model argument {key!r} must be a number in (0, 1e6], got {v!r:.80}")
    return v


def _arg(default: Any, check: Check, *, masked: Any = None, spec: str = "always", null: bool = False) -> Any:
    """A field of :class:`ModelArgs`.

    Args:
        default: its default (None for the masked-only ones: "the masked default").
        check: ``check(name, value) -> value``, raising :class:`ConfigError`; None always passes.
        masked: the default on a masked model of an argument that only masked models take.
        spec: what :meth:`ModelArgs.spec_kwargs` writes: ``"always"``, ``"masked"`` (for a masked
            model), ``"changed"`` (when not the default) or ``"never"`` (training-time settings).
        null: a file may give it as null (it means "the default of the model kind", not "unset").
    """
    return field(default=default, metadata=dict(check=check, masked=masked, spec=spec, null=null))


@dataclass(frozen=True)
class ModelArgs:
    """The keyword arguments of every robin model, checked.

    Attributes:
        num_classes: classes (0: no classifier, the model returns pooled features).
        in_chans: input channels.
        seed: seed of every random draw at construction (fixed weights and scores).
        keep_ratio: fraction of all weights kept, in (0, 1]. Masked only; default 0.01.
        p: adaptive keep-ratio exponent in [0, 1]. Masked only; default 0.1.
        init: fixed-weight initialisation (:data:`robin_plugin.layers.masked.INITS`). Masked only;
            default ``"binary"`` (+-1).
        score_init_scale: a in U(-a, a) for the scores. Masked only; default 0.01.
        score_scale_by_fan_in: divide a by sqrt(fan_in). Masked only; default False.
        last_bn: non-affine BatchNorm on the logits; None: on for masked models, off for dense ones.
        mean, std: input statistics applied inside the model (one value per channel); None: the
            model family's default.
        check_inputs: validate every batch in ``forward`` (a debugging aid with a host sync).
        drop_rate: dropout probability before the classifier, in [0, 1).
        drop_path_rate: stochastic depth of the last residual block, in [0, 1).
        global_pool: ``"avg"`` or ``""`` (no pooling).
    """

    num_classes: int = _arg(10, check_int(0, 100_000))
    in_chans: int = _arg(3, check_int(1, 64))
    seed: int = _arg(0, check_int(0, 2**63 - 1))
    keep_ratio: float | None = _arg(None, lambda key, v: check_keep_ratio(v), masked=0.01, spec="masked")
    p: float | None = _arg(None, lambda key, v: check_p(v), masked=0.1, spec="masked")
    init: str | None = _arg(None, lambda key, v: check_init(v), masked="binary", spec="masked")
    score_init_scale: float | None = _arg(None, _score_scale, masked=0.01, spec="masked")
    score_scale_by_fan_in: bool | None = _arg(None, _bool, masked=False, spec="masked")
    last_bn: bool | None = _arg(None, _bool, null=True)
    mean: tuple[float, ...] | None = _arg(None, _stats)
    std: tuple[float, ...] | None = _arg(None, _stats)
    check_inputs: bool = _arg(False, _bool)
    drop_rate: float = _arg(0.0, check_float(0.0, 1.0, hi_open=True), spec="never")
    drop_path_rate: float = _arg(0.0, check_float(0.0, 1.0, hi_open=True), spec="never")
    global_pool: str = _arg("avg", check_global_pool, spec="changed")

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value is not None:
                object.__setattr__(self, f.name, f.metadata["check"](f.name, value))
        for key in ("mean", "std"):
            value = getattr(self, key)
            if value is not None and len(value) != self.in_chans:
                raise ConfigError(f"{key!r} needs {self.in_chans} values (in_chans={self.in_chans}), got {len(value)}")

    @classmethod
    def checks(cls) -> dict[str, Check]:
        """Every argument name with its check, in field order."""
        return {f.name: f.metadata["check"] for f in dataclasses.fields(cls)}

    @classmethod
    def nullable(cls, name: str) -> bool:
        """Whether argument ``name`` may be given as None (null in a file)."""
        return any(f.name == name and f.metadata["null"] for f in dataclasses.fields(cls))

    def for_model(self, masked: bool) -> "ModelArgs":
        """These arguments for a masked (``masked=True``) or dense model: the masked-only ones
        filled with their masked defaults, or refused when given to a dense model."""
        only = [f for f in dataclasses.fields(self) if f.metadata["masked"] is not None]
        if not masked:
            given = sorted(f.name for f in only if getattr(self, f.name) is not None)
            if given:
                raise ConfigError(f"{given} only apply to masked robin models, not to the dense twin")
            return self
        filled = {f.name: f.metadata["masked"] for f in only if getattr(self, f.name) is None}
        return dataclasses.replace(self, **filled)

    def masked_kwargs(self) -> dict[str, Any]:
        """The masked-only arguments as a dict (empty when they are unset, as on a dense model)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if f.metadata["masked"] is not None and getattr(self, f.name) is not None}

    def spec_kwargs(self, masked: bool) -> dict[str, Any]:
        """The arguments a model spec records to rebuild the model (see each field's ``spec``)."""
        out = {}
        for f in dataclasses.fields(self):
            value, rule = getattr(self, f.name), f.metadata["spec"]
            if rule == "always" or (rule == "masked" and masked) or (rule == "changed" and value != f.default):
                out[f.name] = value
        return out


MASKED_ARGS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(ModelArgs) if f.metadata["masked"] is not None)
"""The names of the arguments only masked models take."""
