"""Benchmark: the deploy model (sparse convolutions over the kept +-1 weights) versus the dense twin.

For each keep ratio, builds ``robin_resnet34`` (CIFAR size, 3x32x32, 10 classes) with that
fraction of weights kept (masks of a freshly built model: the per-layer kept fractions are those of
a trained one, only which weights are kept differs), calibrates its BatchNorm statistics on random
inputs, and times the inference forward pass of

- ``masked``: the masked robin model itself (eval mode, masks cached);
- ``dense``: its dense twin (``dense_model``: masks folded into ordinary convolutions);
- ``shrunk``: the dense twin with provably dead channels removed (``dense_model(shrink=True)``);
- ``deploy``: :func:`robin_plugin.export.deploy_model` (sparse where a layer keeps few weights);
- ``all-sparse``: the deploy model with every convolution sparse (``sparse_below=1``), to show
  where the sparse kernel stops paying off.

The variants are timed interleaved, ``--repeats`` rounds of each, in one process; the table shows
median times and speed-ups over the dense twin (a ratio, both measured in the same run). The
"limit" column is dense multiply-adds / kept multiply-adds: what an ideal sparse implementation
could reach. It also checks the deploy logits against the masked model's (``DEPLOY_RTOL`` /
``DEPLOY_ATOL``).

    .venv/bin/python benchmarks/bench_deploy.py [--keep 0.01 0.05 0.1] [--batch 1 64] [--threads 2]

Target: deploy >= 2x the dense twin at keep 0.01 for batch 1 and batch 64. Writes
benchmarks/results/deploy.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings
from pathlib import Path

import timm
import torch

import robin_plugin  # noqa: F401  (registers the models)
from robin_plugin.export.dense import dense_model
from robin_plugin.export.deploy import DEPLOY_ATOL, DEPLOY_RTOL, deploy_model, kept_macs
from robin_plugin.io import atomic_write_json

TARGET = 2.0


def _time(fn, x) -> tuple[float, int]:
    """Seconds and minor page faults (memory the allocator had given back, touched anew) of one call."""
    f, t = resource.getrusage(resource.RUSAGE_SELF).ru_minflt, time.perf_counter()
    with torch.no_grad():
        fn(x)
    return time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="robin_resnet34")
    ap.add_argument("--keep", type=float, nargs="+", default=[0.01, 0.05, 0.1, 0.2])
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=str(Path(__file__).with_name("results") / "deploy.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore", message="Sparse CSR tensor support is in beta")
    machine = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
               "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": sys.version.split()[0],
               "torch": torch.__version__, "load_average_start": os.getloadavg()}
    print(f"machine: {machine}")
    print(f"model: {args.model} (3x32x32, 10 classes); batches {args.batch}; {args.repeats} interleaved rounds, median")
    rows = []
    gen = torch.Generator().manual_seed(0)
    for keep in args.keep:
        model = timm.create_model(args.model, keep_ratio=keep)
        model.train()
        with torch.no_grad():  # BatchNorm statistics of real activations, not the identity
            for _ in range(4):
                model(torch.rand(32, 3, 32, 32, generator=gen))
        model.eval()
        variants = {
            "masked": model,
            "dense": dense_model(model),
            "shrunk": dense_model(model, shrink=True),
            "deploy": deploy_model(model),
            "all-sparse": deploy_model(model, sparse_below=1.0),
        }
        kept, dense_macs = kept_macs(model, (3, 32, 32))
        x_check = torch.rand(8, 3, 32, 32, generator=gen)
        with torch.no_grad():
            ref = model(x_check)
            err = ((variants["deploy"](x_check) - ref).abs() - DEPLOY_RTOL * ref.abs()).max().item()
        within = err <= DEPLOY_ATOL
        for bs in args.batch:
            x = torch.rand(bs, 3, 32, 32, generator=gen)
            for v in variants.values():  # warm-up (oneDNN primitive caches, CSR conversions)
                _time(v, x)
            times: dict[str, list[float]] = {k: [] for k in variants}
            faults: dict[str, list[int]] = {k: [] for k in variants}
            for _ in range(args.repeats):
                for k, v in variants.items():
                    t, f = _time(v, x)
                    times[k].append(t)
                    faults[k].append(f)
            med = {k: statistics.median(t) for k, t in times.items()}
            row = {"keep_ratio": keep, "batch": bs, "median_s": med,
                   "median_minor_faults": {k: statistics.median(f) for k, f in faults.items()},
                   "speedup_vs_dense": {k: med["dense"] / t for k, t in med.items()},
                   "kept_macs": kept, "dense_macs": dense_macs, "limit": dense_macs / kept,
                   "deploy_nnz": variants["deploy"].nnz, "logits_within_tolerance": within}
            rows.append(row)
            sp = row["speedup_vs_dense"]
            print(f"keep {keep:<5} batch {bs:>3}: " + "  ".join(f"{k} {med[k] * 1e3:8.1f} ms ({sp[k]:.2f}x)" for k in variants)
                  + f"  limit {row['limit']:.1f}x  logits ok: {within}  page faults/call: dense "
                  f"{row['median_minor_faults']['dense']:.0f}, deploy {row['median_minor_faults']['deploy']:.0f}")
    at_target = [r for r in rows if r["keep_ratio"] == 0.01]
    met = bool(at_target) and all(r["speedup_vs_dense"]["deploy"] >= TARGET and r["logits_within_tolerance"] for r in at_target)
    print(f"target (deploy >= {TARGET}x the dense twin at keep 0.01, batch {args.batch}): {'MET' if met else 'NOT MET'}")
    for bs in args.batch:  # where a fully sparse model stops paying off, per batch size
        pays = [r["keep_ratio"] for r in rows if r["batch"] == bs and r["speedup_vs_dense"]["all-sparse"] > 1.0]
        stops = [r["keep_ratio"] for r in rows if r["batch"] == bs and r["keep_ratio"] not in pays]
        print(f"batch {bs}: all-sparse beats the dense twin at keep {pays}; not at {stops}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out, {"machine": machine, "model": args.model, "repeats": args.repeats, "rows": rows,
                            "target": TARGET, "target_met": met, "command": " ".join(sys.argv)})
    print(f"wrote {out}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
