"""RobustBench-protocol evaluation: clean accuracy, PGD-k, and AutoAttack "standard" at full strength.

The protocol (Croce et al., "RobustBench", NeurIPS 2021 Datasets and Benchmarks): the first ``n``
test points, Linf, eps 8/255 on CIFAR-10 and CIFAR-100. AutoAttack runs its attacks one after the
other, each only on the points still robust, so the robust accuracy after the last attack is the
pointwise worst case over the ensemble. :func:`evaluate` also reports the accuracy after every
attack, a PGD-k baseline, the gradient-masking checks of :mod:`robin_plugin.eval.checks`, and on
request the original AutoAttack (PyPI ``pyautoattack``, :mod:`robin_plugin.eval.reference`) on
the same points for comparison.

Evaluation cost (CPU): about 1.8 s per point for a width-16 ResNet-18 on 28x28 inputs, so the
progress bars show the time left, and ``state_path`` makes a long run resumable: the robust flags
are written after every batch (:mod:`robin_plugin.eval.resume`), and a rerun with the same
settings skips the attacks already done.

This module is the protocol only: the batched measurements live in :mod:`.measure`, the resume
file in :mod:`.resume` and the reference adapter in :mod:`.reference`. It runs past 400 lines
because the protocol's stages (inputs, clean, PGD, each attack with its resume point, the checks,
the reference) are read in their order, one after the other, in one place.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .._checks import is_int
from ..errors import ConfigError, InputError, UnknownNameError, closest
from ..progress import progress as progress_bar
from ..data.base import pixel_range_problem, to_float
from ..pgd import check_eps
from ..rng import isolated_rng
from .attacks import STANDARD_ATTACKS, AutoAttackConfig, standard_attacks
from .fast import attack_model
from .checks import (
    CheckResult,
    check_black_box,
    check_deterministic,
    check_large_eps,
    check_more_iterations,
    check_zero_gradients,
    one_point,
)
from .measure import accuracy, batches, max_logit_diff, pgd_robust, predict, project, zero_gradient_count
from .reference import reference_autoattack
from .resume import load_state, model_fingerprint, save_state, state_key

# reference_autoattack, accuracy and zero_gradient_count live in .reference and .measure; they
# stay importable from here, where they were defined before the split.
__all__ = ["EvalResult", "evaluate", "reference_autoattack", "accuracy", "zero_gradient_count", "check_eval_inputs"]

logger = logging.getLogger(__name__)

_MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; the checks use seed + 1


@dataclass
class EvalResult:
    """Result of :func:`evaluate`. Accuracies are fractions in [0, 1].

    Attributes:
        n: points evaluated (the first n of the test set).
        eps: Linf radius in [0, 1] pixel units.
        clean_acc: accuracy on the clean points.
        pgd_steps: PGD iterations of the baseline attack.
        pgd_acc: accuracy under PGD-``pgd_steps`` (random start, step eps / 4).
        attacks: the AutoAttack components run, in order.
        robust_acc_after: robust accuracy after each attack, each attacking only the points
            still robust (so the last value is the pointwise worst case, ``autoattack_acc``).
        autoattack_acc: robust accuracy under the whole ensemble.
        worst_case_acc: fraction of points robust to every attack run (PGD and AutoAttack).
        robust: per point, True if no attack found an adversarial example.
        checks: gradient-masking checks (see :mod:`robin_plugin.eval.checks`).
        reference: the original AutoAttack on the same points when asked for:
            ``{"clean_acc", "robust_acc_after", "autoattack_acc", "seconds", "agrees", "difference"}``.
        seconds: wall time per stage.
        settings: seed, batch size, attack settings, threads and device.
    """

    n: int
    eps: float
    clean_acc: float
    pgd_steps: int
    pgd_acc: float
    attacks: list[str]
    robust_acc_after: dict[str, float]
    autoattack_acc: float
    worst_case_acc: float
    robust: list[bool]
    checks: list[CheckResult] = field(default_factory=list)
    reference: dict[str, Any] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def checks_passed(self) -> bool:
        """True when every gradient-masking check passed."""
        return all(c.passed for c in self.checks)

    @property
    def warnings(self) -> list[str]:
        """The messages of the failed checks (and of a failed reference cross-check)."""
        out = [c.message for c in self.checks if not c.passed]
        if self.reference is not None and not self.reference.get("agrees", True):
            out.append(
                f"WARNING: our AutoAttack ({self.autoattack_acc:.2%}) and the original ({self.reference['autoattack_acc']:.2%}) "
                f"differ by more than {self.reference['tolerance']:.2%}"
            )
        return out

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["checks"] = [c.to_dict() for c in self.checks]
        d["checks_passed"] = self.checks_passed
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalResult":
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["checks"] = [CheckResult.from_dict(c) for c in d.get("checks", [])]
        return cls(**kw)


def check_eval_inputs(images: torch.Tensor, labels: torch.Tensor, n: int | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate test images and labels and return the first ``n`` of them.

    Args:
        images: (N, C, H, W) floats in [0, 1] (float16, bfloat16, float32 or float64: converted
            to float32), or uint8 in [0, 255] (divided by 255); other dtypes are refused.
        labels: (N,) integer class indices.
        n: points to keep (1 <= n <= N); None keeps all.

    Returns:
        ``(images[:n] as float32, labels[:n] as int64)``.
    """
    if not isinstance(images, torch.Tensor) or not isinstance(labels, torch.Tensor):
        raise InputError(f"images and labels must be torch tensors, got {type(images).__name__} and {type(labels).__name__}")
    if images.dim() != 4:
        raise InputError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
    if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
        raise InputError(f"labels must have shape ({images.shape[0]},) to match the images, got {tuple(labels.shape)}")
    if labels.dtype.is_floating_point or labels.dtype == torch.bool or labels.is_complex():
        raise InputError(f"labels must be integer class indices, got dtype {labels.dtype}")
    total = images.shape[0]
    if total == 0:
        raise InputError("no test points: images is empty")
    if n is None:
        n = total
    if not is_int(n) or not 1 <= n <= total:
        raise ConfigError(f"n must be an integer in [1, {total}] (the test set has {total} points), got {n!r}")
    x, y = images[:n], labels[:n].long()
    x = to_float(x)  # uint8 / 255; float16 / 64 -> float32; other dtypes refused
    problem = pixel_range_problem(x)
    if problem == "NaN or Inf":
        raise InputError("images contain NaN or Inf")
    if problem is not None:
        raise InputError(f"images must lie in [0, 1] (the model normalises inside), got {problem}")
    if (y < 0).any():
        raise InputError(f"labels must be >= 0, got {int(y.min())}")
    return x, y


