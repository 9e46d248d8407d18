"""The Fashion-MNIST results page (docs/results.md): does the paper's recipe hold at small scale?

One resumable command, in three stages:

1. **Tuning.** The dense twin and robin (keep 0.05) each get the same small sweep (``SWEEP``:
   learning rate, cosine or one-cycle schedule, batch size) on the same budget (``BUDGET``: 5 epochs
   of FGSM-RS on the first 20,000 training images). Each side keeps the recipe with the best
   PGD-20 accuracy on ``HELDOUT`` (1,000 training images that no run trains on); the test images
   are never looked at to choose.
2. **Rows.** Every row (``ROWS``) runs its side's chosen recipe and changes one thing; headline rows
   on ``--seeds`` (3), ablations and the width study (``WIDTHS``) on ``--ablation-seeds`` (2).
   Each gets clean and PGD-20 accuracy on the first 1,000 test images.
3. **AutoAttack** (standard, original strength, with the gradient-masking checks) on the first
   ``--aa-n`` (500) test images for the headline rows, first seed.

Each run lives in ``--cache/<name>-s<seed>/`` and is skipped (or resumed) when run again; the
page lists what has not finished yet.

    .venv/bin/python benchmarks/fmnist_results.py --jobs 2   # everything (hours on 2 cores; resumable)
    .venv/bin/python benchmarks/fmnist_results.py --no-train # write the page now from the finished runs
    .venv/bin/python benchmarks/fmnist_results.py --quick    # a smoke run: tiny budget, minutes
    python benchmarks/fmnist_results.py --jobs 8 --no-aa &    # on a GPU machine: training and AutoAttack
    python benchmarks/fmnist_results.py --jobs 3 --aa-only    #   side by side (training follows config.device)

Writes docs/results.md (or --out), plots next to it in docs/img/, and results.json in the cache
(``--quick``: everything in its own cache folder, runs/fmnist_results_quick/).
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

import robin_plugin  # noqa: F401
from robin_plugin.io import atomic_write_bytes, atomic_write_json
from robin_plugin.training import TrainConfig, apply_overrides, load_run, train
from robin_plugin.training.trainer import resolve_device

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


RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results" / "fmnist"
"""The page's result files: one JSON per finished run, plus tuning.json (the recipe each side chose)."""


def read_tuning(folder: Path = RESULTS) -> dict[str, Any]:
    """The tuning record: every sweep point's held-out score and each side's chosen point."""
    return json.loads((folder / "tuning.json").read_text())


# --- planning ------------------------------------------------------------------------------------
def side_config(side: str, tuned: dict[str, Any] | None = None) -> dict[str, Any]:
    """BUDGET with the side's model and its tuned sweep values (plain dict)."""
    return dict(BUDGET, **SIDES[side], **(tuned or {}))


def make_config(base: dict[str, Any], changes: dict[str, Any], seed: int, name: str, args) -> TrainConfig:
    overrides = dict(changes, seed=seed, out_dir=str(Path(args.cache) / f"{name}-s{seed}"), progress=False)
    if args.quick:
        overrides.update(QUICK)
    return apply_overrides(base, overrides)


def sweep_name(side: str, point: dict[str, Any]) -> str:
    return f"sweep-{side}-{point['lr_schedule']}-lr{point['lr']:g}-b{point['batch_size']}"


def sweep_points(args) -> list[dict[str, Any]]:
    return SWEEP[:2] if args.quick else SWEEP


def width_rows(args) -> list[dict[str, Any]]:
    """One row per (wider width, width-16 twin): same kept weights as the twin."""
    rows = []
    for width in args.widths:
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


def seeds_of(row: dict[str, Any], args) -> list[int]:
    return list(args.seeds if row["kind"] == "headline" else args.ablation_seeds)


# --- running -------------------------------------------------------------------------------------
def check_cache(config: TrainConfig) -> bool:
    """Whether ``config``'s run has finished; refuses a cached run made with another recipe."""
    out = Path(config.out_dir)
    if not (out / "results.json").is_file():
        return False
    cached = json.loads((out / "config.json").read_text())
    ignore = {"progress"} | ({"keep_ratio", "p", "prune_steps"} if config.model.endswith("_dense") else set())
    changed = sorted(k for k, v in config.to_dict().items() if k not in ignore and cached.get(k) != v)
    if changed:
        raise SystemExit(f"{out} was trained with a different recipe ({', '.join(changed)} differ); "
                         "delete that folder to retrain it, or pass another --cache")
    return True


