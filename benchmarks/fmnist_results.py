"""The Fashion-MNIST results table (docs/results.md): does the paper's recipe hold at small scale?

One resumable command. Every row trains a width-16 ResNet-18 (or its dense twin) with the
table's pinned ``RECIPE`` (eps 0.1, FGSM-RS, batch 128, 3 epochs on the first 20,000 training
images, 2% held out to pick the best epoch) and changes one thing; every row gets clean and PGD-20 accuracy on the
first 1,000 test images; the headline rows also get the full AutoAttack (standard, original
strength, with the gradient-masking checks) on the first 500 test images and a second seed.
Each run lives in ``--cache/<row>-s<seed>/`` and is skipped (or resumed) when run again.

    .venv/bin/python benchmarks/fmnist_results.py                  # the whole table (~90 min on 2 cores)
    .venv/bin/python benchmarks/fmnist_results.py --quick          # a smoke run: tiny budget, minutes
    .venv/bin/python benchmarks/fmnist_results.py --aa-cached-only # write the table now; AutoAttack where finished

Writes docs/results.md (or --out), two plots next to it in docs/img/, and results.json in the cache.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import torch

import robin_plugin  # noqa: F401
from robin_plugin.io import atomic_write_bytes, atomic_write_json
from robin_plugin.training import apply_overrides, load_run, train

# The table's own recipe, written out in full so that a later change of the presets cannot change it
# (the default `robin train` preset has since moved to batch 64; see docs/results.md).
RECIPE: dict[str, Any] = dict(
    model="robin_resnet18", model_kwargs={"width": 16}, keep_ratio=0.05, p=0.1, dataset="fashion_mnist",
    train_subset=20000, epochs=3, batch_size=128, lr=0.1, lr_schedule="cosine", momentum=0.9, weight_decay=5e-4,
    attack="ffgsm", eps=0.1, step_size=0.125, eval_step_size=0.025, val_pgd_steps=5, test_n=1000, test_pgd_steps=20,
)
ROWS: list[dict[str, Any]] = [
    # name, label, what changes from RECIPE, headline?
    dict(name="dense", label="dense full-precision AT (same architecture)", set={"model": "robin_resnet18_dense", "lr": 0.05},
         headline=True),
    dict(name="k0.05", label="robin, keep 0.05, p 0.1, +-1, last BN, FGSM-RS AT", headline=True),
    dict(name="k0.01", label="robin, keep 0.01", set={"keep_ratio": 0.01}, headline=True),
    dict(name="k0.1", label="robin, keep 0.1", set={"keep_ratio": 0.1}),
    dict(name="k0.05-p1", label="keep 0.05, p = 1 (uniform keep ratio)", set={"p": 1.0}),
    dict(name="k0.05-nolastbn", label="keep 0.05, no last BatchNorm", set={"model_kwargs": {"last_bn": False}}),
    dict(name="k0.05-signedkaiming", label="keep 0.05, signed Kaiming constant weights",
         set={"model_kwargs": {"init": "signed_kaiming_constant"}}),
    dict(name="k0.05-kaimingnormal", label="keep 0.05, Kaiming normal weights (not binary)",
         set={"model_kwargs": {"init": "kaiming_normal"}}),
    dict(name="k0.05-pgd", label="keep 0.05, PGD-5 AT (step 0.03) instead of FGSM-RS",
         set={"attack": "pgd", "attack_steps": 5, "step_size": 0.03}),
]
QUICK = {"train_subset": 600, "epochs": 1, "test_n": 100, "val_pgd_steps": 2}


def row_config(row: dict[str, Any], seed: int, args):
    """The TrainConfig of one run of ``row``: RECIPE, then the row's changes, then seed and folder."""
    overrides = dict(row.get("set", {}), seed=seed, out_dir=str(Path(args.cache) / f"{row['name']}-s{seed}"),
                     progress=sys.stderr.isatty())
    if args.quick:
        overrides.update(QUICK)
    return apply_overrides(RECIPE, overrides)


