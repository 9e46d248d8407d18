"""The paper recipe's training attack against robin's previous one, on a learnable CPU proxy.

Both arms train `robin train --preset cifar10-resnet18-pgd` on Fashion-MNIST written as CIFAR-10
pickle batches (benchmarks/fmnist_cifar_proxy.py), with the same short budget, and differ only
in the two settings the official code decided:

- ``paper``: the official code's rule: PGD crafts in train mode, returns the worst-loss iterate
  (``attack_mode`` default, ``pgd_iterate=worst``);
- ``previous``: robin before this change: eval mode, the last iterate
  (``attack_mode=eval pgd_iterate=last``).

Every run is then scored by one fixed attack, the same for both arms: clean and PGD-20 accuracy
(random start, last iterate, step eps / 4) on the first ``--test-n`` test images, from the
epoch with the best held-out PGD accuracy. Seeds 1, 2, 3 (seed 0 chose nothing here either).

Decision, stated before the runs (the rule of docs/results.md, ``verdict`` in
benchmarks/fmnist_results.py): with d = mean(paper) - mean(previous) of PGD-20 accuracy and s
the larger seed standard deviation, "the paper recipe is better" agrees when d > 2s,
contradicts when d < -2s, and is undecided otherwise.

Results go to ``docs/results/paper_recipe_proxy.json`` (committed), and ``--page`` renders the
section of docs/results.md between its markers from that file. One command::

    .venv/bin/python benchmarks/fmnist_cifar_proxy.py runs/fmnist-cifar   # once: the proxy data
    .venv/bin/python benchmarks/paper_recipe_proxy.py --data runs/fmnist-cifar --jobs 2 --page
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fmnist_plan import seed_stats, verdict  # noqa: E402  (the page's statistics and rule)

from robin_plugin.io import atomic_write_bytes, atomic_write_json  # noqa: E402
from robin_plugin.training.config import apply_overrides, get_preset  # noqa: E402
from robin_plugin.training.metrics import clean_and_pgd_accuracy  # noqa: E402
from robin_plugin.training.run import load_data, load_run, train  # noqa: E402
from robin_plugin.training.trainer import gather  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
RESULT = ROOT / "docs" / "results" / "paper_recipe_proxy.json"
PAGE = ROOT / "docs" / "results.md"
BEGIN, END = "<!-- paper-recipe-proxy:begin -->", "<!-- paper-recipe-proxy:end -->"
ARMS = {
    "paper": {"pgd_iterate": "worst"},                        # attack_mode: the official default (train for PGD)
    "previous": {"attack_mode": "eval", "pgd_iterate": "last"},
}
SEEDS = (1, 2, 3)


def budget(args: argparse.Namespace) -> dict[str, Any]:
    """The shared short budget: the preset's recipe, narrowed and shortened for a 2-core CPU."""
    return dict(data_root=str(args.data), model_kwargs={"width": args.width}, keep_ratio=args.keep_ratio, epochs=args.epochs,
                train_subset=args.train_subset, batch_size=args.batch_size, attack_steps=args.attack_steps,
                test_n=0, progress=False, device="cpu")


def run_config(arm: str, seed: int, args: argparse.Namespace):
    overrides = {**budget(args), **ARMS[arm], "seed": seed, "out_dir": str(args.out / f"{arm}-s{seed}")}
    return apply_overrides(get_preset("cifar10-resnet18-pgd"), overrides)


def run_one(arm: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    torch.set_num_threads(args.threads)
    config = run_config(arm, seed, args)
    out = Path(config.out_dir)
    score = out / "proxy_score.json"
    if score.is_file():
        return json.loads(score.read_text())
    t0 = time.perf_counter()
    result = train(config, resume=True)
    model, _ = load_run(out, "best")
    _, _, test = load_data(config.__class__.from_dict({**config.to_dict(), "test_n": args.test_n}))
    x, y = gather(test, torch.arange(min(args.test_n, len(test))))
    m = clean_and_pgd_accuracy(model, x, y, eps=8 / 255, step_size=2 / 255, steps=20, seed=1234, iterate="last")
    row = {"arm": arm, "seed": seed, "clean_acc": m["clean_acc"], "pgd20_acc": m["robust_acc"], "n": len(x),
           "best_epoch": result.get("best_epoch"), "train_time_s": result["train_time_s"],
           "wall_s": time.perf_counter() - t0, "config": config.to_dict()}
    atomic_write_json(score, row)
    return row


def _val_curve(run_dir: Path) -> list[float]:
    """Held-out robust accuracy (%) after each epoch, from the run's metrics.csv."""
    lines = (run_dir / "metrics.csv").read_text().splitlines()
    col = lines[0].split(",").index("val/robust_acc")
    return [100 * float(line.split(",")[col]) for line in lines[1:]]


def collect(args: argparse.Namespace) -> dict[str, Any]:
    rows = [json.loads(p.read_text()) for p in sorted(args.out.glob("*/proxy_score.json"))]
    curves = {a: [_val_curve(args.out / f"{r['arm']}-s{r['seed']}") for r in rows if r["arm"] == a] for a in ARMS}
    by_arm = {a: [r for r in rows if r["arm"] == a] for a in ARMS}
    pgd = {a: [100 * r["pgd20_acc"] for r in rs] for a, rs in by_arm.items()}
    clean = {a: [100 * r["clean_acc"] for r in rs] for a, rs in by_arm.items()}
    v, d, s = verdict(pgd["paper"], pgd["previous"]) if all(pgd.values()) else ("not run", float("nan"), float("nan"))
    return {
        "claim": "the paper recipe (train-mode crafting, worst-loss PGD iterate) gives higher PGD-20 accuracy",
        "verdict": v, "d": d, "s": s,
        "pgd20": {a: seed_stats(x) for a, x in pgd.items()}, "clean": {a: seed_stats(x) for a, x in clean.items()},
        "rows": [{k: r[k] for k in ("arm", "seed", "clean_acc", "pgd20_acc", "n", "best_epoch", "train_time_s")}
                 for r in rows],
        "val_robust_by_epoch": {a: [statistics.fmean(e) for e in zip(*c)] for a, c in curves.items() if c},
        "budget": budget(args), "arms": ARMS,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__,
                    "jobs": args.jobs, "threads_per_job": args.threads},
    }