@dataclass(frozen=True)
class _Settings:
    """How one :func:`evaluate` call attacks and checks: its keyword arguments, checked on creation.

    The fields and their defaults are :func:`evaluate`'s (see there); ``attacks`` becomes a
    tuple and ``eps`` / ``large_eps`` floats. Raises :class:`ConfigError` or
    :class:`UnknownNameError` on a bad value, in the order the arguments are listed.
    """

    eps: float  # Linf radius, [0, 1] pixel units
    attacks: tuple[str, ...] = STANDARD_ATTACKS  # AutoAttack components in run order
    pgd_steps: int = 20  # iterations of the PGD baseline
    reference: bool = False  # also run pyautoattack on the same points
    reference_tolerance: float = 0.005  # largest |difference| counted as agreement
    batch_size: int = 250  # points per attack batch
    seed: int = 0  # seed of every attack
    config: AutoAttackConfig = AutoAttackConfig()  # attack strengths
    run_checks: bool = True  # run the gradient-masking checks
    check_n: int = 100  # points of the eps sweep and the PGD-4k check
    large_eps: float = 0.5  # largest eps of the sweep, pixel units
    state_path: str | Path | None = None  # resume file
    progress: bool = True  # progress bars
    fast: bool = True  # attack a fast copy of the model (eval.fast.attack_model); judge on the model

    def __post_init__(self) -> None:
        object.__setattr__(self, "eps", check_eps(self.eps))
        object.__setattr__(self, "large_eps", check_eps(self.large_eps))
        attacks = [self.attacks] if isinstance(self.attacks, str) else list(self.attacks)  # not "apgd-ce" letter by letter
        if not attacks:  # else autoattack_acc would silently be the clean accuracy
            raise ConfigError(f"attacks must name at least one AutoAttack component, got none; valid: {', '.join(STANDARD_ATTACKS)}")
        for name in attacks:
            if name not in STANDARD_ATTACKS:
                raise UnknownNameError(f"unknown attack {name!r}{closest(name, STANDARD_ATTACKS)}; valid: {', '.join(STANDARD_ATTACKS)}")
        if len(set(attacks)) != len(attacks):
            raise ConfigError(f"attacks must not repeat, got {attacks}")
        object.__setattr__(self, "attacks", tuple(attacks))
        for nm, v in (("batch_size", self.batch_size), ("pgd_steps", self.pgd_steps), ("check_n", self.check_n)):
            if not is_int(v) or v < 1:
                raise ConfigError(f"{nm} must be an integer >= 1, got {v!r}")
        if not is_int(self.seed) or not 0 <= self.seed <= _MAX_SEED:
            raise ConfigError(f"seed must be an integer >= 0 and <= 2**63 - 1 ({_MAX_SEED}), got {self.seed!r}")