def run_row(row: dict[str, Any], seed: int, args) -> dict[str, Any]:
    config = row_config(row, seed, args)
    out = Path(config.out_dir)
    done = out / "results.json"
    if done.is_file():
        # a cached run counts only if it was made with this recipe (progress bars, and pruning keys of a
        # dense model, aside)
        cached = json.loads((out / "config.json").read_text())
        ignore = {"progress"} | ({"keep_ratio", "p", "prune_steps"} if config.model.endswith("_dense") else set())
        changed = sorted(k for k, v in config.to_dict().items() if k not in ignore and cached.get(k) != v)
        if changed:
            raise SystemExit(f"{out} was trained with a different recipe ({', '.join(changed)} differ); "
                             "delete that folder to retrain it, or pass another --cache")
        result = json.loads(done.read_text())
        print(f"  {out.name}: cached")
    else:
        print(f"  {out.name}: training ...", flush=True)
        result = train(config, resume=True)
    result["compact_bytes"] = compact_bytes(out) if not config.model.endswith("_dense") else None
    result["_out"], result["_config"] = str(out), config
    return result


def autoattack(out: Path, config, args) -> dict[str, Any]:
    path = out / f"autoattack_{args.aa_n}.json"
    if path.is_file():
        return json.loads(path.read_text())
    from robin_plugin.data import get_dataset
    from robin_plugin.eval import evaluate

    model, _ = load_run(out, "best")
    test = get_dataset(config.dataset, config.data_root, split="test")
    t = time.perf_counter()
    r = evaluate(model, test.images, test.labels, eps=config.eps, n=args.aa_n, pgd_steps=20, seed=0,
                 state_path=out / f"autoattack_{args.aa_n}.state.json", progress=sys.stderr.isatty())
    info = {"n": r.n, "clean_acc": r.clean_acc, "pgd20_acc": r.pgd_acc, "autoattack_acc": r.autoattack_acc,
            "robust_acc_after": r.robust_acc_after, "checks": [dataclasses.asdict(c) if dataclasses.is_dataclass(c) else c for c in r.checks],
            "seconds": time.perf_counter() - t, "torch_threads": torch.get_num_threads(), "stage_seconds": r.seconds}
    atomic_write_json(path, info)
    return info


def compact_bytes(out: Path) -> int:
    from robin_plugin.export import compact_size_report

    model, _ = load_run(out, "best")
    return int(compact_size_report(model)["file_bytes"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cache", default="runs/fmnist_results")
    ap.add_argument("--out", default="docs/results.md")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="the headline rows run every seed; the others the first")
    ap.add_argument("--aa-n", type=int, default=500, help="AutoAttack points for the headline rows (0: skip)")
    ap.add_argument("--aa-cached-only", action="store_true",
                    help="report AutoAttack only where a finished result is cached; never start one")
    ap.add_argument("--quick", action="store_true", help="tiny budget to check the command works (numbers meaningless)")
    ap.add_argument("--rows", nargs="*", help="only these rows (default: all)")
    args = ap.parse_args()
    if args.quick:
        args.aa_n = min(args.aa_n, 20)
        args.cache = args.cache + "_quick"
        args.out = str(Path(args.out).with_name("results_quick.md"))
    t0 = time.perf_counter()
    rows = [r for r in ROWS if not args.rows or r["name"] in args.rows]
    print(f"machine: {platform.platform()}, {os.cpu_count()} cpus, torch {torch.__version__}, {torch.get_num_threads()} threads")
    table = []
    for row in rows:
        seeds = args.seeds if row.get("headline") else args.seeds[:1]
        table.append({"row": row, "runs": {s: run_row(row, s, args) for s in seeds}})
    # AutoAttack last: the most expensive part, resumable point batch by point batch
    for t in table:
        r0 = t["runs"][args.seeds[0]]
        if t["row"].get("headline") and args.aa_n:
            cached = Path(r0["_out"]) / f"autoattack_{args.aa_n}.json"
            if args.aa_cached_only and not cached.is_file():
                print(f"  {Path(r0['_out']).name}: no finished AutoAttack cached; left blank (--aa-cached-only)")
                continue
            print(f"  {Path(r0['_out']).name}: AutoAttack on {args.aa_n} points ...", flush=True)
            r0["autoattack"] = autoattack(Path(r0["_out"]), r0["_config"], args)
    for t in table:
        for r in t["runs"].values():
            r.pop("_config", None)
            r.pop("_out", None)
    wall = time.perf_counter() - t0
    atomic_write_json(Path(args.cache) / "results.json", [{"name": t["row"]["name"], "runs": t["runs"]} for t in table])
    write_report(table, args, wall)
    print(f"wrote {args.out} ({wall / 60:.1f} min this invocation)")
    return 0


def _train_minutes(out: Path) -> float:
    """Training time of a run from its metrics.csv (sum of epoch times, so resumed runs count whole)."""
    import csv

    with open(out / "metrics.csv") as f:
        return sum(float(r["time/epoch_s"]) for r in csv.DictReader(f)) / 60


def _aa_seconds(info: dict[str, Any]) -> float:
    """Total AutoAttack time of a run: the sum of its stages (an interrupted, resumed run counts whole)."""
    return sum(info["stage_seconds"].values()) if "stage_seconds" in info else info["seconds"]


def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}"


