"""The runner of the Fashion-MNIST results page: trains every run of the plan, attacks it, and writes
one result file per run; the page (docs/results.md) and the README's figures are rendered from those
files alone by ``fmnist_page.py``, which this command calls at the end.

The plan (``fmnist_plan.py``): the dense twin and robin (keep 0.05) each tuned on their own on one
budget (5 epochs of FGSM-RS on 20,000 training images; the sweep ran on seed 0 and its choice is
``docs/results/fmnist/tuning.json``), then every row on seeds that took no part in the choice:
headline rows on 3 seeds with AutoAttack on every seed and the original AutoAttack (``--reference``)
on the first, ablations, the width study and the keep 0.1 study on 2. Every row of one page trains
on one device; a run on another device is kept as its own result file and shown only in the
device-effect section.

Each run lives in ``--cache/<row>-s<seed>/`` and is resumed or skipped when run again; its result
file is ``docs/results/fmnist/<row>-s<seed>.<cpu|cuda>.json``.

    .venv/bin/python benchmarks/fmnist_results.py --jobs 2          # everything (hours on 2 cores; resumable)
    .venv/bin/python benchmarks/fmnist_results.py --jobs 2 --rows k0.05 k0.05-p1   # these rows first
    .venv/bin/python benchmarks/fmnist_page.py                      # the page from the result files (seconds)
    .venv/bin/python benchmarks/fmnist_results.py --quick           # a smoke run: tiny budget, minutes
    python benchmarks/fmnist_results.py --jobs 8 --no-aa &           # on a GPU machine: training and AutoAttack
    python benchmarks/fmnist_results.py --jobs 3 --aa-only           #   side by side (training follows config.device)

``--quick`` writes everything (runs, result files, page) into its own cache folder,
runs/fmnist_results_quick/.
"""
from __future__ import annotations

import argparse
import contextlib
import csv
import dataclasses
import functools
import json
import multiprocessing
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import torch

import fmnist_page
import robin_plugin  # noqa: F401
from fmnist_plan import (AA_N, ABLATION_SEEDS, BUDGET, HELDOUT, QUICK, QUICK_HELDOUT, RESULTS, ROWS, SEEDS, SIDES,
                         STRENGTH_ROWS, STRENGTH_STEPS, SWEEP, WIDTHS, priority, read_tuning, seeds_of, side_config,
                         sweep_name, width_rows)
from robin_plugin.io import atomic_write_json
from robin_plugin.training import TrainConfig, apply_overrides, load_run, train
from robin_plugin.training.trainer import resolve_device


# --- planning ------------------------------------------------------------------------------------
def make_config(base: dict[str, Any], changes: dict[str, Any], seed: int, name: str, args) -> TrainConfig:
    overrides = dict(changes, seed=seed, out_dir=str(Path(args.cache) / f"{name}-s{seed}"), progress=False)
    if args.quick:
        overrides.update(QUICK)
    return apply_overrides(base, overrides)


def sweep_points(args) -> list[dict[str, Any]]:
    return SWEEP[:2] if args.quick else SWEEP


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


def autoattack(out: Path, config: TrainConfig, aa_n: int, reference: bool, device: str = "cpu", log: bool = False) -> dict[str, Any]:
    """AutoAttack (standard, original strength, with the gradient-masking checks) on the first ``aa_n``
    test images of the run's best epoch; with ``reference`` also the original AutoAttack
    (``pyautoattack``) on the same points. Kept in the run folder (``autoattack_<n>.json``)."""
    path = out / f"autoattack_{aa_n}.json"
    if path.is_file() and (not reference or "reference" in json.loads(path.read_text())):
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
        r = evaluate(model, test.images, test.labels, eps=config.eps, n=aa_n, pgd_steps=20, seed=0, reference=reference,
                     state_path=out / f"autoattack_{aa_n}.state.json", progress=sys.stderr.isatty())
    info = {"n": r.n, "clean_acc": r.clean_acc, "pgd20_acc": r.pgd_acc, "autoattack_acc": r.autoattack_acc,
            "robust_acc_after": r.robust_acc_after,
            "checks": [dataclasses.asdict(c) if dataclasses.is_dataclass(c) else c for c in r.checks],
            "seconds": time.perf_counter() - t, "torch_threads": torch.get_num_threads(), "device": _device_name(device),
            "stage_seconds": r.seconds}
    if r.reference is not None:
        ours, theirs = list(r.robust), list(r.reference["robust"])
        info["reference"] = {"autoattack_acc": r.reference["autoattack_acc"], "difference": r.reference["difference"],
                             "points_differing": sum(a != b for a, b in zip(ours, theirs, strict=True)),
                             "same_verdict_every_point": ours == theirs}
    atomic_write_json(path, info)
    return info