def render(res: dict[str, Any]) -> str:
    """The docs/results.md section, from the result file only."""
    b = res["budget"]
    lines = [BEGIN, "", "## The paper recipe's training attack on a CPU proxy (issue 25)", "",
             "Rendered by `benchmarks/paper_recipe_proxy.py --page` from `docs/results/paper_recipe_proxy.json`.",
             "`robin train --preset cifar10-resnet18-pgd` on Fashion-MNIST written as 3x32x32 CIFAR-10 batches "
             "(`benchmarks/fmnist_cifar_proxy.py`), eps 8/255, with one short budget for both arms: "
             f"width {b['model_kwargs']['width']}, keep ratio {b['keep_ratio']}, {b['train_subset']:,} training images, "
             f"{b['epochs']} epochs, "
             f"batch {b['batch_size']}, PGD-{b['attack_steps']} (step 2/255), the preset's other values. "
             "The arms differ only in how the training PGD crafts: **paper** (the official code: train mode, "
             "worst-loss iterate) and **previous** (robin before: eval mode, last iterate). Both are scored by the "
             "same attack: PGD-20 (last iterate, step 2/255) on the first "
             f"{res['rows'][0]['n'] if res['rows'] else '?'} test images, best held-out epoch; seeds 1, 2, 3. "
             f"Machine: {res['machine']['platform']}, {res['machine']['cpu_count']} CPUs, "
             f"{res['machine']['jobs']} jobs x {res['machine']['threads_per_job']} threads.", "",
             "| arm | PGD-20 % (mean ± sd) | clean % | seeds |", "|---|---|---|---|"]
    for arm in ARMS:
        p, c = res["pgd20"].get(arm), res["clean"].get(arm)
        if p:
            lines.append(f"| {arm} | {p['mean']:.1f} ± {p['sd']:.1f} | {c['mean']:.1f} ± {c['sd']:.1f} | {p['n']} |")
    lines += ["", f"Claim: {res['claim']}. By the page's rule (d = {res['d']:+.1f}, s = {res['s']:.1f}): "
                  f"**{res['verdict']}**.", ""]
    curves = res.get("val_robust_by_epoch", {})
    if curves:
        lines += ["Held-out robust accuracy after each epoch (mean over the seeds; PGD-10 of each arm's own "
                  "validation rule, so the two arms' attacks differ here):", "",
                  "| arm | " + " | ".join(f"epoch {e}" for e in range(len(next(iter(curves.values()))))) + " |",
                  "|---|" + "---|" * len(next(iter(curves.values())))]
        lines += [f"| {a} | " + " | ".join(f"{v:.1f}" for v in c) + " |" for a, c in curves.items()]
        lines += ["", "The previous rule's runs are ahead after the first epoch and the gap closes as training goes "
                      "on. One explanation, not tested here: the train-mode attack crafts against the function being "
                      "trained (batch statistics), while the eval-mode attack crafts against running statistics that "
                      "lag behind early in training, a weaker attack that is easier to fit. The paper trains 400 "
                      "epochs (100 with the fast attack); this short budget cannot say which rule ends ahead there. "
                      "The paper presets follow the official code either way; `attack_mode=eval pgd_iterate=last` "
                      "gives the previous rule."]
    lines += ["", END]
    return "\n".join(lines)


def write_page(section: str) -> None:
    text = PAGE.read_text()
    if BEGIN in text and END in text:
        text = text[:text.index(BEGIN)] + section + text[text.index(END) + len(END):]
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    atomic_write_bytes(PAGE, text.encode())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, required=True, help="the proxy CIFAR-10 folder (benchmarks/fmnist_cifar_proxy.py)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "paper_recipe_proxy")
    ap.add_argument("--jobs", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch threads per job (default: CPUs / jobs)")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--train-subset", type=int, default=10000)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--attack-steps", type=int, default=5)
    ap.add_argument("--width", type=int, default=16)
    ap.add_argument("--keep-ratio", type=float, default=0.05,
                    help="fraction kept (default 0.05: a width-16 net at the paper's 0.01 barely learns in minutes)")
    ap.add_argument("--test-n", type=int, default=1000)
    ap.add_argument("--no-train", action="store_true", help="only collect finished runs and render")
    ap.add_argument("--page", action="store_true", help="render the section of docs/results.md")
    args = ap.parse_args(argv)
    args.threads = args.threads or max(1, (os.cpu_count() or 1) // args.jobs)
    print(f"paper_recipe_proxy: {platform.platform()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{args.jobs} jobs x {args.threads} threads; budget {budget(args)}", flush=True)
    if not args.no_train:
        tasks = [(arm, seed) for seed in SEEDS for arm in ARMS]
        with ProcessPoolExecutor(max_workers=args.jobs) as pool:
            for row in pool.map(run_one, *zip(*tasks), [args] * len(tasks)):
                print(f"  {row['arm']:>8} seed {row['seed']}: clean {100 * row['clean_acc']:.1f}%, "
                      f"PGD-20 {100 * row['pgd20_acc']:.1f}% (best epoch {row['best_epoch']})", flush=True)
    res = collect(args)
    RESULT.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(RESULT, res)
    print(render(res))
    if args.page:
        write_page(render(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
