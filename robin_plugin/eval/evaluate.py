"""RobustBench-protocol evaluation: clean accuracy, PGD-k, and AutoAttack "standard" at full strength.

The protocol (Croce et al., "RobustBench", NeurIPS 2021 Datasets and Benchmarks): the first ``n``
test points, Linf, eps 8/255 on CIFAR-10 and CIFAR-100. AutoAttack runs its attacks one after the
other, each only on the points still robust, so the robust accuracy after the last attack is the
pointwise worst case over the ensemble. :func:`evaluate` also reports the accuracy after every
attack, a PGD-k baseline, the gradient-masking checks of :mod:`robin_plugin.eval.checks`, and on
request the original AutoAttack (PyPI ``pyautoattack``) on the same points for comparison.

Evaluation cost (CPU): about 1.8 s per point for a width-16 ResNet-18 on 28x28 inputs, so the
progress bars show the time left, and ``state_path`` makes a long run resumable: the robust flags
are written after every batch, and a rerun with the same settings skips the attacks already done.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..errors import ConfigError, InputError, RobinError, UnknownNameError, closest
from ..io import atomic_write_json
from .attacks import STANDARD_ATTACKS, AutoAttackConfig, check_eps, isolated_rng, pgd_attack, standard_attacks
from .checks import (
    CheckResult,
    check_black_box,
    check_deterministic,
    check_large_eps,
    check_more_iterations,
    check_zero_gradients,
    one_point,
)

__all__ = ["EvalResult", "evaluate", "reference_autoattack", "accuracy", "zero_gradient_count", "check_eval_inputs"]

logger = logging.getLogger(__name__)

_STATE_VERSION = 1
_MAX_SEED = 2**63 - 1  # torch generators take 64-bit seeds; the checks use seed + 1
_MAX_STATE_BYTES = 256 * 2**20  # a state file holds one flag per point: ~10 bytes each


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
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= total:
        raise ConfigError(f"n must be an integer in [1, {total}] (the test set has {total} points), got {n!r}")
    x, y = images[:n], labels[:n].long()
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    elif not x.is_floating_point():
        raise InputError(f"images must be floats in [0, 1] or uint8, got dtype {x.dtype}")
    x = x.float()
    if not torch.isfinite(x).all():
        raise InputError("images contain NaN or Inf")
    lo, hi = x.min().item(), x.max().item()
    if lo < 0.0 or hi > 1.0:
        raise InputError(f"images must lie in [0, 1] (the model normalises inside), got values in [{lo:.4g}, {hi:.4g}]")
    if (y < 0).any():
        raise InputError(f"labels must be >= 0, got {int(y.min())}")
    return x, y


def _batches(n: int, batch_size: int) -> list[slice]:
    return [slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]


@torch.no_grad()
def _predict(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    return torch.cat([model(x[s]).argmax(1) for s in _batches(x.shape[0], batch_size)])


def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 250) -> float:
    """Fraction of ``images`` (N, C, H, W) in [0, 1] that ``model`` classifies as ``labels`` (N,)."""
    return (_predict(model, images, batch_size) == labels).float().mean().item()


def zero_gradient_count(model: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 250) -> int:
    """Points whose margin-loss gradient with respect to the input is exactly zero.

    The margin loss ``max_{j != y} z_j - z_y`` is used rather than cross-entropy because its
    gradient does not vanish on confidently classified points, so a zero here means the
    model itself blocks the gradient.
    """
    count = 0
    for s in _batches(images.shape[0], batch_size):
        x = images[s].clone().requires_grad_(True)
        y = labels[s]
        with torch.enable_grad():
            z = model(x)  # (B, K)
            true = z.gather(1, y[:, None]).squeeze(1)
            other = z.masked_fill(F.one_hot(y, z.shape[1]).bool(), -math.inf).amax(1)
            (g,) = torch.autograd.grad((other - true).sum(), x)
        count += int((g.reshape(g.shape[0], -1).abs().sum(1) == 0).sum())
    return count


def _max_logit_diff(model: nn.Module, x: torch.Tensor, repeats: int = 3) -> float:
    with torch.no_grad():
        outs = [model(x) for _ in range(repeats)]
    outs = [o / (o.norm(dim=1, keepdim=True) + 1e-10) for o in outs]
    return max(((a - b).norm(dim=1).max().item() for a, b in zip(outs, outs[1:])), default=0.0)


def _pgd_robust(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int, seed: int, batch_size: int) -> torch.Tensor:
    """Per point: True if PGD-``steps`` at ``eps`` does not change the prediction away from ``y``."""
    attack = pgd_attack(model, eps, steps)
    out = []
    with isolated_rng():
        torch.manual_seed(seed)
        for s in _batches(x.shape[0], batch_size):
            adv = _project(attack(x[s], y[s]), x[s], eps)
            out.append(_predict(model, adv, batch_size) == y[s])
    return torch.cat(out) if out else torch.zeros(0, dtype=torch.bool)


def _project(adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Clip an attack's output into the eps ball and [0, 1], so no attack can overstep."""
    return torch.min(torch.max(adv.detach(), x - eps), x + eps).clamp(0.0, 1.0)