def attack_strength(out: Path, config: TrainConfig, device: str = "cpu", log: bool = False) -> dict[str, Any]:
    """PGD accuracy of the run's best epoch at each of ``STRENGTH_STEPS`` iterations on the page's test
    images (same points, same random start): whether a row's robustness leans on a weak attack."""
    path = out / "attack_strength.json"
    if path.is_file():
        return json.loads(path.read_text())
    from robin_plugin.data import get_dataset
    from robin_plugin.training.metrics import clean_and_pgd_accuracy

    model, _ = load_run(out, "best")
    model.to(device)
    test = get_dataset(config.dataset, config.data_root, split="test")
    x, y = test.images[:config.test_n], test.labels[:config.test_n]
    accs = {str(k): clean_and_pgd_accuracy(model, x, y, eps=config.eps, step_size=config.eval_step_size, steps=k,
                                            seed=config.seed, device=torch.device(device))["robust_acc"] for k in STRENGTH_STEPS}
    info = {"n": int(len(y)), "step_size": config.eval_step_size, "pgd_acc_by_steps": accs}
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
    r["config"] = json.loads((out / "config.json").read_text())
    if (out / "heldout.json").is_file():
        r["heldout"] = json.loads((out / "heldout.json").read_text())
    r["epochs_log"] = _epochs(out)
    r["guard_collapses"] = max((e.get("guard/collapses", 0.0) for e in r["epochs_log"]), default=0.0)
    r["train_minutes"] = sum(e.get("time/epoch_s", 0.0) for e in r["epochs_log"]) / 60
    aa = [p for p in out.glob("autoattack_*.json") if not p.name.endswith(".state.json")]
    if aa:  # the largest evaluation
        r["autoattack"] = max((json.loads(p.read_text()) for p in aa), key=lambda a: a["n"])
    if (out / "attack_strength.json").is_file():
        r["attack_strength"] = json.loads((out / "attack_strength.json").read_text())
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




# --- result files --------------------------------------------------------------------------------
_EPOCH_KEYS = ("val/clean_acc", "val/robust_acc", "guard/train_acc", "guard/pgd_acc", "guard/collapses", "time/epoch_s")
_CONFIG_KEYS = ("model", "model_kwargs", "keep_ratio", "p", "train_subset", "epochs", "batch_size", "lr", "lr_schedule",
                "attack", "attack_mode", "attack_steps", "step_size", "eps", "seed", "test_n", "test_pgd_steps")


def device_kind(r: dict[str, Any]) -> str:
    """'cuda' or 'cpu': where a run trained (the unit of the page's same-device rule)."""
    return "cuda" if str(r.get("machine", {}).get("device", "cpu")).startswith("cuda") else "cpu"


def where(r: dict[str, Any]) -> str:
    """Where a run trained, in words: 'CPU (N cores)' or 'CUDA (<GPU name>)'."""
    m = r.get("machine", {})
    if device_kind(r) == "cuda":
        return f"CUDA ({m.get('accelerator', 'GPU')})"
    return f"CPU ({m.get('cpu_count', '?')} cores)"


def run_record(row: str, seed: int, r: dict[str, Any]) -> dict[str, Any]:
    """The result file of one finished run: what the page shows of it, and how it was run."""
    rec = {"row": row, "seed": seed, "device": device_kind(r), "where": where(r), "machine": r.get("machine", {}),
           "config": {k: r["config"][k] for k in _CONFIG_KEYS if k in r.get("config", {})},
           "keep_ratio": r["keep_ratio"], "kept_weights": r.get("kept_weights", r["total_weights"]),
           "total_weights": r["total_weights"], "fp32_bytes": r["storage"]["fp32_bytes"],
           "compact_bytes": r.get("compact_bytes"), "best_epoch": r.get("best_epoch"), "test": r["test"],
           "epochs": [{k: e[k] for k in _EPOCH_KEYS if k in e} for e in r["epochs_log"]],
           "train_minutes": r["train_minutes"], "guard_collapses": r["guard_collapses"]}
    for key in ("heldout", "autoattack", "attack_strength"):
        if key in r:
            rec[key] = r[key]
    return rec