def evaluate(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    n: int | None = None,
    attacks: Sequence[str] = STANDARD_ATTACKS,
    pgd_steps: int = 20,
    reference: bool = False,
    reference_tolerance: float = 0.005,
    batch_size: int = 250,
    seed: int = 0,
    config: AutoAttackConfig = AutoAttackConfig(),
    run_checks: bool = True,
    check_n: int = 100,
    large_eps: float = 0.5,
    state_path: str | Path | None = None,
    progress: bool = True,
    fast: bool = True,
) -> EvalResult:
    """Evaluate ``model`` on the first ``n`` test points the RobustBench way.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to (N, K) logits. It is evaluated in eval
            mode; a model in training mode is switched to eval for the evaluation (with a
            warning) and switched back afterwards.
        images: (N, C, H, W) test images, floats in [0, 1] or uint8.
        labels: (N,) class indices in [0, K).
        eps: Linf radius in [0, 1] pixel units (8/255 for CIFAR; 0.1 for Fashion-MNIST).
        n: evaluate the first n points (default: all).
        attacks: AutoAttack components in run order (default: the standard four); at least one.
        pgd_steps: iterations of the PGD baseline (default 20).
        reference: also run the original AutoAttack (``pyautoattack``) on the same points.
        reference_tolerance: largest |difference| in robust accuracy counted as agreement.
        batch_size: points per attack batch.
        seed: seed of every attack, in [0, 2**63 - 1] (results are reproducible on the CPU).
        config: attack strengths (default: the original AutoAttack "standard").
        run_checks: run the gradient-masking checks.
        check_n: points used by the eps sweep and the PGD-4k check (the first ``check_n``).
        large_eps: largest eps of the sweep (pixel units); accuracy must be near zero there.
        state_path: JSON file for resuming an interrupted evaluation (written atomically).
        progress: show progress bars with the time left (on a terminal).
        fast: run the attacks on :func:`~robin_plugin.eval.fast.attack_model` (masks and
            BatchNorms folded into the weights, channels-last), about twice as fast on the CPU;
            every adversarial example is still judged on ``model``. False: attack ``model`` itself.

    Returns:
        An :class:`EvalResult`.
    """
    s = _Settings(eps=eps, attacks=attacks, pgd_steps=pgd_steps, reference=reference,
                  reference_tolerance=reference_tolerance, batch_size=batch_size, seed=seed, config=config,
                  run_checks=run_checks, check_n=check_n, large_eps=large_eps, state_path=state_path, progress=progress,
                  fast=fast)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and (not is_int(num_classes) or num_classes < 1):
        raise ConfigError(f"the model has num_classes={num_classes!r}; evaluation needs a classifier with num_classes >= 1 "
                          "(num_classes=0 makes a timm model return features, not logits)")
    x, y = check_eval_inputs(images, labels, n)
    n = x.shape[0]
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise ConfigError("model has no parameters; torchattacks needs one to find the model's device") from None
    x, y = x.to(device), y.to(device)

    was_training = model.training
    if was_training:
        logger.warning("model is in training mode; evaluating in eval mode (BatchNorm running statistics) "
                       "and restoring training mode afterwards")
    model.eval()
    # Attacks need input gradients only; frozen parameters spare autograd the weight/score
    # gradients that FAB's backward() would otherwise accumulate on every iteration.
    grad_flags = [(prm, prm.requires_grad) for prm in model.parameters()]
    for prm, _ in grad_flags:
        prm.requires_grad_(False)
    try:
        return _evaluate(model, x, y, dataclasses.replace(s, check_n=min(s.check_n, n)))
    finally:
        for prm, flag in grad_flags:
            prm.requires_grad_(flag)
        model.train(was_training)


