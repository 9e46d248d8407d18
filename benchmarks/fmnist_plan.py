"""The plan of the Fashion-MNIST results page: budget, rows, seeds, claims and the decision rule.

Pure data and pure functions, shared by the runner (``fmnist_results.py``: trains, attacks, writes one
result file per run into ``docs/results/fmnist/``) and the page (``fmnist_page.py``: renders
docs/results.md and the README's figures from those files alone).
"""
from __future__ import annotations

import functools
import json
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

# The budget every run gets, written out in full so that a later change of the presets cannot change
# it: the default `robin train` preset's budget (fmnist-fast: batch 64, 5 epochs, channels-last).
BUDGET: dict[str, Any] = dict(
    model="robin_resnet18", model_kwargs={"width": 16}, keep_ratio=0.05, p=0.1, dataset="fashion_mnist",
    train_subset=20000, epochs=5, batch_size=64, lr=0.1, lr_schedule="cosine", momentum=0.9, weight_decay=5e-4,
    attack="ffgsm", eps=0.1, step_size=0.125, eval_step_size=0.025, val_pgd_steps=5, test_n=1000, test_pgd_steps=20,
    channels_last=True, co_guard="warn", attack_mode="train",
)
SIDES: dict[str, dict[str, Any]] = {"dense": {"model": "robin_resnet18_dense"}, "robin": {}}
"""The two sides of the comparison; each is tuned on its own."""
SWEEP: list[dict[str, Any]] = [  # what each side's tuning tries (the same list for both)
    dict(lr_schedule="cosine", lr=0.05, batch_size=64),
    dict(lr_schedule="cosine", lr=0.1, batch_size=64),
    dict(lr_schedule="cosine", lr=0.2, batch_size=64),
    dict(lr_schedule="onecycle", lr=0.1, batch_size=64),
    dict(lr_schedule="onecycle", lr=0.2, batch_size=64),
    dict(lr_schedule="onecycle", lr=0.2, batch_size=128),
]
HELDOUT = (59000, 60000)
"""Training images [start, stop) the tuning is judged on: outside every run's ``train_subset``."""
ROWS: list[dict[str, Any]] = [
    # name, label, side, what changes from the side's tuned recipe, kind
    dict(name="dense", label="dense full-precision AT (same architecture, affine BN)", side="dense", kind="headline"),
    dict(name="k0.05", label="robin, keep 0.05, p 0.1, +-1, last BN", side="robin", kind="headline"),
    dict(name="k0.01", label="robin, keep 0.01", side="robin", set={"keep_ratio": 0.01}, kind="headline"),
    dict(name="k0.1", label="robin, keep 0.1", side="robin", set={"keep_ratio": 0.1}, kind="ablation"),
    dict(name="k0.05-p1", label="keep 0.05, p = 1 (uniform keep ratio)", side="robin", set={"p": 1.0}, kind="ablation"),
    dict(name="k0.05-nolastbn", label="keep 0.05, no last BatchNorm", side="robin",
         set={"model_kwargs": {"width": 16, "last_bn": False}}, kind="ablation"),
    dict(name="k0.05-uniformpm1", label="keep 0.05, U(-1, 1) weights (official uniform_pm1; not binary)", side="robin",
         set={"model_kwargs": {"width": 16, "init": "uniform_pm1"}}, kind="ablation"),
    dict(name="k0.05-kaimingnormal", label="keep 0.05, Kaiming normal weights (not binary)", side="robin",
         set={"model_kwargs": {"width": 16, "init": "kaiming_normal"}}, kind="ablation"),
    dict(name="k0.05-pgd", label="keep 0.05, PGD-5 AT (step 0.03) instead of FGSM-RS", side="robin",
         set={"attack": "pgd", "attack_steps": 5, "step_size": 0.03}, kind="ablation"),
    # the keep 0.1 study: does keep 0.1 trail keep 0.05 because of its learning rate, or its budget?
    dict(name="k0.1-lr0.05", label="keep 0.1, lr 0.05", side="robin", set={"keep_ratio": 0.1, "lr": 0.05}, kind="study"),
    dict(name="k0.1-10ep", label="keep 0.1, 10 epochs", side="robin", set={"keep_ratio": 0.1, "epochs": 10}, kind="study"),
    dict(name="k0.05-10ep", label="keep 0.05, 10 epochs", side="robin", set={"epochs": 10}, kind="study"),
]
WIDTH_TWINS = {"k0.01": "7k", "k0.05": "35k"}
"""The width study: at each wider width, one row per width-16 row here, with the keep ratio that keeps
the same number of weights (its label names the budget)."""
WIDTHS = (32,)  # 48 too with --widths 32 48 (about 9x the compute of width 16 per run)
QUICK = {"train_subset": 600, "epochs": 1, "test_n": 100, "val_pgd_steps": 2}
QUICK_HELDOUT = (59900, 60000)


SEEDS = (3, 4, 5)
"""Seeds of the headline rows. Seed 0 trained the tuning sweep, so it chose the recipe: no row uses it."""
ABLATION_SEEDS = (3, 4)
"""Seeds of the ablations, the width study and the keep 0.1 study."""
AA_N = 500
"""AutoAttack points (the first of the test set) for every seed of the headline rows."""

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "fmnist"
"""The page's result files: one JSON per finished run, plus tuning.json (the recipe each side chose)."""


def read_tuning(folder: Path = RESULTS) -> dict[str, Any]:
    """The tuning record: every sweep point's held-out score and each side's chosen point."""
    return json.loads((folder / "tuning.json").read_text())


