"""Gradient-masking checks: pure functions from measured accuracies to a verdict.

Binary and masked networks are known to mask gradients (Athalye et al., "Obfuscated Gradients
Give a False Sense of Security", ICML 2018; Carlini et al., "On Evaluating Adversarial
Robustness", 2019). An evaluation that a masked gradient fooled shows these symptoms, each
tested by one function here:

- :func:`check_large_eps`: accuracy must fall towards zero as eps grows large (at eps 0.5 in
  pixel units every image can be turned into a grey one).
- :func:`check_more_iterations`: more attack iterations must never raise accuracy.
- :func:`check_black_box`: the black-box Square attack must not find adversarial examples
  that the white-box (gradient) attacks missed.
- :func:`check_zero_gradients`: no point may have an exactly zero input gradient.
- :func:`check_deterministic`: the model gives the same logits twice (no randomised defence).

Each returns a :class:`CheckResult` whose ``message`` is the warning shown in reports and JSON.
:mod:`robin_plugin.eval.evaluate` measures the inputs; these functions only judge them.
"""
from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

from .._checks import is_int, is_number
from ..errors import ConfigError

__all__ = [
    "CheckResult",
    "check_black_box",
    "check_deterministic",
    "check_large_eps",
    "check_more_iterations",
    "check_zero_gradients",
    "one_point",
]


@dataclass(frozen=True)
class CheckResult:
    """Verdict of one check.

    Attributes:
        name: short id (``large_eps``, ``more_iterations``, ``black_box``, ``zero_gradients``,
            ``deterministic``).
        passed: False when the check sees a sign of gradient masking.
        value: the measured quantity (see each check).
        threshold: the limit ``value`` was compared with.
        message: one line; a warning starting with ``WARNING`` when the check failed.
    """

    name: str
    passed: bool
    value: float
    threshold: float
    message: str

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping) -> "CheckResult":
        return cls(str(d["name"]), bool(d["passed"]), float(d["value"]), float(d["threshold"]), str(d["message"]))


def _check_fraction(name: str, value: float) -> float:
    if not is_number(value) or not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be a fraction in [0, 1], got {value!r}")
    return float(value)


def one_point(n: int) -> float:
    """Accuracy of one point out of ``n``: the smallest difference an evaluation can see."""
    if not is_int(n) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    return 1.0 / n


def check_large_eps(acc_by_eps: Mapping[float, float], *, max_acc: float = 0.05, tol: float = 0.0) -> CheckResult:
    """Accuracy must fall towards zero as eps grows large, and never rise with eps.

    Args:
        acc_by_eps: accuracy (fraction) under the same attack at several eps (pixel units).
        max_acc: largest accuracy allowed at the largest eps (default 0.05).
        tol: how much accuracy may rise from one eps to the next larger one (noise allowance).

    ``value`` is the accuracy at the largest eps.
    """
    if not acc_by_eps:
        raise ConfigError("acc_by_eps is empty: give the accuracy at one eps at least")
    max_acc = _check_fraction("max_acc", max_acc)
    items = sorted((float(e), _check_fraction(f"accuracy at eps={e}", a)) for e, a in acc_by_eps.items())
    eps_max, acc_max = items[-1]
    curve = ", ".join(f"{a:.1%} at eps={e:.4g}" for e, a in items)
    rises = [(e0, a0, e1, a1) for (e0, a0), (e1, a1) in zip(items, items[1:]) if a1 > a0 + tol + 1e-12]
    if rises:
        e0, a0, e1, a1 = rises[0]
        msg = (f"WARNING: accuracy rose from {a0:.1%} at eps={e0:.4g} to {a1:.1%} at eps={e1:.4g}; a stronger "
               f"threat should never help the model: the attack is failing (gradient masking?). Curve: {curve}")
        return CheckResult("large_eps", False, acc_max, max_acc, msg)
    if acc_max > max_acc:
        msg = (f"WARNING: accuracy is still {acc_max:.1%} at eps={eps_max:.4g} (expected <= {max_acc:.1%}): the attack "
               f"cannot find adversarial examples even with a huge budget, a sign of gradient masking. Curve: {curve}")
        return CheckResult("large_eps", False, acc_max, max_acc, msg)
    return CheckResult("large_eps", True, acc_max, max_acc, f"ok: accuracy falls to {acc_max:.1%} at eps={eps_max:.4g} ({curve})")