def write_report(table, args, wall: float) -> None:
    out = Path(args.out)
    img = out.parent / "img"
    img.mkdir(parents=True, exist_ok=True)
    prefix = "results_quick" if args.quick else "results"
    lines = [
        "# Results on Fashion-MNIST (CPU, small scale)" + (" — QUICK SMOKE RUN, numbers meaningless" if args.quick else ""),
        "",
        "Produced by `.venv/bin/python benchmarks/fmnist_results.py" + "".join(f" {a}" for a in sys.argv[1:])
        + "` (resumable: each run is cached; with no arguments it runs every row and AutoAttack).",
        f"Machine: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}; torch threads of the training "
        f"runs: {sorted({t['runs'][s]['machine']['torch_threads'] for t in table for s in t['runs']})}. Training times depend on "
        "what else shared the machine; compare them only between runs of one quiet invocation.",
        "Recipe of every row unless it says otherwise: width-16 CIFAR-style ResNet-18, eps 0.1 (Linf, pixels in [0, 1]), "
        "FGSM with random start (step 0.125), 3 epochs on the first 20,000 training images (2% held out to pick the best epoch), "
        "SGD lr 0.1 cosine, momentum 0.9, weight decay 5e-4, batch 128 (`RECIPE` in the script; the default `robin train` "
        "preset has since moved to batch 64 and 5 epochs, see docs/training.md). Accuracies in %; PGD-20 (step 0.025, random start) "
        "on the first 1,000 test images; "
        + (f"AutoAttack (standard, original strength) on the first {args.aa_n} for the headline rows." if args.aa_n
           else "AutoAttack: not run in this invocation (`--aa-n 0`).")
        + (" A blank AutoAttack cell of a headline row means its AutoAttack has not finished yet: run the command "
           "without `--aa-cached-only` to complete it (it resumes)." if args.aa_n and args.aa_cached_only else ""),
        "",
        "| row | keep ratio | kept weights | storage | clean | PGD-20 | AutoAttack | seed 1: clean / PGD-20 | training time |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    points = []
    for t in table:
        row, runs = t["row"], t["runs"]
        r0 = runs[args.seeds[0]]
        test = r0.get("test", {})
        storage = r0["compact_bytes"] if r0.get("compact_bytes") else r0["storage"]["fp32_bytes"]
        kind = "compact file" if r0.get("compact_bytes") else "fp32"
        aa = r0.get("autoattack", {}).get("autoattack_acc")
        minutes = _train_minutes(Path(args.cache) / f"{row['name']}-s{args.seeds[0]}")
        other = [runs[s] for s in args.seeds[1:] if s in runs]
        second = " / ".join(f"{_pct(o['test']['clean_acc'])} / {_pct(o['test']['pgd20_acc'])}" for o in other if "test" in o)
        lines.append(
            f"| {row['label']} | {r0['keep_ratio']:.3f} | {r0.get('kept_weights', r0['total_weights']):,} | "
            f"{storage / 1e3:,.0f} KB ({kind}) | {_pct(test.get('clean_acc'))} | {_pct(test.get('pgd20_acc'))} | {_pct(aa)} | "
            f"{second} | {minutes:.1f} min |"
        )
        points.append((row, r0, storage))
    lines += ["", f"Wall time of this invocation: {wall / 60:.1f} min (cached rows take no time). Training time is "
              "the sum of the epoch times in each run's metrics.csv.", ""]
    aa_cost = [(t["row"]["name"], t["runs"][args.seeds[0]]["autoattack"]) for t in table if "autoattack" in t["runs"][args.seeds[0]]]
    if aa_cost:
        lines += ["AutoAttack cost (wall time of `evaluate`, including PGD-20 and the gradient-masking checks; "
                  "compare only runs made under the same load): "
                  + "; ".join(f"{n} {_aa_seconds(a) / 60:.0f} min for {a['n']} points ({_aa_seconds(a) / a['n']:.1f} s per point"
                              + (f", torch threads: {a['torch_threads']})" if "torch_threads" in a else ")")
                              for n, a in aa_cost) + ".", ""]
    lines += claims(table, args)
    checks = [(t["row"]["name"], c) for t in table for c in t["runs"][args.seeds[0]].get("autoattack", {}).get("checks", [])]
    failed = [(n, c) for n, c in checks if isinstance(c, dict) and not c.get("passed", True)]
    if checks:
        lines.append("Gradient-masking checks on the AutoAttack rows: "
                     + ("all passed." if not failed else "FAILED: " + "; ".join(f"{n}: {c.get('name')}" for n, c in failed)))
        lines.append("")
    lines += [f"![accuracy vs keep ratio](img/{prefix}_keep_ratio.png)", "", f"![robust accuracy vs storage](img/{prefix}_storage.png)", ""]
    plot(points, img, prefix)
    atomic_write_bytes(out, ("\n".join(lines) + "\n").encode())


def claims(table, args) -> list[str]:
    """The paper's claims, each compared with what this table measured (PGD-20, first seed)."""
    by = {t["row"]["name"]: t["runs"] for t in table}
    pgd = lambda name, s=None: by[name][args.seeds[0] if s is None else s]["test"]["pgd20_acc"] if name in by else None
    spread = [abs(pgd(n, args.seeds[0]) - pgd(n, args.seeds[1])) for n in ("dense", "k0.05", "k0.01")
              if len(args.seeds) > 1 and n in by and args.seeds[1] in by[n]]
    noise = max(spread) if spread else None
    out = ["## What agrees with the paper, and what does not", ""]
    if noise is not None:
        out.append(f"Seed-to-seed spread of PGD-20 accuracy on the headline rows: up to {100 * noise:.1f} points; "
                   "differences smaller than that are not evidence either way.")
        out.append("")

    def compare(claim: str, a: str, b: str, approach: bool = False) -> None:
        """``a`` should beat ``b`` (or, with ``approach``, come within seed noise of it)."""
        if pgd(a) is None or pgd(b) is None:
            return
        d = pgd(a) - pgd(b)
        if noise is not None and abs(d) <= noise:
            verdict = "agrees (within seed noise)" if approach else "within seed noise: neither confirmed nor contradicted"
        else:
            verdict = "agrees" if d > 0 else "does NOT agree"
        out.append(f"- {claim}: {a} {100 * pgd(a):.1f}% vs {b} {100 * pgd(b):.1f}% PGD-20 ({100 * d:+.1f} points): {verdict}.")

    compare("A binary subnetwork at 5% of the weights approaches or beats dense full-precision AT", "k0.05", "dense", approach=True)
    compare("... and at 1% of the weights", "k0.01", "dense", approach=True)
    first = lambda name: by[name][args.seeds[0]] if name in by and args.seeds[0] in by[name] else {}
    aa = {n: first(n).get("autoattack", {}).get("autoattack_acc") for n in ("dense", "k0.05", "k0.01")}
    for n in ("k0.05", "k0.01"):
        if aa[n] is not None and aa["dense"] is not None:
            out.append(f"- The same under AutoAttack ({args.aa_n} points): {n} {100 * aa[n]:.1f}% vs dense "
                       f"{100 * aa['dense']:.1f}% ({100 * (aa[n] - aa['dense']):+.1f} points).")
    gaps = {n: first(n)["autoattack"]["pgd20_acc"] - aa[n] for n in aa if aa[n] is not None}
    if gaps:
        verdict = ("small gaps: PGD-20 is a fair proxy here" if max(gaps.values()) <= 0.05
                   else "a large gap somewhere: PGD-20 overstates that row's robustness")
        out.append("- AutoAttack lowers accuracy below PGD-20 (same points) by "
                   + ", ".join(f"{n} {100 * g:.1f}" for n, g in gaps.items()) + f" points: {verdict}.")
    compare("Adaptive keep ratios (p = 0.1) beat a uniform ratio (p = 1)", "k0.05", "k0.05-p1")
    compare("The last BatchNorm on the logits helps", "k0.05", "k0.05-nolastbn")
    compare("+-1 weights are at least as good as signed Kaiming constants", "k0.05", "k0.05-signedkaiming")
    compare("+-1 weights are at least as good as Kaiming normal weights", "k0.05", "k0.05-kaimingnormal")
    compare("PGD training is more robust than single-step (FGSM-RS) training", "k0.05-pgd", "k0.05")
    out += ["", "These are 3-epoch runs on 20,000 Fashion-MNIST images with a width-16 ResNet-18, far from the "
            "paper's 400-epoch CIFAR runs of full-width networks; they test the direction of each claim at small "
            "scale, not its size.", ""]
    return out


def plot(points, img: Path, prefix: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweep = sorted([(r0["keep_ratio"], r0["test"]) for row, r0, _ in points if row["name"] in ("k0.01", "k0.05", "k0.1") and "test" in r0])
    dense = next((r0["test"] for row, r0, _ in points if row["name"] == "dense" and "test" in r0), None)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    if sweep:
        ks = [k for k, _ in sweep]
        ax.plot(ks, [100 * t["clean_acc"] for _, t in sweep], "o-", label="robin clean")
        ax.plot(ks, [100 * t["pgd20_acc"] for _, t in sweep], "s-", label="robin PGD-20")
    if dense:
        ax.axhline(100 * dense["clean_acc"], color="gray", ls="--", label="dense clean")
        ax.axhline(100 * dense["pgd20_acc"], color="black", ls=":", label="dense PGD-20")
    ax.set_xscale("log")
    ax.set_xlabel("keep ratio (fraction of weights kept)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title("Fashion-MNIST, eps 0.1")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_keep_ratio.png", dpi=120)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for row, r0, storage in points:
        if "test" in r0:
            ax.scatter(storage / 1e6, 100 * r0["test"]["pgd20_acc"], label=row["name"])
    ax.set_xscale("log")
    ax.set_xlabel("storage (MB, log scale)")
    ax.set_ylabel("PGD-20 accuracy (%)")
    ax.set_title("Robust accuracy vs storage")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(img / f"{prefix}_storage.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
