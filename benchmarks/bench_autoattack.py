"""Benchmark: robin's AutoAttack evaluation versus the original (pyautoattack), on the README model.

Runs AutoAttack "standard" (APGD-CE, APGD-T, FAB-T, Square; Linf) on the first ``--n`` test points
of a trained run (default ``runs/robin``, written by the README's first command, ``robin train``),
one variant after the other in one process, and reports each one's time per attack stage, the
throughput ratio against the reference and whether every point's verdict (robust or not) agrees:

- ``reference``: pyautoattack 0.2.0 on the masked model (what a RobustBench user runs);
- ``fast``: ``robin_plugin.eval.evaluate(..., fast=True)`` (the default): the attacks run on
  :func:`robin_plugin.eval.fast.attack_model` (masks and BatchNorms folded, channels-last), every
  adversarial example is judged on the masked model;
- ``exact``: ``evaluate(..., fast=False)``: the attacks run on the masked model itself;
- ``cli``: the whole ``robin eval --run RUN --n N`` command (clean, PGD-20, AutoAttack and the
  gradient-masking checks) as a subprocess, wall time.

Times are per variant; ratios are reference time / variant time, so > 1 is faster than the
reference. The target is >= 1.5x for ``fast`` with identical verdicts, and ``cli`` in under half the
reference's time.

    .venv/bin/robin train                                   # the README model (about 5 min)
    .venv/bin/python benchmarks/bench_autoattack.py         # --run runs/robin --n 100 --variants reference fast cli

Prints the machine, threads and sizes, and writes benchmarks/results/autoattack.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from robin_plugin.data import dataset_info, get_dataset
from robin_plugin.eval.evaluate import check_eval_inputs, evaluate, reference_autoattack
from robin_plugin.io import atomic_write_json
from robin_plugin.training import load_run

STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
TARGET_FAST, TARGET_CLI = 1.5, 2.0


def _find(obj: object, key: str) -> object:
    """The first value of ``key`` anywhere in a JSON object (the eval file nests its result)."""
    if isinstance(obj, dict):
        if key in obj:
            return obj[key]
        obj = list(obj.values())
    if isinstance(obj, list):
        for v in obj:
            found = _find(v, key)
            if found is not None:
                return found
    return None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", default="runs/robin", help="a robin train output folder (default: the README's)")
    ap.add_argument("--n", type=int, default=100, help="test points (the first N)")
    ap.add_argument("--batch-size", type=int, default=250)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["reference", "fast", "cli"],
                    choices=["reference", "fast", "exact", "cli"])
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "autoattack.json"))
    args = ap.parse_args()
    if not Path(args.run, "config.json").is_file():
        raise SystemExit(f"{args.run}: no trained run here; make the README model first with `.venv/bin/robin train` "
                         "(or pass --run DIR)")
    torch.set_num_threads(args.threads)
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
               "torch": torch.__version__, "load_average_start": os.getloadavg()}
    print(f"machine: {machine}")
    model, config = load_run(args.run, "best")
    ds = get_dataset(config.dataset, config.data_root, split="test")
    x, y = check_eval_inputs(ds.images, ds.labels, args.n)
    eps = config.eps if config.eps is not None else dataset_info(config.dataset).default_eps
    print(f"model: {config.model} {dict(config.model_kwargs)} from {args.run}, keep_ratio {config.keep_ratio}; "
          f"{args.n} {config.dataset} test points, eps {eps:.4g}, batch {args.batch_size}; variants {args.variants}")

    results: dict[str, dict] = {}
    for variant in args.variants:
        t = time.perf_counter()
        if variant == "reference":
            ref = reference_autoattack(model, x, y, eps, batch_size=args.batch_size, seed=0)
            results[variant] = {"seconds": ref["seconds"], "stage_seconds": ref.get("stage_seconds", {}),
                                "robust": ref["robust"], "autoattack_acc": ref["autoattack_acc"]}
        elif variant in ("fast", "exact"):
            r = evaluate(model, x, y, eps, batch_size=args.batch_size, run_checks=False, pgd_steps=1, progress=False,
                         fast=variant == "fast")
            stage = {a: r.seconds[a] for a in r.attacks}
            results[variant] = {"seconds": r.seconds["clean"] + sum(stage.values()), "stage_seconds": stage,
                                "robust": r.robust, "autoattack_acc": r.autoattack_acc}
        else:  # the whole command a user runs
            with tempfile.TemporaryDirectory() as tmp:
                cmd = [sys.executable, "-m", "robin_plugin.cli", "eval", "--run", args.run, "--n", str(args.n),
                       "--out", str(Path(tmp) / "eval.json")]
                env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
                proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
                if proc.returncode:
                    raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
                out = json.loads((Path(tmp) / "eval.json").read_text())
            results[variant] = {"seconds": time.perf_counter() - t, "autoattack_acc": _find(out, "autoattack_acc"),
                                "command": " ".join(cmd[1:])}
        print(f"{variant}: {results[variant]['seconds']:.1f} s, AutoAttack accuracy {results[variant]['autoattack_acc']}"
              + (f", per stage {({k: round(v, 1) for k, v in results[variant]['stage_seconds'].items()})}"
                 if results[variant].get("stage_seconds") else ""))

    summary: dict[str, object] = {}
    if "reference" in results:
        ref = results["reference"]
        for v, r in results.items():
            if v == "reference":
                continue
            r["speedup_vs_reference"] = ref["seconds"] / r["seconds"]
            r["stage_speedup_vs_reference"] = {a: ref["stage_seconds"][a] / r["stage_seconds"][a]
                                               for a in r.get("stage_seconds", {})
                                               if ref["stage_seconds"].get(a) and r["stage_seconds"][a] > 0}
            if "robust" in r:
                r["verdicts_identical_to_reference"] = r["robust"] == ref["robust"]
            print(f"{v}: {r['speedup_vs_reference']:.2f}x the reference's throughput; per stage "
                  f"{ {a: round(s, 2) for a, s in r['stage_speedup_vs_reference'].items()} }; "
                  f"verdicts identical: {r.get('verdicts_identical_to_reference', 'not compared')}")
    if "fast" in results and "exact" in results:
        results["fast"]["verdicts_identical_to_exact"] = results["fast"]["robust"] == results["exact"]["robust"]
        print(f"fast vs exact verdicts identical: {results['fast']['verdicts_identical_to_exact']}")
    if "fast" in results and "speedup_vs_reference" in results["fast"]:
        f = results["fast"]
        summary["fast_target_met"] = f["speedup_vs_reference"] >= TARGET_FAST and f["verdicts_identical_to_reference"]
        print(f"target fast >= {TARGET_FAST}x with identical verdicts: {'MET' if summary['fast_target_met'] else 'NOT MET'}")
    if "cli" in results and "speedup_vs_reference" in results["cli"]:
        summary["cli_under_half"] = results["cli"]["seconds"] < results["reference"]["seconds"] / TARGET_CLI
        print(f"robin eval --run {args.run} --n {args.n}: {results['cli']['seconds']:.0f} s vs reference "
              f"{results['reference']['seconds']:.0f} s: {'under' if summary['cli_under_half'] else 'NOT under'} half")
    atomic_write_json(args.out, {
        "benchmark": "AutoAttack standard, Linf: robin_plugin (torchattacks components) vs pyautoattack 0.2.0",
        "machine": machine, "load_average_end": os.getloadavg(), "run": args.run, "model": config.model,
        "model_kwargs": dict(config.model_kwargs), "keep_ratio": config.keep_ratio, "n_points": args.n, "eps": eps,
        "batch_size": args.batch_size, "variants": results, "summary": summary, "command": " ".join(sys.argv)})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
