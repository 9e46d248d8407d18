"""Mask selection time: ``topk_mask`` (partial topk threshold) versus a full stable sort.

For every masked layer of ``robin_resnet34`` at the paper's setting (keep_ratio 0.01, p 0.1,
adaptive per-layer counts), time :func:`robin_plugin.layers.topk_mask` against
:func:`robin_plugin.layers.topk_mask_by_sort` on that layer's real ``|scores|``. The two are
interleaved in the same run (A, B, A, B, ...) so machine load affects both alike; each figure
is the median of ``--repeats`` calls. The masks must be identical for every layer.

Prints the environment, one row per distinct layer size, and the whole-model ratio
(sum of sort times / sum of our times, every layer counted). Target: >= 2x. Writes JSON to
``benchmarks/results/selection.json``. Runs on the CPU, and on CUDA too when available.

The load average is printed and stored: with more torch threads than idle cores, timings of
either method can be off by 100x, so compare runs made under similar load.

Usage::

    .venv/bin/python benchmarks/bench_selection.py [--repeats 15] [--threads N] [--out PATH]
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import timm
import torch

import robin_plugin
from robin_plugin.io import atomic_write_json
from robin_plugin.layers import topk_mask, topk_mask_by_sort
from robin_plugin.pruning import masked_layers

TARGET = 2.0
MODEL = "robin_resnet34"
KEEP_RATIO, P = 0.01, 0.1
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "selection.json"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _time_call(fn: Callable[[], torch.Tensor], device: torch.device) -> float:
    """Seconds for one call, with the device synchronised before and after."""
    _sync(device)
    t0 = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - t0


def bench_layer(abs_scores: torch.Tensor, count: int, repeats: int) -> tuple[float, float]:
    """Median seconds of (topk_mask, topk_mask_by_sort), interleaved; two warm-up calls each."""
    device = abs_scores.device
    ours = lambda: topk_mask(abs_scores, count)  # noqa: E731
    ref = lambda: topk_mask_by_sort(abs_scores, count)  # noqa: E731
    for _ in range(2):
        ours(), ref()
    t_ours, t_ref = [], []
    for i in range(repeats):
        # alternate which goes first so neither always runs on a warmer cache
        if i % 2 == 0:
            t_ours.append(_time_call(ours, device))
            t_ref.append(_time_call(ref, device))
        else:
            t_ref.append(_time_call(ref, device))
            t_ours.append(_time_call(ours, device))
    return statistics.median(t_ours), statistics.median(t_ref)


def run_device(device: torch.device, repeats: int) -> dict:
    """Benchmark every distinct (layer size, kept count) of the model on ``device``."""
    model = timm.create_model(MODEL, keep_ratio=KEEP_RATIO, p=P).to(device)
    layers = masked_layers(model)

    # identical masks for every layer, not only the timed representatives
    mismatched = [
        name for name, m in layers
        if not torch.equal(topk_mask(m.scores.detach().abs(), m.kept), topk_mask_by_sort(m.scores.detach().abs(), m.kept))
    ]

    groups: Counter[tuple[int, int]] = Counter((m.weight.numel(), m.kept) for _, m in layers)
    first: dict[tuple[int, int], tuple[str, torch.Tensor]] = {}
    for name, m in layers:
        first.setdefault((m.weight.numel(), m.kept), (name, m.scores.detach().abs()))

    rows = []
    for (numel, kept), n_layers in sorted(groups.items()):
        name, abs_scores = first[(numel, kept)]
        t_ours, t_ref = bench_layer(abs_scores, kept, repeats)
        rows.append(dict(
            numel=numel, kept=kept, layers=n_layers, example=name, shape=list(abs_scores.shape),
            ours_ms=t_ours * 1e3, sort_ms=t_ref * 1e3, speedup=t_ref / t_ours,
        ))
    total_ours = sum(r["ours_ms"] * r["layers"] for r in rows)
    total_ref = sum(r["sort_ms"] * r["layers"] for r in rows)
    ratio = total_ref / total_ours
    return dict(
        device=str(device),
        device_name=torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        layers=len(layers), total_weights=sum(m.weight.numel() for _, m in layers),
        total_kept=sum(m.kept for _, m in layers), rows=rows,
        total_ours_ms=total_ours, total_sort_ms=total_ref, ratio=ratio,
        masks_identical=not mismatched, mismatched_layers=mismatched,
        passed=ratio >= TARGET and not mismatched,
    )


def print_result(res: dict) -> None:
    print(f"\n== device {res['device']} ({res['device_name']}): {MODEL}, {res['layers']} masked layers, "
          f"{res['total_weights']:,} weights, {res['total_kept']:,} kept ==")
    print(f"{'weights':>10} {'kept':>7} {'layers':>6}  {'topk_mask ms':>12} {'full sort ms':>12} {'speedup':>8}  example")
    for r in res["rows"]:
        print(f"{r['numel']:>10,} {r['kept']:>7,} {r['layers']:>6}  {r['ours_ms']:>12.3f} {r['sort_ms']:>12.3f} "
              f"{r['speedup']:>7.2f}x  {r['example']}")
    print(f"{'whole model':>26}  {res['total_ours_ms']:>12.3f} {res['total_sort_ms']:>12.3f} {res['ratio']:>7.2f}x")
    print(f"masks identical to the full sort on every layer: {res['masks_identical']}"
          + ("" if res["masks_identical"] else f" (differ: {', '.join(res['mismatched_layers'])})"))
    verdict = "PASS" if res["passed"] else "FAIL"
    print(f"{verdict}: sort time / topk_mask time = {res['ratio']:.2f}x (target >= {TARGET:.0f}x, identical masks)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="timed calls per method and layer size (median)")
    parser.add_argument(
        "--threads", type=int, default=None,
        help="torch CPU threads (default: torch's choice). On a busy machine use 1: with more "
        "threads than free cores, OpenMP barriers make every timing noise",
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON output (default {DEFAULT_OUT})")
    parser.add_argument("--cpu-only", action="store_true", help="skip CUDA even when available")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error(f"--repeats must be >= 1, got {args.repeats}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)

    env = dict(
        machine=platform.machine(), processor=platform.processor(), platform=platform.platform(),
        python=platform.python_version(), torch=torch.__version__, timm=timm.__version__,
        robin_plugin=robin_plugin.__version__, threads=torch.get_num_threads(),
        cpu_count=os.cpu_count(), load_average_1min=round(os.getloadavg()[0], 2),
        cuda_available=torch.cuda.is_available(), repeats=args.repeats,
        model=MODEL, keep_ratio=KEEP_RATIO, p=P, target=TARGET,
    )
    print("bench_selection: topk_mask (partial topk threshold) vs full stable sort")
    for k, v in env.items():
        print(f"  {k}: {v}")

    devices = [torch.device("cpu")]
    if torch.cuda.is_available() and not args.cpu_only:
        devices.append(torch.device("cuda"))
    results = []
    for device in devices:
        res = run_device(device, args.repeats)
        print_result(res)
        results.append(res)

    passed = all(r["passed"] for r in results)
    atomic_write_json(args.out, dict(environment=env, results=results, passed=passed))
    print(f"\nwrote {args.out}")
    print("PASS" if passed else "FAIL")
    return 0 if passed else 1


if __name__ == "__main__":
    sys.exit(main())