def _progress(total: int, desc: str, enabled: bool):
    from ..progress import progress

    return progress(total=total, desc=desc, unit="pt", enabled=enabled)  # a bar on a terminal, log lines otherwise


def _state_key(x: torch.Tensor, y: torch.Tensor, settings: Mapping[str, Any]) -> str:
    h = hashlib.sha256()
    h.update(x.numpy().tobytes() if x.device.type == "cpu" else x.cpu().numpy().tobytes())
    h.update(y.cpu().numpy().tobytes())
    h.update(json.dumps(settings, sort_keys=True).encode())
    return h.hexdigest()


def _load_state(path: Path, key: str, n: int, attacks: Sequence[str]) -> dict[str, Any] | None:
    """Read and check a resume file: the same evaluation, and every field of the right type."""
    from ..io import read_limited

    if not path.exists():
        return None
    try:
        state = json.loads(read_limited(path, _MAX_STATE_BYTES).decode("utf-8"))
        ok = state.get("version") == _STATE_VERSION and state.get("key") == key and len(state["robust"]) == n
    except RecursionError:
        raise RobinError(f"cannot resume from {path}: not a valid evaluation state file (nested too deeply); "
                         "delete it to start over") from None
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # UnicodeDecodeError, size limit
        raise RobinError(f"cannot resume from {path}: not a valid evaluation state file ({e}); delete it to start over") from e
    if not ok:
        raise RobinError(
            f"{path} holds the state of a different evaluation (other model inputs, points or settings); "
            f"delete it or pass another state path"
        )

    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0 <= v < math.inf

    problems = []
    if not all(isinstance(r, bool) for r in state["robust"]):
        problems.append("'robust' must be a list of true/false")
    after = state.get("robust_acc_after")
    if not isinstance(after, dict) or not all(k in attacks and number(v) and v <= 1 for k, v in after.items()):
        problems.append(f"'robust_acc_after' must map attacks among {list(attacks)} to fractions in [0, 1]")
    done = state.get("done")
    if not isinstance(done, list) or not all(isinstance(a, str) and a in attacks for a in done) or len(set(done)) != len(done):
        problems.append(f"'done' must list attacks among {list(attacks)}, each once")
    elif isinstance(after, dict) and set(after) != set(done):
        problems.append("'done' and 'robust_acc_after' must name the same attacks")
    seconds = state.get("seconds", {})
    if not isinstance(seconds, dict) or not all(isinstance(k, str) and number(v) for k, v in seconds.items()):
        problems.append("'seconds' must map stages to times >= 0")
    if problems:
        raise RobinError(f"cannot resume from {path}: not a valid evaluation state file ({'; '.join(problems)}); "
                         "delete it to start over")
    return state


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

    Returns:
        An :class:`EvalResult`.
    """
    eps = check_eps(eps)
    large_eps = check_eps(large_eps)
    if isinstance(attacks, str):  # "apgd-ce" would otherwise be read letter by letter
        attacks = [attacks]
    attacks = list(attacks)
    if not attacks:  # else autoattack_acc would silently be the clean accuracy
        raise ConfigError(f"attacks must name at least one AutoAttack component, got none; valid: {', '.join(STANDARD_ATTACKS)}")
    for name in attacks:
        if name not in STANDARD_ATTACKS:
            raise UnknownNameError(f"unknown attack {name!r}{closest(name, STANDARD_ATTACKS)}; valid: {', '.join(STANDARD_ATTACKS)}")
    if len(set(attacks)) != len(attacks):
        raise ConfigError(f"attacks must not repeat, got {attacks}")
    for nm, v in (("batch_size", batch_size), ("pgd_steps", pgd_steps), ("check_n", check_n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{nm} must be an integer >= 1, got {v!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= _MAX_SEED:
        raise ConfigError(f"seed must be an integer >= 0 and <= 2**63 - 1 ({_MAX_SEED}), got {seed!r}")
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    num_classes = getattr(model, "num_classes", None)
    if num_classes is not None and (isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1):
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
        return _evaluate(model, x, y, eps, attacks, pgd_steps, reference, reference_tolerance, batch_size, seed, config,
                         run_checks, min(check_n, n), large_eps, state_path, progress)
    finally:
        for prm, flag in grad_flags:
            prm.requires_grad_(flag)
        model.train(was_training)


def _evaluate(model, x, y, eps, attacks, pgd_steps, reference, reference_tolerance, batch_size, seed, config,
              run_checks, check_n, large_eps, state_path, progress) -> EvalResult:
    n = x.shape[0]
    seconds: dict[str, float] = {}
    with torch.no_grad():
        out = model(x[:1])
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 1:
        got = f"shape {tuple(out.shape)}" if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"the model must return logits of shape (N, num_classes) with num_classes >= 1, got {got}")
    num_classes = int(out.shape[1])
    declared = getattr(model, "num_classes", None)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared != num_classes:
        raise ConfigError(f"the model declares num_classes={declared} but returns {num_classes} outputs per point")
    if int(y.max()) >= num_classes:
        raise InputError(f"labels must be < {num_classes} (the model's class count), got {int(y.max())}")
    settings = {
        "seed": seed, "batch_size": batch_size, "attacks": attacks, "pgd_steps": pgd_steps, "eps": eps,
        "autoattack": dataclasses.asdict(config), "num_classes": num_classes,
    }

    t = time.perf_counter()
    clean = _predict(model, x, batch_size) == y
    seconds["clean"] = time.perf_counter() - t
    logger.info("eval/clean_acc %.4f (n=%d)", clean.float().mean().item(), n)

    t = time.perf_counter()
    pgd = _pgd_robust(model, x, y, eps, pgd_steps, seed, batch_size) & clean
    seconds["pgd"] = time.perf_counter() - t
    logger.info("eval/pgd%d_acc %.4f", pgd_steps, pgd.float().mean().item())

    # --- AutoAttack: each attack on the points still robust --------------------------------------
    state_file = Path(state_path) if state_path is not None else None
    key = _state_key(x, y, settings)
    robust = clean.clone()
    after: dict[str, float] = {}
    done: list[str] = []
    if state_file is not None:
        state = _load_state(state_file, key, n, attacks)
        if state is not None:
            robust = torch.tensor(state["robust"], dtype=torch.bool, device=x.device)
            after = {k: float(v) for k, v in state["robust_acc_after"].items()}
            done = list(state["done"])
            seconds.update(state.get("seconds", {}))
            logger.info("resuming from %s: %s already done", state_file, ", ".join(done) or "no attack")

    def save() -> None:
        if state_file is not None:
            atomic_write_json(state_file, {"version": _STATE_VERSION, "key": key, "robust": robust.tolist(),
                                           "robust_acc_after": after, "done": done, "seconds": seconds})

    ensemble = standard_attacks(model, eps, num_classes=num_classes, seed=seed, attacks=tuple(attacks), config=config)
    for name, attack in ensemble.items():
        if name in done:
            continue
        t = time.perf_counter()
        idx = robust.nonzero().flatten()
        with _progress(len(idx), name, progress) as bar:
            for s in _batches(len(idx), batch_size):
                b = idx[s]
                with isolated_rng():
                    adv = _project(attack(x[b], y[b]), x[b], eps)
                fooled = _predict(model, adv, batch_size) != y[b]
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
    if run_checks:
        t = time.perf_counter()
        checks = _run_checks(model, x, y, eps, clean, pgd, after, attacks, pgd_steps, seed, batch_size, check_n, large_eps)
        seconds["checks"] = time.perf_counter() - t
        for c in checks:
            (logger.info if c.passed else logger.warning)("eval/check/%s %s", c.name, c.message)

    ref = None
    if reference:
        t = time.perf_counter()
        ref = reference_autoattack(model, x, y, eps, batch_size=batch_size, seed=seed, attacks=tuple(attacks))
        seconds["reference"] = time.perf_counter() - t
        ref["difference"] = aa_acc - ref["autoattack_acc"]
        ref["tolerance"] = reference_tolerance
        ref["agrees"] = abs(ref["difference"]) <= reference_tolerance + 1e-12
        logger.info("eval/reference_autoattack_acc %.4f (ours %.4f)", ref["autoattack_acc"], aa_acc)

    settings["threads"] = torch.get_num_threads()
    settings["device"] = str(x.device)
    return EvalResult(
        n=n, eps=eps, clean_acc=clean.float().mean().item(), pgd_steps=pgd_steps, pgd_acc=pgd.float().mean().item(),
        attacks=list(attacks), robust_acc_after=after, autoattack_acc=aa_acc, worst_case_acc=worst.float().mean().item(),
        robust=robust.tolist(), checks=checks, reference=ref, seconds=seconds, settings=settings,
    )


def _run_checks(model, x, y, eps, clean, pgd, after, attacks, pgd_steps, seed, batch_size, check_n, large_eps) -> list[CheckResult]:
    n = x.shape[0]
    checks = [check_deterministic(_max_logit_diff(model, x[:batch_size]))]
    checks.append(check_zero_gradients(zero_gradient_count(model, x, y, batch_size=batch_size), n))

    xs, ys, cs = x[:check_n], y[:check_n], clean[:check_n]
    sweep_eps = sorted({eps, min(1.0, 2 * eps), min(1.0, 4 * eps), max(large_eps, eps)})
    acc_by_eps = {}
    for e in sweep_eps:
        acc_by_eps[e] = (_pgd_robust(model, xs, ys, e, pgd_steps, seed, batch_size) & cs).float().mean().item()
    checks.append(check_large_eps(acc_by_eps))

    tol = one_point(check_n)
    pgd_k = pgd[:check_n].float().mean().item()
    pgd_4k = (_pgd_robust(model, xs, ys, eps, 4 * pgd_steps, seed + 1, batch_size) & cs).float().mean().item()
    chain = [(f"PGD-{pgd_steps}", pgd_k), (f"PGD-{4 * pgd_steps}", pgd_4k)]
    more = check_more_iterations(chain, tol=tol)
    if "apgd-ce" in after and attacks[0] == "apgd-ce":  # first attack: its accuracy is APGD-CE's alone
        more2 = check_more_iterations([(f"PGD-{pgd_steps}", pgd.float().mean().item()), ("APGD-CE", after["apgd-ce"])],
                                      tol=one_point(n))
        if not more2.passed:
            more = more2
    checks.append(more)

    if "square" in after:
        i = attacks.index("square")
        before = after[attacks[i - 1]] if i > 0 else clean.float().mean().item()
        checks.append(check_black_box(before, after["square"], tol=max(0.002, one_point(n))))
    return checks


def _dist_version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


_AFTER_RE = re.compile(r"robust accuracy after ([A-Z\-]+): ([0-9.]+)%")


def reference_autoattack(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    eps: float,
    *,
    batch_size: int = 250,
    seed: int = 0,
    attacks: tuple[str, ...] = STANDARD_ATTACKS,
) -> dict[str, Any]:
    """Run the original AutoAttack (PyPI ``pyautoattack``, version "standard") on the same points.

    Args:
        model: maps (N, C, H, W) images in [0, 1] to logits; must be in eval mode.
        images: (N, C, H, W) floats in [0, 1]; labels: (N,) int64.
        eps: Linf radius in [0, 1] pixel units.
        attacks: the components; anything but the standard four in order runs as "custom".

    Returns:
        ``{"clean_acc", "robust_acc_after": {attack: acc}, "autoattack_acc", "seconds", "version"}``.

    Raises:
        RobinError: ``pyautoattack`` is not installed (``pip install pyautoattack``).
    """
    try:
        import pyautoattack
    except ImportError as e:
        raise RobinError("the reference cross-check needs the original AutoAttack: pip install pyautoattack==0.2.0") from e
    eps = check_eps(eps)
    device = next(model.parameters()).device
    standard = tuple(attacks) == STANDARD_ATTACKS
    aa = pyautoattack.AutoAttack(model, device=device, eps=eps, norm="Linf", seed=seed,
                                 version="standard" if standard else "custom", **({} if standard else {"attacks": list(attacks)}))
    if not standard:  # apply the standard strengths to the custom list
        aa._set_version("standard")
        aa.attacks_to_run = list(attacks)
    records: list[tuple[int, str]] = []

    class _Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append((record.levelno, record.getMessage()))

    aa_logger = logging.getLogger("auto-attack")
    handler, old_level, old_propagate = _Capture(level=logging.DEBUG), aa_logger.level, aa_logger.propagate
    aa_logger.addHandler(handler)
    aa_logger.setLevel(logging.DEBUG)
    aa_logger.propagate = False
    t = time.perf_counter()
    try:
        with isolated_rng():
            _, y_adv = aa.run_standard_evaluation(images, labels, batch_size=batch_size)
    finally:
        aa_logger.removeHandler(handler)
        aa_logger.setLevel(old_level)
        aa_logger.propagate = old_propagate
    seconds = time.perf_counter() - t
    after = {}
    warnings = []
    for level, msg in records:
        m = _AFTER_RE.search(msg)
        if m:
            after[m.group(1).lower()] = float(m.group(2)) / 100.0
        if level >= logging.WARNING:
            warnings.append(msg)
            logger.warning("pyautoattack: %s", msg)
    robust_acc = (y_adv.to(labels.device) == labels).float().mean().item()
    return {
        "clean_acc": accuracy(model, images, labels, batch_size=batch_size),
        "robust_acc_after": after,
        "autoattack_acc": robust_acc,
        "seconds": seconds,
        "warnings": warnings,
        "version": _dist_version("pyautoattack"),
    }