def write_records(runs: dict[str, dict[int, dict | None]], folder: Path) -> int:
    """Write (or refresh) the result file of every finished run; returns how many were written."""
    folder.mkdir(parents=True, exist_ok=True)
    n = 0
    for row, by_seed in runs.items():
        for seed, r in by_seed.items():
            if r is None or "test" not in r:
                continue
            rec = run_record(row, seed, r)
            path = folder / f"{row}-s{seed}.{rec['device']}.json"
            if not path.is_file() or json.loads(path.read_text()) != json.loads(json.dumps(rec)):
                atomic_write_json(path, rec)
                n += 1
    return n


def tuning_record(sweep_runs: dict[str, list], tuned: dict[str, Any], args) -> dict[str, Any]:
    """tuning.json from the sweep's finished runs (``--tune``)."""
    points = []
    for side, pr in sweep_runs.items():
        for p, r in pr:
            points.append({"side": side, "point": p, "heldout_clean_acc": r["heldout"]["clean_acc"],
                           "heldout_pgd20_acc": r["heldout"]["pgd20_acc"], "test_pgd20_acc": r["test"]["pgd20_acc"],
                           "guard_collapses": r["guard_collapses"], "train_minutes": r["train_minutes"],
                           "chosen": p == tuned[side]})
    devices = sorted({where(r) for pr in sweep_runs.values() for _, r in pr})
    return {"source": f"benchmarks/fmnist_results.py --tune ({' '.join(sys.argv[1:])})", "seed": 0,
            "device": ", ".join(devices), "attack_mode": BUDGET["attack_mode"],
            "rule": "each side keeps the point with the highest held-out PGD-20 accuracy (then clean); held-out images "
                    f"{(QUICK_HELDOUT if args.quick else HELDOUT)[0]:,}-{(QUICK_HELDOUT if args.quick else HELDOUT)[1] - 1:,}",
            "points": points, "chosen": tuned}