def _worker_init(threads: int) -> None:
    torch.set_num_threads(threads)
    with contextlib.suppress(Exception):  # Linux: a worker dies with the command instead of training on alone
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def run_one(config: TrainConfig, heldout: tuple[int, int] | None, log: bool, device: str = "cpu") -> dict[str, Any]:
    """Train ``config`` (resuming), then, for a tuning run, score it on the held-out images.
    With ``log`` its output goes to ``train.log`` in its folder (parallel workers)."""
    out = Path(config.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with (open(out / "train.log", "a") if log else contextlib.nullcontext()) as f:
        redirect = (contextlib.redirect_stdout(f), contextlib.redirect_stderr(f)) if f else ()
        with contextlib.ExitStack() as stack:
            for r in redirect:
                stack.enter_context(r)
            result = json.loads((out / "results.json").read_text()) if (out / "results.json").is_file() else train(config, resume=True)
            if heldout is not None and not (out / "heldout.json").is_file():
                atomic_write_json(out / "heldout.json", score_heldout(out, config, heldout, device))
    return result


def score_heldout(out: Path, config: TrainConfig, span: tuple[int, int], device: str = "cpu") -> dict[str, Any]:
    """Clean and PGD-20 accuracy of the run's best epoch on training images ``span`` (never trained on)."""
    from robin_plugin.data import get_dataset
    from robin_plugin.training.metrics import clean_and_pgd_accuracy

    model, _ = load_run(out, "best")
    model.to(device)
    data = get_dataset(config.dataset, config.data_root, split="train")
    x, y = data.images[span[0]:span[1]], data.labels[span[0]:span[1]]
    m = clean_and_pgd_accuracy(model, x, y, eps=config.eps, step_size=config.eval_step_size, steps=config.test_pgd_steps,
                               seed=config.seed, device=torch.device(device))
    return {"images": list(span), "clean_acc": m["clean_acc"], "pgd20_acc": m["robust_acc"]}


def run_all(jobs: list[tuple[TrainConfig, tuple[int, int] | None]], args) -> None:
    """Train every unfinished job, ``args.jobs`` at a time (each with ``args.threads`` torch threads)."""
    todo = [(c, h) for c, h in jobs if not (check_cache(c) and (h is None or (Path(c.out_dir) / "heldout.json").is_file()))]
    if todo:
        print(f"  {len(todo)} run(s) to do: {', '.join(Path(c.out_dir).name for c, _ in todo)}", flush=True)
        in_pool([(functools.partial(run_one, c, h, args.jobs > 1, args.device), c.out_dir) for c, h in todo], args, "training")


def in_pool(tasks: list[tuple[Any, str]], args, what: str) -> None:
    """Call each ``(fn, folder)``: in this process with ``--jobs 1``, else ``args.jobs`` worker processes
    (``args.threads`` torch threads each). The first failure cancels what is queued and names the folder."""
    if args.jobs == 1:
        for fn, folder in tasks:
            t = time.perf_counter()
            fn()
            print(f"  {Path(folder).name}: {what} done ({(time.perf_counter() - t) / 60:.1f} min)", flush=True)
        return
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(args.jobs, mp_context=ctx, initializer=_worker_init, initargs=(args.threads,)) as ex:
        started = {ex.submit(fn): (folder, time.perf_counter()) for fn, folder in tasks}
        for fut in as_completed(started):
            folder, t = started[fut]
            if fut.exception() is not None:  # stop: start nothing more (the folder keeps its checkpoint to resume)
                ex.shutdown(wait=True, cancel_futures=True)
                raise RuntimeError(f"{folder}: {what} failed (see its train.log)") from fut.exception()
            print(f"  {Path(folder).name}: {what} done ({(time.perf_counter() - t) / 60:.1f} min since queued; "
                  f"log in {folder}/train.log)", flush=True)


def autoattack(out: Path, config: TrainConfig, aa_n: int, device: str = "cpu", log: bool = False) -> dict[str, Any]:
    """AutoAttack (standard) on the first ``aa_n`` test images of the run's best epoch, cached in the run folder."""
    path = out / f"autoattack_{aa_n}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from robin_plugin.data import get_dataset
    from robin_plugin.eval import evaluate

    with (open(out / "train.log", "a") if log else contextlib.nullcontext()) as f, \
            (contextlib.redirect_stdout(f) if f else contextlib.nullcontext()), \
            (contextlib.redirect_stderr(f) if f else contextlib.nullcontext()):
        model, _ = load_run(out, "best")
        model.to(device)
        test = get_dataset(config.dataset, config.data_root, split="test")
        t = time.perf_counter()
        r = evaluate(model, test.images, test.labels, eps=config.eps, n=aa_n, pgd_steps=20, seed=0,
                     state_path=out / f"autoattack_{aa_n}.state.json", progress=sys.stderr.isatty())
    info = {"n": r.n, "clean_acc": r.clean_acc, "pgd20_acc": r.pgd_acc, "autoattack_acc": r.autoattack_acc,
            "robust_acc_after": r.robust_acc_after,
            "checks": [dataclasses.asdict(c) if dataclasses.is_dataclass(c) else c for c in r.checks],
            "seconds": time.perf_counter() - t, "torch_threads": torch.get_num_threads(), "device": _device_name(device),
            "stage_seconds": r.seconds}
    atomic_write_json(path, info)
    return info


def _device_name(device: str) -> str:
    d = torch.device(device)
    return f"cuda ({torch.cuda.get_device_name(d)})" if d.type == "cuda" else "cpu"


# --- reading finished runs -----------------------------------------------------------------------
def read_run(config: TrainConfig) -> dict[str, Any] | None:
    """The finished run of ``config`` (results, held-out score, guard, AutoAttack), or None."""
    out = Path(config.out_dir)
    if not check_cache(config):
        return None
    r = json.loads((out / "results.json").read_text())
    r["name"] = out.name
    if (out / "heldout.json").is_file():
        r["heldout"] = json.loads((out / "heldout.json").read_text())
    r["epochs_log"] = _epochs(out)
    r["guard_collapses"] = max((e.get("guard/collapses", 0.0) for e in r["epochs_log"]), default=0.0)
    r["train_minutes"] = sum(e.get("time/epoch_s", 0.0) for e in r["epochs_log"]) / 60
    aa = sorted(out.glob("autoattack_*.json"))
    aa = [p for p in aa if not p.name.endswith(".state.json")]
    if aa:
        r["autoattack"] = json.loads(aa[0].read_text())
    if not config.model.endswith("_dense") and any((out / f).is_file() for f in ("compact.json", "model_best.safetensors")):
        r["compact_bytes"] = compact_bytes(out)
    return r


def _epochs(out: Path) -> list[dict[str, float]]:
    if not (out / "metrics.csv").is_file():
        return []
    with open(out / "metrics.csv") as f:
        return [{k: float(v) for k, v in row.items() if v not in ("", None) and _is_float(v)} for row in csv.DictReader(f)]


def _is_float(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def compact_bytes(out: Path) -> int:
    """The size of the best epoch's compact file, measured once and kept in ``compact.json`` in the run folder."""
    cached = out / "compact.json"
    if cached.is_file():
        return int(json.loads(cached.read_text())["file_bytes"])
    from robin_plugin.export import compact_size_report

    model, _ = load_run(out, "best")
    size = int(compact_size_report(model)["file_bytes"])
    atomic_write_json(cached, {"file_bytes": size, "of": "model_best.safetensors"})
    return size


def choose(side_runs: list[tuple[dict[str, Any], dict[str, Any] | None]]) -> dict[str, Any] | None:
    """The tuning rule: the sweep point with the highest held-out PGD-20 accuracy (then clean accuracy);
    None until every point of the side has finished."""
    if not side_runs or any(r is None or "heldout" not in r for _, r in side_runs):
        return None
    return max(side_runs, key=lambda pr: (pr[1]["heldout"]["pgd20_acc"], pr[1]["heldout"]["clean_acc"]))[0]


# --- statistics and claims (pure) --------------------------------------------------------------
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


# --- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="runs/fmnist_results")
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--seeds", type=int, nargs="+", default=[3, 4, 5],
                    help="seeds of the headline rows (seed 0 chose the recipe: keep it out)")
    ap.add_argument("--ablation-seeds", type=int, nargs="+", default=[3, 4], help="seeds of the other rows")
    ap.add_argument("--rows", nargs="+", default=None, help="train only these rows, in this order (default: all)")
    ap.add_argument("--tune", action="store_true", help="train the tuning sweep (seed 0) and choose from it instead "
                    "of reading the choice from docs/results/fmnist/tuning.json")
    ap.add_argument("--widths", type=int, nargs="*", default=list(WIDTHS), help="wider widths of the width study")
    ap.add_argument("--aa-n", type=int, default=500, help="AutoAttack points for the headline rows (0: skip)")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at once (each with --threads torch threads)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: CPUs / jobs)")
    ap.add_argument("--no-train", action="store_true", help="start nothing: write the page from the finished runs")
    ap.add_argument("--no-aa", action="store_true", help="train, but start no AutoAttack")
    ap.add_argument("--aa-only", action="store_true", help="start no training: only AutoAttack on finished headline rows")
    ap.add_argument("--device", default="auto", help="where held-out scoring and AutoAttack run: auto (CUDA if "
                    "available), cpu, cuda; training follows the recipe's device (auto)")
    ap.add_argument("--quick", action="store_true", help="tiny budget to check the command works (numbers meaningless)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.aa_only and (args.no_train or args.no_aa):
        ap.error("--aa-only cannot be combined with --no-train or --no-aa")
    args.device = str(resolve_device(args.device))
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.quick:
        args.aa_n = min(args.aa_n, 20)
        args.cache = args.cache + "_quick"
        args.out = str(Path(args.cache) / "results_quick.md")  # never over the real page, nor into docs/
    heldout = QUICK_HELDOUT if args.quick else HELDOUT
    t0 = time.perf_counter()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, torch {torch.__version__}; "
          f"{args.jobs} job(s) x {args.threads} thread(s); device {_device_name(args.device)}", flush=True)
    torch.set_num_threads(args.threads)

    # 1. tuning
    sweep = {side: [(p, make_config(side_config(side), p, 0, sweep_name(side, p), args)) for p in sweep_points(args)]
             for side in SIDES}
    train_now = not (args.no_train or args.aa_only)
    if train_now and args.tune:
        print("tuning:", flush=True)
        run_all([(c, heldout) for side in SIDES for _, c in sweep[side]], args)
    sweep_runs = {side: [(p, read_run(c)) for p, c in sweep[side]] for side in SIDES}
    tuned = {side: choose(sweep_runs[side]) for side in SIDES} if args.tune else read_tuning()["chosen"]

    # 2. rows (a row whose recipe equals a tuning run reuses it)
    rows = ROWS + width_rows(args)
    plan: dict[str, dict[int, TrainConfig]] = {}
    for row in rows:
        if tuned[row["side"]] is None:
            continue
        plan[row["name"]] = {}
        for seed in seeds_of(row, args):
            config = make_config(side_config(row["side"], tuned[row["side"]]), row.get("set", {}), seed, row["name"], args)
            twin = next((c for _, c in sweep[row["side"]] if _same(c, config)), None)
            plan[row["name"]][seed] = twin or config
    if train_now:
        print("rows:", flush=True)
        order = sorted(((row, s) for row in rows if row["name"] in plan for s in plan[row["name"]]),
                       key=lambda rs: (priority(rs[0]), rs[1]))
        if args.rows is not None:
            unknown = sorted(set(args.rows) - set(plan))
            if unknown:
                raise SystemExit(f"--rows: unknown row(s) {', '.join(unknown)}; rows: {', '.join(plan)}")
            order = sorted(((row, s) for row, s in order if row["name"] in args.rows),
                           key=lambda rs: (args.rows.index(rs[0]["name"]), rs[1]))
        run_all([(plan[row["name"]][s], None) for row, s in order], args)
    runs = {name: {s: read_run(c) for s, c in by_seed.items()} for name, by_seed in plan.items()}

    # 3. AutoAttack, headline rows, first seed
    if args.aa_n and not args.no_train and not args.no_aa:
        todo = [plan[row["name"]][args.seeds[0]] for row in rows
                if row["kind"] == "headline" and runs.get(row["name"], {}).get(args.seeds[0]) is not None]
        todo = [c for c in todo if not (Path(c.out_dir) / f"autoattack_{args.aa_n}.json").is_file()]
        if todo:
            print(f"AutoAttack on {args.aa_n} points: {', '.join(Path(c.out_dir).name for c in todo)}", flush=True)
            in_pool([(functools.partial(autoattack, Path(c.out_dir), c, args.aa_n, args.device, args.jobs > 1), c.out_dir)
                     for c in todo], args, "AutoAttack")
        runs = {name: {s: read_run(c) for s, c in by_seed.items()} for name, by_seed in plan.items()}

    wall = time.perf_counter() - t0
    record = {"sweep": {side: [{"point": p, "run": r} for p, r in sweep_runs[side]] for side in SIDES},
              "tuned": tuned, "rows": {n: {str(s): r for s, r in by.items()} for n, by in runs.items()}}
    atomic_write_json(Path(args.cache) / "results.json", _jsonable(record))
    write_report(rows, sweep_runs, tuned, runs, args, wall)
    print(f"wrote {args.out} ({wall / 60:.1f} min this invocation)")
    return 0