def check_more_iterations(accs: Sequence[tuple[str, float]], *, tol: float = 0.0) -> CheckResult:
    """More iterations (or restarts) must never raise accuracy.

    Args:
        accs: ``(label, accuracy)`` pairs ordered from the weakest to the strongest attack, e.g.
            ``[("PGD-10", 0.52), ("PGD-40", 0.50), ("APGD-CE-100", 0.49)]``.
        tol: allowed rise (fraction); :func:`one_point` ``(n)`` absorbs the noise of one point.

    ``value`` is the largest rise from a weaker to a stronger attack (<= 0 when none rose).
    """
    if len(accs) < 2:
        raise ConfigError(f"check_more_iterations needs two attacks at least, got {len(accs)}")
    vals = [(str(label), _check_fraction(f"accuracy of {label}", a)) for label, a in accs]
    worst = -math.inf
    pair = None
    for i, (li, ai) in enumerate(vals):
        for lj, aj in vals[i + 1:]:
            if aj - ai > worst:
                worst, pair = aj - ai, (li, ai, lj, aj)
    chain = ", ".join(f"{label} {a:.1%}" for label, a in vals)
    if worst > tol + 1e-12:
        li, ai, lj, aj = pair
        msg = (f"WARNING: the stronger {lj} leaves {aj:.1%} accuracy, more than the weaker {li} ({ai:.1%}): more "
               f"iterations should never help the model (gradient masking or a broken attack?). {chain}")
        return CheckResult("more_iterations", False, worst, tol, msg)
    return CheckResult("more_iterations", True, worst, tol, f"ok: stronger attacks never raise accuracy ({chain})")


def check_black_box(acc_white_box: float, acc_after_black_box: float, *, tol: float = 0.002) -> CheckResult:
    """The black-box Square attack must not beat the white-box attacks.

    Args:
        acc_white_box: robust accuracy after the white-box attacks (APGD-CE, APGD-T, FAB-T).
        acc_after_black_box: robust accuracy after Square also ran on the points still robust.
        tol: largest drop allowed (the original AutoAttack warns above 0.002; evaluate passes
            ``max(0.002, one_point(n))`` so one lucky point out of a few dozen does not warn).

    ``value`` is the drop in accuracy that Square caused.
    """
    a = _check_fraction("acc_white_box", acc_white_box)
    b = _check_fraction("acc_after_black_box", acc_after_black_box)
    drop = a - b
    if drop > tol + 1e-12:
        msg = (f"WARNING: the black-box Square attack lowered robust accuracy by {drop:.1%} ({a:.1%} -> {b:.1%}) after "
               f"the white-box attacks: their gradients are misleading (gradient masking); the evaluation may be "
               f"unreliable. Try more Square queries and restarts, or an adaptive attack")
        return CheckResult("black_box", False, drop, tol, msg)
    return CheckResult("black_box", True, drop, tol, f"ok: Square lowered accuracy by {drop:.1%} after the white-box attacks")


def check_zero_gradients(n_zero: int, n: int, *, max_fraction: float = 0.0) -> CheckResult:
    """Fraction of points whose input gradient is exactly zero.

    Args:
        n_zero: points whose loss gradient w.r.t. the input is zero everywhere.
        n: points checked.
        max_fraction: largest fraction allowed (default 0: any zero gradient warns, as in AutoAttack).

    ``value`` is the fraction of points with a zero gradient.
    """
    if not is_int(n) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    if not is_int(n_zero) or not 0 <= n_zero <= n:
        raise ConfigError(f"n_zero must be an integer in [0, {n}], got {n_zero!r}")
    max_fraction = _check_fraction("max_fraction", max_fraction)
    frac = n_zero / n
    if frac > max_fraction:
        msg = (f"WARNING: {n_zero} of {n} points ({frac:.1%}) have an exactly zero input gradient: gradient-based "
               f"attacks cannot move them (non-differentiable or saturated layers); the evaluation may be unreliable")
        return CheckResult("zero_gradients", False, frac, max_fraction, msg)
    return CheckResult("zero_gradients", True, frac, max_fraction, f"ok: {n_zero} of {n} points have a zero input gradient")


def check_deterministic(max_logit_diff: float, *, tol: float = 1e-4) -> CheckResult:
    """The model must give the same logits for the same input (else use EOT attacks).

    Args:
        max_logit_diff: largest difference between the L2-normalised logits of repeated
            forward passes on the same batch.
        tol: largest difference allowed (AutoAttack: 1e-4).
    """
    if not isinstance(max_logit_diff, (int, float)) or math.isnan(max_logit_diff) or max_logit_diff < 0:
        raise ConfigError(f"max_logit_diff must be a number >= 0, got {max_logit_diff!r}")
    if max_logit_diff > tol:
        msg = (f"WARNING: repeated forward passes differ by {max_logit_diff:.3g} (> {tol:g}): the model looks randomised; "
               f"the standard attacks assume a deterministic model (use EOT)")
        return CheckResult("deterministic", False, float(max_logit_diff), tol, msg)
    return CheckResult("deterministic", True, float(max_logit_diff), tol, "ok: repeated forward passes agree")
