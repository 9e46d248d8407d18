"""Evaluation: full-strength AutoAttack through torchattacks, gradient-masking checks, reports, leaderboard.

- :mod:`.attacks`: the standard AutoAttack ensemble with the original settings.
- :mod:`.evaluate`: :func:`evaluate`, the protocol (clean, PGD-k, AutoAttack per attack, checks,
  reference) and :class:`EvalResult`.
- :mod:`.measure`: the batched measurements it takes (accuracy, PGD robustness, zero gradients).
- :mod:`.checks`: the gradient-masking checks as pure functions.
- :mod:`.resume`: the resume file of an interrupted evaluation (``state_path``).
- :mod:`.reference`: the original AutoAttack (``pyautoattack``) as a cross-check, and the reader
  of its log.
- :mod:`.report`: RobustBench model_info JSON and the terminal table.
- :mod:`.leaderboard`: the RobustBench leaderboard snapshot, comparability checks and ranking.
- :mod:`.robustbench_compat`: ``enable()`` makes RobustBench 1.1.1's own ``load_model`` and
  ``eval.benchmark`` run offline on robin models (optional; not imported here).

Imports flow one way: ``attacks`` <- ``measure`` <- ``reference`` <- ``evaluate`` (which also
reads ``checks`` and ``resume``) <- ``report``.
"""
from __future__ import annotations

from ..pgd import default_pgd_step, pgd_attack
from .attacks import STANDARD_ATTACKS, AutoAttackConfig, build_attack, standard_attacks
from .checks import CheckResult
from .evaluate import EvalResult, evaluate
from .reference import reference_autoattack
from ..formats.result import write_result
from .report import format_report, load_result, make_model_info

__all__ = [
    "STANDARD_ATTACKS", "AutoAttackConfig", "build_attack", "default_pgd_step", "pgd_attack", "standard_attacks",
    "CheckResult", "EvalResult", "evaluate", "reference_autoattack",
    "format_report", "load_result", "make_model_info", "write_result",
]