def _evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, s: _Settings) -> EvalResult:
    """The protocol on checked inputs: ``x`` (N, C, H, W) floats in [0, 1] and ``y`` (N,) on the model's device."""
    n = x.shape[0]
    seconds: dict[str, float] = {}
    with torch.no_grad():
        out = model(x[:1])
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 1:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"the model must return logits of shape (N, num_classes) with num_classes >= 1, got {got}")
    num_classes = int(out.shape[1])
    declared = getattr(model, "num_classes", None)
    if is_int(declared) and declared != num_classes:
        raise ConfigError(f"the model declares num_classes={declared} but returns {num_classes} outputs per point")
    if int(y.max()) >= num_classes:
        raise InputError(f"labels must be < {num_classes} (the model's class count), got {int(y.max())}")
    settings = {
        "seed": s.seed, "batch_size": s.batch_size, "attacks": list(s.attacks), "pgd_steps": s.pgd_steps, "eps": s.eps,
        "autoattack": dataclasses.asdict(s.config), "num_classes": num_classes, "fast": s.fast,
        "model": model_fingerprint(model),  # the resume key: another model's state is refused
    }

    t = time.perf_counter()
    clean = predict(model, x, s.batch_size) == y
    # the attacks run on a fast copy (masks and BatchNorms folded, channels-last); every adversarial
    # example is judged on the model itself, so a point is broken only if the model misclassifies it
    attacked = attack_model(model) if s.fast else model
    seconds["clean"] = time.perf_counter() - t
    logger.info("eval/clean_acc %.4f (n=%d)", clean.float().mean().item(), n)

    t = time.perf_counter()
    pgd = pgd_robust(attacked, x, y, s.eps, s.pgd_steps, s.seed, s.batch_size, judge=model) & clean
    seconds["pgd"] = time.perf_counter() - t
    logger.info("eval/pgd%d_acc %.4f", s.pgd_steps, pgd.float().mean().item())

    # --- AutoAttack: each attack on the points still robust --------------------------------------
    state_file = Path(s.state_path) if s.state_path is not None else None
    key = state_key(x, y, settings)
    robust = clean.clone()
    after: dict[str, float] = {}
    done: list[str] = []
    if state_file is not None:
        state = load_state(state_file, key, n, s.attacks)
        if state is not None:
            robust = torch.tensor(state["robust"], dtype=torch.bool, device=x.device)
            after = {k: float(v) for k, v in state["robust_acc_after"].items()}
            done = list(state["done"])
            seconds.update(state.get("seconds", {}))
            logger.info("resuming from %s: %s already done", state_file, ", ".join(done) or "no attack")

    def save() -> None:
        if state_file is not None:
            save_state(state_file, key, robust, after, done, seconds)

    ensemble = standard_attacks(attacked, s.eps, num_classes=num_classes, seed=s.seed, attacks=s.attacks, config=s.config)
    for name, attack in ensemble.items():
        if name in done:
            continue
        t = time.perf_counter()
        idx = robust.nonzero().flatten()
        # a bar on a terminal, log lines otherwise
        with progress_bar(total=len(idx), desc=name, unit="pt", enabled=s.progress) as bar:
            for b_slice in batches(len(idx), s.batch_size):
                b = idx[b_slice]
                with isolated_rng():
                    adv = project(attack(x[b], y[b]), x[b], s.eps)
                fooled = predict(model, adv, s.batch_size) != y[b]
                robust[b[fooled]] = False
                save()
                bar.update(len(b))
        after[name] = robust.float().mean().item()
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - t
        done.append(name)
        save()
        logger.info("eval/robust_acc_after/%s %.4f (%.1f s)", name, after[name], seconds[name])
    aa_acc = robust.float().mean().item()
    worst = robust & pgd

    # --- gradient-masking checks ------------------------------------------------------------
    checks: list[CheckResult] = []
    if s.run_checks:
        t = time.perf_counter()
        checks = _run_checks(model, attacked, x, y, s, clean, pgd, after)
        seconds["checks"] = time.perf_counter() - t
        for c in checks:
            (logger.info if c.passed else logger.warning)("eval/check/%s %s", c.name, c.message)

    ref = None
    if s.reference:
        t = time.perf_counter()
        ref = reference_autoattack(model, x, y, s.eps, batch_size=s.batch_size, seed=s.seed, attacks=s.attacks)
        seconds["reference"] = time.perf_counter() - t
        ref["difference"] = aa_acc - ref["autoattack_acc"]
        ref["tolerance"] = s.reference_tolerance
        ref["agrees"] = abs(ref["difference"]) <= s.reference_tolerance + 1e-12
        logger.info("eval/reference_autoattack_acc %.4f (ours %.4f)", ref["autoattack_acc"], aa_acc)

    settings["threads"] = torch.get_num_threads()
    settings["device"] = str(x.device)
    return EvalResult(
        n=n, eps=s.eps, clean_acc=clean.float().mean().item(), pgd_steps=s.pgd_steps, pgd_acc=pgd.float().mean().item(),
        attacks=list(s.attacks), robust_acc_after=after, autoattack_acc=aa_acc, worst_case_acc=worst.float().mean().item(),
        robust=robust.tolist(), checks=checks, reference=ref, seconds=seconds, settings=settings,
    )


