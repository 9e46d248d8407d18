"""The decision rule of benchmarks/bench_train_step.py: a bootstrap interval of the paired ratios."""
from __future__ import annotations

import importlib.util
from pathlib import Path

_SPEC = importlib.util.spec_from_file_location(
    "bench_train_step", Path(__file__).resolve().parents[2] / "benchmarks" / "bench_train_step.py")
bts = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(bts)


def test_the_verdict_follows_the_stated_rule():
    assert bts.verdict((0.98, 1.04), 1.05) == "MET"
    assert bts.verdict((1.00, 1.05), 1.05) == "MET"  # the bound itself meets "<= 1.05"
    assert bts.verdict((1.06, 1.10), 1.05) == "NOT MET"
    assert bts.verdict((1.02, 1.08), 1.05) == "UNDECIDED"


def test_the_interval_holds_the_median_and_narrows_with_more_pairs():
    few = [1.0, 1.2, 0.9, 1.1, 1.05, 0.95, 1.15, 1.0]
    lo, hi = bts.median_interval(few)
    assert lo <= 1.025 <= hi  # the sample median
    many = few * 16
    lo2, hi2 = bts.median_interval(many)
    assert hi2 - lo2 < hi - lo
    assert bts.median_interval(few) == (lo, hi)  # seeded: the same interval on every run
    assert bts.median_interval([1.07] * 10) == (1.07, 1.07)