# --- main ----------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="runs/fmnist_results", help="folder of the run folders")
    ap.add_argument("--results", type=Path, default=None, help=f"folder of the result files (default {RESULTS}; "
                    "--quick: <cache>/results)")
    ap.add_argument("--out", default=None, help="the page (default docs/results.md; --quick: <cache>/results_quick.md)")
    ap.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS),
                    help="seeds of the headline rows (seed 0 chose the recipe: keep it out)")
    ap.add_argument("--ablation-seeds", type=int, nargs="+", default=list(ABLATION_SEEDS), help="seeds of the other rows")
    ap.add_argument("--widths", type=int, nargs="*", default=list(WIDTHS), help="wider widths of the width study")
    ap.add_argument("--rows", nargs="+", default=None, help="train and attack only these rows, in this order (default: all)")
    ap.add_argument("--tune", action="store_true", help="train the tuning sweep (seed 0), choose from it and write "
                    "tuning.json, instead of reading the choice from tuning.json")
    ap.add_argument("--aa-n", type=int, default=AA_N, help="AutoAttack points for every seed of the headline rows (0: skip)")
    ap.add_argument("--no-reference", action="store_true", help="skip the original AutoAttack on each headline row's first seed")
    ap.add_argument("--jobs", type=int, default=1, help="training runs at once (each with --threads torch threads)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per run (default: CPUs / jobs)")
    ap.add_argument("--no-aa", action="store_true", help="train, but start no AutoAttack and no attack-strength check")
    ap.add_argument("--aa-only", action="store_true", help="start no training: only the attacks on finished runs")
    ap.add_argument("--device", default="auto", help="where held-out scoring and the attacks run: auto (CUDA if "
                    "available), cpu, cuda; training follows the recipe's device (auto)")
    ap.add_argument("--quick", action="store_true", help="tiny budget to check the command works (numbers meaningless)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error("--jobs must be >= 1")
    if args.aa_only and args.no_aa:
        ap.error("--aa-only cannot be combined with --no-aa")
    args.device = str(resolve_device(args.device))
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    if args.quick:
        args.aa_n = min(args.aa_n, 20)
        args.cache = args.cache + "_quick"
        args.tune = True  # the whole pipeline, on the quick sweep
    results = args.results or (Path(args.cache) / "results" if args.quick else RESULTS)
    out = Path(args.out or (Path(args.cache) / "results_quick.md" if args.quick else "docs/results.md"))
    heldout = QUICK_HELDOUT if args.quick else HELDOUT
    t0 = time.perf_counter()
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, torch {torch.__version__}; "
          f"{args.jobs} job(s) x {args.threads} thread(s); device {_device_name(args.device)}", flush=True)
    torch.set_num_threads(args.threads)

    # 1. tuning: the sweep's choice (trained here with --tune, else read from tuning.json)
    if args.tune:
        sweep = {side: [(p, make_config(side_config(side), p, 0, sweep_name(side, p), args)) for p in sweep_points(args)]
                 for side in SIDES}
        if not args.aa_only:
            print("tuning:", flush=True)
            run_all([(c, heldout) for side in SIDES for _, c in sweep[side]], args)
        sweep_runs = {side: [(p, read_run(c)) for p, c in sweep[side]] for side in SIDES}
        tuned = {side: choose(sweep_runs[side]) for side in SIDES}
        if any(t is None for t in tuned.values()):
            raise SystemExit("the tuning sweep has unfinished points; run again without --aa-only to finish it")
        results.mkdir(parents=True, exist_ok=True)
        atomic_write_json(results / "tuning.json", _jsonable(tuning_record(sweep_runs, tuned, args)))
    tuned = read_tuning(results)["chosen"]

    # 2. rows, on seeds that took no part in the tuning
    rows = ROWS + width_rows(args.widths)
    plan = {row["name"]: {s: make_config(side_config(row["side"], tuned[row["side"]]), row.get("set", {}), s, row["name"], args)
                          for s in seeds_of(row, args.seeds, args.ablation_seeds)} for row in rows}
    if args.rows is not None and set(args.rows) - set(plan):
        raise SystemExit(f"--rows: unknown row(s) {', '.join(sorted(set(args.rows) - set(plan)))}; rows: {', '.join(plan)}")
    chosen = [row for row in rows if args.rows is None or row["name"] in args.rows]
    rank = (lambda row: args.rows.index(row["name"])) if args.rows else priority
    order = sorted(((row, s) for row in chosen for s in plan[row["name"]]), key=lambda rs: (rank(rs[0]), rs[1]))
    if not args.aa_only:
        print("rows:", flush=True)
        run_all([(plan[row["name"]][s], None) for row, s in order], args)

    # 3. attacks: AutoAttack on every seed of the headline rows (the original too on the first seed),
    #    and the attack-strength check of the keep 0.1 study's rows
    if not args.no_aa:
        aa_todo = [(plan[row["name"]][s], s == args.seeds[0] and not args.no_reference) for row, s in order
                   if row["kind"] == "headline" and args.aa_n and check_cache(plan[row["name"]][s])]
        strength_todo = [plan[row["name"]][s] for row, s in order if row["name"] in STRENGTH_ROWS and check_cache(plan[row["name"]][s])]
        tasks = [(functools.partial(autoattack, Path(c.out_dir), c, args.aa_n, ref, args.device, args.jobs > 1), c.out_dir)
                 for c, ref in aa_todo if not _aa_done(Path(c.out_dir), args.aa_n, ref)]
        tasks += [(functools.partial(attack_strength, Path(c.out_dir), c, args.device, args.jobs > 1), c.out_dir)
                  for c in strength_todo if not (Path(c.out_dir) / "attack_strength.json").is_file()]
        if tasks:
            print(f"attacks: {', '.join(Path(f).name for _, f in tasks)}", flush=True)
            in_pool(tasks, args, "attack")

    # 4. result files, then the page from them
    runs = {name: {s: read_run(c) for s, c in by_seed.items()} for name, by_seed in plan.items()}
    n = write_records(runs, results)
    print(f"{n} result file(s) written to {results}", flush=True)
    fmnist_page.write_page(results, out, seeds=args.seeds, ablation_seeds=args.ablation_seeds, widths=args.widths,
                           aa_n=args.aa_n or AA_N, quick=args.quick)  # --aa-n 0 skips attacks; the page keeps its protocol
    print(f"wrote {out} ({(time.perf_counter() - t0) / 60:.1f} min this invocation)")
    return 0


def _aa_done(out: Path, aa_n: int, reference: bool) -> bool:
    path = out / f"autoattack_{aa_n}.json"
    return path.is_file() and (not reference or "reference" in json.loads(path.read_text()))


def _jsonable(x: Any) -> Any:
    return json.loads(json.dumps(x, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))


if __name__ == "__main__":
    sys.exit(main())