def _run_checks(model: nn.Module, attacked: nn.Module, x: torch.Tensor, y: torch.Tensor, s: _Settings,
                clean: torch.Tensor, pgd: torch.Tensor, after: Mapping[str, float]) -> list[CheckResult]:
    """Measure what the gradient-masking checks judge, and judge it.

    Determinism and zero gradients are measured on ``model``; the PGD runs attack ``attacked``
    (``model`` or its fast copy) and are judged on ``model``.

    ``clean`` and ``pgd`` are the per-point (N,) results so far; ``after`` the robust accuracy
    after each AutoAttack component; ``s.check_n`` is already at most N.
    """
    n = x.shape[0]
    checks = [check_deterministic(max_logit_diff(model, x[:s.batch_size]))]
    checks.append(check_zero_gradients(zero_gradient_count(model, x, y, batch_size=s.batch_size), n))

    xs, ys, cs = x[:s.check_n], y[:s.check_n], clean[:s.check_n]
    sweep_eps = sorted({s.eps, min(1.0, 2 * s.eps), min(1.0, 4 * s.eps), max(s.large_eps, s.eps)})
    acc_by_eps = {}
    for e in sweep_eps:
        acc_by_eps[e] = (pgd_robust(attacked, xs, ys, e, s.pgd_steps, s.seed, s.batch_size, judge=model)
                         & cs).float().mean().item()
    checks.append(check_large_eps(acc_by_eps))

    tol = one_point(s.check_n)
    pgd_k = pgd[:s.check_n].float().mean().item()
    pgd_4k = (pgd_robust(attacked, xs, ys, s.eps, 4 * s.pgd_steps, s.seed + 1, s.batch_size, judge=model)
              & cs).float().mean().item()
    chain = [(f"PGD-{s.pgd_steps}", pgd_k), (f"PGD-{4 * s.pgd_steps}", pgd_4k)]
    more = check_more_iterations(chain, tol=tol)
    if "apgd-ce" in after and s.attacks[0] == "apgd-ce":  # first attack: its accuracy is APGD-CE's alone
        more2 = check_more_iterations([(f"PGD-{s.pgd_steps}", pgd.float().mean().item()), ("APGD-CE", after["apgd-ce"])],
                                      tol=one_point(n))
        if not more2.passed:
            more = more2
    checks.append(more)

    if "square" in after:
        i = s.attacks.index("square")
        before = after[s.attacks[i - 1]] if i > 0 else clean.float().mean().item()
        checks.append(check_black_box(before, after["square"], tol=max(0.002, one_point(n))))
    return checks
