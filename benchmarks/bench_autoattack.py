"""Benchmark: our AutoAttack path (torchattacks components at full strength) vs the original (pyautoattack).

Both run AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square; Linf) on the same model and the
same points, alternately, ``--repeats`` times each, in one process, so the time ratio is measured
under the same machine load; on a shared machine the headline ratio uses each side's fastest run
(the least disturbed one), and the per-pair ratios are recorded too. The model is a small masked binary MLP (robinified, 30% of the +-1
weights kept) adversarially trained on Fashion-MNIST (PGD-3, eps 0.1), so that many points are
robust and every attack in the ensemble does real work.

    python benchmarks/bench_autoattack.py [--n 100] [--repeats 2] [--threads 2]

Prints the machine, threads and sizes, and writes benchmarks/results/autoattack.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from robin_plugin.eval.evaluate import evaluate, reference_autoattack
from robin_plugin.io import atomic_write_json
from robin_plugin.testing import fashion_mnist_subset, pgd_train, tiny_robin_mlp



def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="test points")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--eps", type=float, default=0.1)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "autoattack.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
               "torch": torch.__version__, "load_average_start": os.getloadavg()}
    print(f"machine: {machine}")
    t = time.perf_counter()
    model = pgd_train(tiny_robin_mlp(hidden=args.hidden), *fashion_mnist_subset("train", 5000), steps=args.train_steps, eps=args.eps)
    print(f"trained the model in {time.perf_counter() - t:.1f} s")
    x, y = fashion_mnist_subset("test", args.n)
    ours_s, ref_s, ours_acc, ref_acc = [], [], [], []
    for rep in range(args.repeats):
        r = evaluate(model, x, y, args.eps, batch_size=args.n, run_checks=False, pgd_steps=1, progress=False)
        ours_s.append(r.seconds["clean"] + sum(r.seconds[a] for a in r.attacks))
        ours_acc.append(r.autoattack_acc)
        ref = reference_autoattack(model, x, y, args.eps, batch_size=args.n)
        ref_s.append(ref["seconds"])
        ref_acc.append(ref["autoattack_acc"])
        print(f"repeat {rep}: ours {ours_s[-1]:.1f} s (AA {ours_acc[-1]:.2%}, per attack {r.robust_acc_after}), "
              f"pyautoattack {ref_s[-1]:.1f} s (AA {ref_acc[-1]:.2%}, per attack {ref['robust_acc_after']})")
    res = {
        "benchmark": "AutoAttack standard, Linf: robin_plugin (torchattacks components) vs pyautoattack 0.2.0",
        "machine": machine, "load_average_end": os.getloadavg(),
        "model": f"robinified MLP 196-{args.hidden}-10, keep_ratio 0.3, PGD-3 adversarial training {args.train_steps} steps",
        "clean_acc": r.clean_acc, "n_points": args.n, "eps": args.eps, "batch_size": args.n, "repeats": args.repeats,
        "ours_seconds": ours_s, "reference_seconds": ref_s,
        "ours_min_s": min(ours_s), "reference_min_s": min(ref_s),
        "ours_median_s": statistics.median(ours_s), "reference_median_s": statistics.median(ref_s),
        # the machine is shared: the fastest run of each is the least disturbed, so the headline ratio uses minima
        "time_ratio_ours_over_reference": min(ours_s) / min(ref_s),
        "pairwise_ratios": [a / b for a, b in zip(ours_s, ref_s)],
        "ours_autoattack_acc": ours_acc, "reference_autoattack_acc": ref_acc,
        "max_abs_difference_points": 100 * max(abs(a - b) for a, b in zip(ours_acc, ref_acc)),
    }
    atomic_write_json(args.out, res)
    print(json.dumps({k: res[k] for k in ("ours_min_s", "reference_min_s", "time_ratio_ours_over_reference",
                                          "pairwise_ratios", "max_abs_difference_points")}, indent=1))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