# --- rows ----------------------------------------------------------------------------------------
def side_config(side: str, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """BUDGET with the side's model and its tuned sweep values (plain dict)."""
    return dict(BUDGET, **SIDES[side], **(tuned or {}))


def sweep_name(side: str, point: dict[str, Any]) -> str:
    return f"sweep-{side}-{point['lr_schedule']}-lr{point['lr']:g}-b{point['batch_size']}"


def width_rows(widths: Sequence[int]) -> list[dict[str, Any]]:
    """One row per (wider width, width-16 twin): same kept weights as the twin."""
    rows = []
    for width in widths:
        for twin, budget in WIDTH_TWINS.items():
            base = next(r for r in ROWS if r["name"] == twin)
            keep = _keep_ratio(base.get("set", {}).get("keep_ratio", BUDGET["keep_ratio"]), 16, width)
            rows.append(dict(name=f"w{width}-{budget}", label=f"width {width}, keep {keep:.4f} (~{budget} kept weights, as {twin})",
                             side="robin", set={"keep_ratio": keep, "model_kwargs": {"width": width}}, kind="width",
                             width=width, twin=twin, budget=budget))
    return rows


def _keep_ratio(keep16: float, width16: int, width: int) -> float:
    """The keep ratio at ``width`` that keeps as many weights as ``keep16`` keeps at ``width16``."""
    return round(keep16 * _total_weights(width16) / _total_weights(width), 6)


@functools.lru_cache
def _total_weights(width: int) -> int:
    import timm

    from robin_plugin.summary import summarize

    return summarize(timm.create_model("robin_resnet18", num_classes=10, in_chans=1, width=width)).total


def priority(row: dict[str, Any]) -> int:
    """Training order of the rows: headline, then keep 0.1 (the row to explain), the width study, the other ablations."""
    return {"headline": 0, "ablation": 1 if row["name"] == "k0.1" else 3, "width": 2, "study": 4}[row["kind"]]


def seeds_of(row: dict[str, Any], seeds: Sequence[int] = SEEDS, ablation_seeds: Sequence[int] = ABLATION_SEEDS) -> list[int]:
    """The seeds a row runs on: ``seeds`` for the headline rows, ``ablation_seeds`` for the others."""
    return list(seeds if row["kind"] == "headline" else ablation_seeds)


# --- statistics and claims --------------------------------------------------------------
def seed_stats(values: list[float]) -> dict[str, float] | None:
    """Mean, sample standard deviation (0 for one value), min and max of ``values``."""
    if not values:
        return None
    return {"mean": statistics.fmean(values), "sd": statistics.stdev(values) if len(values) > 1 else 0.0,
            "min": min(values), "max": max(values), "n": len(values)}


def verdict(a: list[float], b: list[float], *, matches: bool = False) -> tuple[str, float, float]:
    """The page's rule, fixed before the runs: with d = mean(a) - mean(b) and s the larger of the two
    rows' seed standard deviations, a claim that ``a`` beats ``b`` **agrees** when d > 2s,
    **contradicts** when d < -2s, and is **undecided** otherwise; a claim that ``a`` matches ``b``
    (``matches``) contradicts when d < -2s and agrees otherwise. Either row with fewer than 2 seeds:
    undecided. Returns (verdict, d, s)."""
    d = statistics.fmean(a) - statistics.fmean(b)
    if len(a) < 2 or len(b) < 2:
        return "undecided (fewer than 2 seeds)", d, float("nan")
    s = max(statistics.stdev(a), statistics.stdev(b))
    if d < -2 * s:
        return "contradicts", d, s
    if matches or d > 2 * s:
        return "agrees", d, s
    return "undecided", d, s


CLAIMS = [  # (claim, a, b, matches): the paper's claims, decided by verdict() on PGD-20
    ("A binary subnetwork at 5% of the weights matches dense full-precision AT", "k0.05", "dense", True),
    ("... and at 1% of the weights", "k0.01", "dense", True),
    ("Adaptive keep ratios (p = 0.1) beat a uniform ratio (p = 1)", "k0.05", "k0.05-p1", False),
    ("The last BatchNorm on the logits helps", "k0.05", "k0.05-nolastbn", False),
    ("+-1 weights beat U(-1, 1) weights (the official uniform_pm1)", "k0.05", "k0.05-uniformpm1", False),
    ("+-1 weights beat Kaiming normal weights", "k0.05", "k0.05-kaimingnormal", False),
    ("PGD training beats single-step (FGSM-RS) training", "k0.05-pgd", "k0.05", False),
    ("At ~7k kept weights, a wider network pruned harder beats width 16", "w32-7k", "k0.01", False),
    ("... width 48 beats width 32 (~7k kept weights)", "w48-7k", "w32-7k", False),
    ("At ~35k kept weights, a wider network pruned harder beats width 16", "w32-35k", "k0.05", False),
    ("... width 48 beats width 32 (~35k kept weights)", "w48-35k", "w32-35k", False),
]


STUDY_CLAIMS = [  # the keep 0.1 study, decided by the same rule
    ("Keep 0.1 trails keep 0.05 on the page's budget", "k0.05", "k0.1", False),
    ("A lower learning rate (0.05) helps keep 0.1", "k0.1-lr0.05", "k0.1", False),
    ("Twice the epochs help keep 0.1", "k0.1-10ep", "k0.1", False),
    ("At 10 epochs keep 0.1 matches keep 0.05", "k0.1-10ep", "k0.05-10ep", True),
]
STRENGTH_STEPS = (5, 20, 100)
"""PGD iterations of the attack-strength check on the keep 0.1 study's rows (same points, same start)."""
STRENGTH_ROWS = ("k0.05", "k0.1", "k0.1-lr0.05", "k0.1-10ep", "k0.05-10ep")
