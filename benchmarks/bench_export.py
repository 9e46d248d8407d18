"""Compact export size versus the information bound and fp32, for every registered masked model.

For each ``robin_*`` model (dense twins excluded) at keep ratios 0.01, 0.05, 0.1 and p = 0.1, 1:
the exact compact file size, the information bound (sum of n_i * H(k_i) bits plus the stored
BatchNorm statistics), and the dense fp32 size. Masks are the models' initial top-k selections
(random scores), for which the bound is tight; trained masks are structured and code no worse.

Run: ``python benchmarks/bench_export.py`` (about two minutes on 2 CPU cores). Writes
``benchmarks/results/export.json``.
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import timm
import torch

import robin_plugin
from robin_plugin.export import compact_size_report
from robin_plugin.io import atomic_write_json

KEEP_RATIOS = (0.01, 0.05, 0.1)
PS = (0.1, 1.0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "export.json")
    parser.add_argument("--pattern", default="robin_*", help="timm model pattern (default robin_*)")
    args = parser.parse_args(argv)
    machine = dict(python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
                   robin_plugin=robin_plugin.__version__, cpu=platform.processor() or platform.machine(),
                   cores=os.cpu_count(), threads=torch.get_num_threads())
    print("machine:", ", ".join(f"{k}={v}" for k, v in machine.items()))
    names = [n for n in timm.list_models(args.pattern) if n.startswith("robin_") and not n.endswith("_dense")]
    rows = []
    header = f"{'model':<16} {'keep':>5} {'p':>4} {'file KB':>9} {'bound KB':>9} {'file/bound':>10} {'fp32 MB':>8} {'fp32/file':>9} {'s':>5}"
    print(header)
    t_all = time.perf_counter()
    for name in names:
        model = timm.create_model(name)
        for p in PS:
            for k in KEEP_RATIOS:
                t0 = time.perf_counter()
                robin_plugin.set_keep_ratio(model, k, p)
                r = compact_size_report(model)
                dt = time.perf_counter() - t0
                rows.append(dict(model=name, keep_ratio=k, p=p, seconds=round(dt, 2),
                                 **{key: v for key, v in r.items() if key not in ("layers", "model")}))
                print(f"{name:<16} {k:>5} {p:>4} {r['file_bytes'] / 1e3:>9.1f} {r['bound_bytes'] / 1e3:>9.1f} "
                      f"{r['ratio_to_bound']:>10.3f} {r['fp32_bytes'] / 1e6:>8.1f} {r['fp32_over_file']:>9.0f} {dt:>5.1f}")
        del model
    total = time.perf_counter() - t_all
    print(f"total {total:.0f} s; worst file/bound {max(r['ratio_to_bound'] for r in rows):.3f}")
    atomic_write_json(args.out, dict(machine=machine, seconds=round(total, 1), results=rows))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
