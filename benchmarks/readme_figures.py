"""Measure the README's own figures into result files; ``fmnist_page.py`` renders them into README.md.

    .venv/bin/python benchmarks/readme_figures.py main-job --clone /tmp/fresh   # the README's first command
    .venv/bin/python benchmarks/readme_figures.py compact-size                  # ResNet-34's compact file

``main-job`` runs the README's first command (``bash .ci/setup.sh && .venv/bin/robin train``) in a fresh
clone ``--clone`` with nothing else running beside it, times it end to end, and records its printed
accuracies and training time (from the run's results.json) with the machine in
``docs/results/main_job.json``. ``compact-size`` builds ``robin_resnet34`` at keep ratio 0.01 (CIFAR-10
head) and records the size of its compact file and of its fp32 weights in
``docs/results/compact_size.json``. Then ``.venv/bin/python benchmarks/fmnist_page.py`` writes the
figures into the README.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from robin_plugin.io import atomic_write_json  # noqa: E402
from robin_plugin.io import read_limited  # noqa: E402

MAIN_COMMAND = "bash .ci/setup.sh && .venv/bin/robin train"


def cpu_model() -> str:
    """The CPU's model name (Linux), e.g. 'AMD EPYC', else the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main_job(clone: Path) -> dict:
    import json

    readme = (clone / "README.md").read_text()
    if MAIN_COMMAND not in readme.split("```")[1]:
        raise SystemExit(f"the README's first command is no longer {MAIN_COMMAND!r}; update this script")
    t = time.perf_counter()
    subprocess.run(["bash", "-c", MAIN_COMMAND], cwd=clone, check=True)
    wall = time.perf_counter() - t
    res = json.loads(read_limited(clone / "runs" / "robin" / "results.json", 1 << 20))
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    return {"command": MAIN_COMMAND, "commit": commit, "clean_acc": res["test"]["clean_acc"],
            "pgd20_acc": res["test"]["pgd20_acc"], "test_n": res["test"]["n"], "train_seconds": res["train_time_s"],
            "end_to_end_seconds": wall, "cpu": cpu_model(), "cpu_count": os.cpu_count(),
            "platform": platform.platform(), "machine": res.get("machine", {})}


def compact_size() -> dict:
    import timm

    import robin_plugin  # noqa: F401
    from robin_plugin.export import compact_size_report

    model = timm.create_model("robin_resnet34", num_classes=10, keep_ratio=0.01)
    r = compact_size_report(model)
    return {"model": "robin_resnet34", "num_classes": 10, "keep_ratio": 0.01, "file_bytes": r["file_bytes"],
            "fp32_bytes": r["fp32_bytes"], "bound_bytes": r["bound_bytes"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="what", required=True)
    mj = sub.add_parser("main-job", help="time the README's first command in a fresh clone")
    mj.add_argument("--clone", type=Path, required=True, help="a fresh clone of this repository")
    sub.add_parser("compact-size", help="ResNet-34's compact file at keep ratio 0.01")
    args = ap.parse_args(argv)
    if args.what == "main-job":
        out, rec = ROOT / "docs" / "results" / "main_job.json", main_job(args.clone.resolve())
    else:
        out, rec = ROOT / "docs" / "results" / "compact_size.json", compact_size()
    atomic_write_json(out, rec)
    print(f"wrote {out}: {rec}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