def _same(a: TrainConfig, b: TrainConfig) -> bool:
    da, db = a.to_dict(), b.to_dict()
    return all(da[k] == db[k] for k in da if k not in ("out_dir", "progress"))


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))


# --- the page ------------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def _ms(s: dict[str, float] | None) -> str:
    """'mean ± sd' in %, or the one value."""
    if s is None:
        return ""
    return f"{100 * s['mean']:.1f}" + (f" ± {100 * s['sd']:.1f}" if s["n"] > 1 else "")


def _point(p: dict[str, Any]) -> str:
    return f"{p['lr_schedule']}, lr {p['lr']:g}, batch {p['batch_size']}"


def finished(by_seed: dict[int, dict | None]) -> list[dict]:
    return [r for r in by_seed.values() if r is not None and "test" in r]


def pgd_values(runs, name: str) -> list[float]:
    return [r["test"]["pgd20_acc"] for r in finished(runs.get(name, {}))]


def write_report(rows, sweep_runs, tuned, runs, args, wall: float) -> None:
    out = Path(args.out)
    img = out.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    prefix = "results_quick" if args.quick else "results"
    all_runs = [r for side in sweep_runs.values() for _, r in side if r] + [r for by in runs.values() for r in by.values() if r]
    unique = {r["name"]: r for r in all_runs}.values()
    where: dict[str, list[dict]] = {}
    for r in unique:
        where.setdefault(_where(r), []).append(r)
    threads = sorted({r["machine"]["torch_threads"] for r in all_runs if "machine" in r})
    L = [
        "# Results on Fashion-MNIST (small scale)" + (" — QUICK SMOKE RUN, numbers meaningless" if args.quick else ""),
        "",
        "Produced by `.venv/bin/python benchmarks/fmnist_results.py" + "".join(f" {a}" for a in sys.argv[1:])
        + "`; run it without `--no-train` to train what is missing (it resumes).",
        f"Page written on: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}. Runs trained on: "
        + "; ".join(f"{w}: {len(rs)} run(s) ({', '.join(sorted(r['name'] for r in rs))})" if len(where) > 1 else f"{w}: all {len(rs)} runs"
                    for w, rs in sorted(where.items())) + f"; torch threads per run: {threads}."
        + (" Same code and recipe on both; the devices' floating-point results differ at rounding level, an effect "
           "these runs do not separate from seed noise (no row has a seed on each)." if len(where) > 1 else ""),
        "",
        "**Budget of every run** (`BUDGET` in the script): width-16 CIFAR-style ResNet-18, eps 0.1 (Linf, pixels in [0, 1]), "
        "FGSM with random start (step 0.125), **5 epochs on the first 20,000 training images** (2% held out to pick the best "
        "epoch by PGD-5), SGD momentum 0.9, weight decay 5e-4, channels-last, catastrophic-overfitting guard on (warn). "
        "Learning rate, schedule and batch size are each side's own tuning (below). Accuracies in %: clean and PGD-20 "
        "(step 0.025, random start) on the first 1,000 test images"
        + (f"; AutoAttack (standard, original strength) on the first {args.aa_n}, headline rows, seed {args.seeds[0]}." if args.aa_n else "."),
        "Compute (sum of epoch times of the finished runs; parallel runs shared their machine): "
        + "; ".join(f"{sum(r.get('train_minutes', 0.0) for r in rs):.0f} min on {w}" for w, rs in sorted(where.items()))
        + f"; this invocation took {wall / 60:.1f} min.",
        "",
        "## 1. Each side tuned on its own, on the same budget",
        "",
        f"Every point of `SWEEP` on each side, seed 0. Rule, fixed before the runs: each side keeps the point with the "
        f"highest PGD-20 accuracy on training images {HELDOUT[0]:,}-{HELDOUT[1] - 1:,} (never trained on by any run); "
        "the test images play no part. With 1,000 held-out images one standard error is about 1.4 points, so close "
        "points are a coin toss between equals.",
        "",
        "| side | schedule, lr, batch | held-out clean | held-out PGD-20 | test PGD-20 | guard collapses | training | chosen |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for side, pr in sweep_runs.items():
        for p, r in pr:
            if r is None:
                L.append(f"| {side} | {_point(p)} | not run yet | | | | | |")
                continue
            h = r.get("heldout", {})
            L.append(f"| {side} | {_point(p)} | {_pct(h.get('clean_acc'))} | {_pct(h.get('pgd20_acc'))} | "
                     f"{_pct(r['test']['pgd20_acc'])} | {r['guard_collapses']:.0f} | {r['train_minutes']:.1f} min | "
                     f"{'**yes**' if tuned[side] == p else ''} |")
    L.append("")
    for side in SIDES:
        L.append(f"- {side}: " + (f"**{_point(tuned[side])}**" if tuned[side] else "not chosen yet (tuning unfinished)"))
    n_rows = sum(len(by) for by in runs.values())
    n_done = sum(len(finished(by)) for by in runs.values())
    L[3:3] = ["", f"**Status: {n_done} of {n_rows} row runs finished"
              + (" (see the list under the table).**" if n_done < n_rows else ".**") if runs else "**Status: tuning unfinished.**", ""]
    L += ["", "## 2. The table", "",
          f"Headline rows on seeds {args.seeds}, the others on seeds {args.ablation_seeds}; mean ± sample standard deviation "
          "over seeds, then each seed's PGD-20.", "",
          "| row | recipe | keep ratio | kept weights | storage | clean | PGD-20 | per seed PGD-20 | AutoAttack | guard collapses | training (mean) |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]
    missing = []
    for row in rows:
        by = runs.get(row["name"], {})
        done = finished(by)
        missing += [f"{row['name']}-s{s}" for s, r in by.items() if r is None] or ([] if by else [f"{row['name']} (needs tuning)"])
        if not done:
            L.append(f"| {row['label']} | | | | | not run yet | | | | | |")
            continue
        r0 = done[0]
        storage = r0.get("compact_bytes") or r0["storage"]["fp32_bytes"]
        kind = "compact file" if r0.get("compact_bytes") else "fp32"
        aa = (by.get(args.seeds[0]) or {}).get("autoattack", {}).get("autoattack_acc")
        per_seed = ", ".join(f"s{s} {_pct(r['test']['pgd20_acc'])}" for s, r in by.items() if r is not None and "test" in r)
        L.append(
            f"| {row['label']} | {_point(tuned[row['side']])} | {r0['keep_ratio']:.4f} | {r0.get('kept_weights', r0['total_weights']):,} | "
            f"{storage / 1e3:,.0f} KB ({kind}) | {_ms(seed_stats([r['test']['clean_acc'] for r in done]))} | "
            f"{_ms(seed_stats([r['test']['pgd20_acc'] for r in done]))} | {per_seed} | {_pct(aa)} | "
            f"{', '.join('%.0f' % r['guard_collapses'] for r in done)} | "
            f"{statistics.fmean(r['train_minutes'] for r in done):.1f} min ({', '.join(sorted({_where(r).split(' ')[0] for r in done}))}) |")
    if missing:
        L += ["", "Not finished yet (blank or partial rows): " + ", ".join(missing) + "."]
    L += [""] + keep01_section(runs) + aa_section(rows, runs, args) + claims_section(runs) + [
        "## Plots", "",
        f"![accuracy vs keep ratio](img/{prefix}_keep_ratio.png)", "",
        f"![robust accuracy vs width at fixed kept weights](img/{prefix}_width.png)", "",
        "These are 5-epoch runs on 20,000 Fashion-MNIST images with small ResNet-18s, far from the paper's 400-epoch "
        "CIFAR runs of full-width networks; they test the direction of each claim at small scale, not its size.", ""]
    plot(rows, runs, img, prefix)
    atomic_write_bytes(out, ("\n".join(L) + "\n").encode())


def _where(r: dict[str, Any]) -> str:
    """Where a run trained: 'CPU (N cores)' or 'CUDA (<GPU name>)'."""
    m = r.get("machine", {})
    if str(m.get("device", "cpu")).startswith("cuda"):
        return f"CUDA ({m.get('accelerator', 'GPU')})"
    return f"CPU ({m.get('cpu_count', '?')} cores)"


def keep01_section(runs) -> list[str]:
    """What happened in the keep 0.1 runs: the guard's verdict, its gap between the training attack's
    accuracy and PGD accuracy by epoch (beside keep 0.05's), and the validation PGD per epoch."""
    done = finished(runs.get("k0.1", {}))
    if not done:
        return []
    L = ["## keep 0.1", "",
         "An earlier table (3 epochs, batch 128, one seed, untuned) had keep 0.1 at 50.0% PGD-20, 17 points under "
         "keep 0.05; catastrophic overfitting of single-step training was the suspect. What the guard saw: "
         "its PGD-5 accuracy on a fixed held-out batch beside the training attack's (FGSM-RS) accuracy, every 50 steps; "
         "*gap* below is their difference at the last check of each epoch, in points (a collapse needs a gap over 30 "
         "points and a PGD drop; `robin_plugin.training.guard`).", ""]
    for name in ("k0.1", "k0.05"):
        for r in finished(runs.get(name, {})):
            gap = [e["guard/train_acc"] - e["guard/pgd_acc"] for e in r["epochs_log"] if "guard/pgd_acc" in e and "guard/train_acc" in e]
            val = [e.get("val/robust_acc") for e in r["epochs_log"] if "val/robust_acc" in e]
            L.append(f"- {r['name']}: guard collapses {r['guard_collapses']:.0f}; gap by epoch "
                     + ", ".join(f"{100 * g:+.0f}" for g in gap) + "; validation PGD-5 by epoch "
                     + ", ".join(_pct(v) for v in val) + f"; test PGD-20 {_pct(r['test']['pgd20_acc'])}.")
    collapsed = [r["name"] for r in done if r["guard_collapses"] > 0]
    rising = all(_vals(r)[-1] >= max(_vals(r)) - 0.02 for r in done if _vals(r))
    if collapsed:
        L += ["", f"The guard saw a collapse in {', '.join(collapsed)} (warn mode: logged, training went on)."]
    elif rising:
        L += ["", f"No catastrophic overfitting in {len(done)} run(s) of keep 0.1: the guard never fired and validation "
              "PGD accuracy ended within 2 points of its best, rising rather than collapsing. Keep 0.1 is less robust "
              "than keep 0.05 on this budget for another reason, which these runs do not show (open)."]
    L.append("")
    return L


def _vals(r: dict[str, Any]) -> list[float]:
    return [e["val/robust_acc"] for e in r["epochs_log"] if "val/robust_acc" in e]


def aa_section(rows, runs, args) -> list[str]:
    have = [(row["name"], (runs.get(row["name"], {}).get(args.seeds[0]) or {}).get("autoattack")) for row in rows
            if row["kind"] == "headline"]
    have = [(n, a) for n, a in have if a]
    if not have:
        return ["## AutoAttack", "", "Not run yet for the headline rows.", ""]
    L = ["## AutoAttack (headline rows, first seed)", ""]
    for n, a in have:
        failed = [c for c in a.get("checks", []) if isinstance(c, dict) and not c.get("passed", True)]
        L.append(f"- {n}: AutoAttack {_pct(a['autoattack_acc'])}% vs PGD-20 {_pct(a['pgd20_acc'])}% on the same {a['n']} points; "
                 f"gradient-masking checks {'all passed' if not failed else 'FAILED: ' + ', '.join(c.get('name', '?') for c in failed)}; "
                 f"{sum(a['stage_seconds'].values()) / 60 if 'stage_seconds' in a else a['seconds'] / 60:.1f} min on "
                 f"{a.get('device', 'cpu')} at {a.get('torch_threads', '?')} thread(s).")
    return L + ["", "Times are wall-clock; AutoAttacks started together (`--jobs`) shared the machine.", ""]


def claims_section(runs) -> list[str]:
    L = ["## What agrees with the paper, and what does not", "",
         "Rule, fixed before the runs (`verdict` in the script): d is the difference of the mean PGD-20 accuracies and s "
         "the larger of the two rows' seed standard deviations. A claim that one row beats another **agrees** when "
         "d > 2s, **contradicts** when d < -2s, and is **undecided** in between; a claim that one row *matches* another "
         "contradicts when d < -2s and agrees otherwise. A row with fewer than 2 finished seeds leaves its claims undecided.",
         ""]
    for claim, a, b, matches in CLAIMS:
        if a not in runs or b not in runs:  # a row this invocation does not plan (e.g. a width not asked for)
            continue
        va, vb = pgd_values(runs, a), pgd_values(runs, b)
        if not va or not vb:
            L.append(f"- {claim}: not run yet ({a} vs {b}).")
            continue
        v, d, s = verdict(va, vb, matches=matches)
        spread = "" if math.isnan(s) else f", s = {100 * s:.1f}"
        L.append(f"- {claim}: {a} {100 * statistics.fmean(va):.1f} vs {b} {100 * statistics.fmean(vb):.1f} "
                 f"(d = {100 * d:+.1f} points{spread}; seeds {len(va)} and {len(vb)}): **{v}**.")
    return L + [""]


def plot(rows, runs, img: Path, prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def ms(name, key="pgd20_acc"):
        s = seed_stats([r["test"][key] for r in finished(runs.get(name, {}))])
        return (100 * s["mean"], 100 * s["sd"]) if s else None

    fig, ax = plt.subplots(figsize=(5, 3.5))
    sweep = [(k, n) for k, n in ((0.01, "k0.01"), (0.05, "k0.05"), (0.1, "k0.1")) if ms(n)]
    for key, label, fmt in (("clean_acc", "robin clean", "o-"), ("pgd20_acc", "robin PGD-20", "s-")):
        if sweep:
            ax.errorbar([k for k, _ in sweep], [ms(n, key)[0] for _, n in sweep], yerr=[ms(n, key)[1] for _, n in sweep],
                        fmt=fmt, capsize=3, label=label)
    for key, label, ls in (("clean_acc", "dense clean", "--"), ("pgd20_acc", "dense PGD-20", ":")):
        if ms("dense", key):
            m, s = ms("dense", key)
            ax.axhline(m, color="gray" if key == "clean_acc" else "black", ls=ls, label=f"{label} (±{s:.1f})")
    ax.set_xscale("log")
    ax.set_xlabel("keep ratio (fraction of weights kept)")
    ax.set_ylabel("accuracy (%), mean ± sd over seeds")
    ax.set_title("Fashion-MNIST, eps 0.1")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_keep_ratio.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for twin, budget in WIDTH_TWINS.items():
        pts = [(16, ms(twin))] + [(r["width"], ms(r["name"])) for r in rows if r.get("twin") == twin]
        pts = [(w, v) for w, v in pts if v]
        if pts:
            ax.errorbar([w for w, _ in pts], [v[0] for _, v in pts], yerr=[v[1] for _, v in pts], fmt="o-", capsize=3,
                        label=f"~{budget} kept weights")
    if ms("dense"):
        ax.axhline(ms("dense")[0], color="black", ls=":", label="dense width 16 (all weights)")
    ax.set_xlabel("network width (channels of the first stage)")
    ax.set_ylabel("PGD-20 accuracy (%), mean ± sd")
    ax.set_title("Width at a fixed number of kept weights")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_width.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
