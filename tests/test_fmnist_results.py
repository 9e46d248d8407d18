"""benchmarks/fmnist_results.py: the budget is pinned, tuning picks by the held-out rule, a stale cache
is refused, claims are decided by the stated rule, and the page is written from finished runs."""
from __future__ import annotations

import csv
import importlib.util
import json
import types
from pathlib import Path

import pytest

from robin_plugin.training import PRESETS, TrainConfig

_SPEC = importlib.util.spec_from_file_location(
    "fmnist_results", Path(__file__).resolve().parents[1] / "benchmarks" / "fmnist_results.py"
)
fr = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fr)

TUNED = {"lr_schedule": "onecycle", "lr": 0.2, "batch_size": 64}


def _args(tmp_path, quick=False):
    return types.SimpleNamespace(cache=str(tmp_path), quick=quick, widths=[32], seeds=[0, 1, 2], ablation_seeds=[0, 1])


def _row_config(row, seed, tmp_path):
    return fr.make_config(fr.side_config(row["side"], TUNED), row.get("set", {}), seed, row["name"], _args(tmp_path))


def test_every_row_is_a_valid_config_that_changes_only_what_it_says(tmp_path):
    for row in fr.ROWS + fr.width_rows(_args(tmp_path)):
        base = fr.make_config(fr.side_config(row["side"], TUNED), {}, 0, "base", _args(tmp_path)).to_dict()
        cfg = _row_config(row, 0, tmp_path)
        assert isinstance(cfg, TrainConfig)
        changed = {k for k, v in cfg.to_dict().items() if base[k] != v} - {"out_dir"}
        said = {k for k, v in row.get("set", {}).items() if base[k] != v}
        assert changed == said, (row["name"], changed, said)
        assert cfg.eps == 0.1 and cfg.test_n == 1000 and cfg.test_pgd_steps == 20 and cfg.epochs == 5
        assert (cfg.lr_schedule, cfg.lr, cfg.batch_size) == ("onecycle", 0.2, 64)


def test_the_sides_differ_only_in_the_model_and_their_tuning():
    dense, robin = fr.side_config("dense"), fr.side_config("robin")
    assert {k for k in dense if dense[k] != robin[k]} == {"model"}
    assert all(set(p) == {"lr_schedule", "lr", "batch_size"} for p in fr.SWEEP)


def test_the_budget_does_not_follow_the_presets(tmp_path, monkeypatch):
    row = fr.ROWS[1]
    before = _row_config(row, 0, tmp_path)
    monkeypatch.setitem(PRESETS, "fmnist-fast", dict(PRESETS["fmnist-fast"], batch_size=7, epochs=99))
    assert _row_config(row, 0, tmp_path) == before


def test_the_heldout_images_are_outside_every_training_subset():
    assert fr.HELDOUT[0] >= fr.BUDGET["train_subset"] and fr.QUICK_HELDOUT[0] >= fr.BUDGET["train_subset"]
    assert fr.HELDOUT[1] <= 60000  # Fashion-MNIST's training set


def test_width_rows_keep_as_many_weights_as_their_width16_twin(tmp_path):
    import timm

    from robin_plugin.summary import summarize

    rows = fr.width_rows(_args(tmp_path))
    assert {r["twin"] for r in rows} == set(fr.WIDTH_TWINS)
    for r in rows:
        twin_keep = next(x for x in fr.ROWS if x["name"] == r["twin"]).get("set", {}).get("keep_ratio", fr.BUDGET["keep_ratio"])
        kept = summarize(timm.create_model("robin_resnet18", num_classes=10, in_chans=1, width=r["width"],
                                           keep_ratio=r["set"]["keep_ratio"])).kept
        kept16 = summarize(timm.create_model("robin_resnet18", num_classes=10, in_chans=1, width=16, keep_ratio=twin_keep)).kept
        assert abs(kept - kept16) <= 0.01 * kept16, (r["name"], kept, kept16)


def test_a_cached_run_with_another_recipe_is_refused(tmp_path):
    cfg = _row_config(fr.ROWS[1], 0, tmp_path)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(dict(cfg.to_dict(), batch_size=128, progress=True)))
    (out / "results.json").write_text(json.dumps({"test": {}}))
    with pytest.raises(SystemExit, match="batch_size"):
        fr.check_cache(cfg)


def test_a_dense_run_ignores_the_pruning_keys_of_its_cache(tmp_path):
    cfg = _row_config(fr.ROWS[0], 0, tmp_path)
    assert cfg.model.endswith("_dense")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(dict(cfg.to_dict(), keep_ratio=0.5, p=1.0)))
    (out / "results.json").write_text(json.dumps({"test": {"clean_acc": 0.5}}))
    assert fr.check_cache(cfg) is True


def test_tuning_picks_the_best_heldout_pgd_and_waits_for_every_point():
    run = lambda pgd, clean=0.5: {"heldout": {"pgd20_acc": pgd, "clean_acc": clean}}
    a, b, c = ({"lr": x} for x in (0.05, 0.1, 0.2))
    assert fr.choose([(a, run(0.6)), (b, run(0.7)), (c, run(0.65))]) == b
    assert fr.choose([(a, run(0.7, 0.8)), (b, run(0.7, 0.9))]) == b  # ties: clean accuracy
    assert fr.choose([(a, run(0.6)), (b, None)]) is None
    assert fr.choose([(a, run(0.6)), (b, {"test": {}})]) is None  # finished but not scored on the held-out images


@pytest.mark.parametrize("a, b, matches, expected", [
    ([0.70, 0.71, 0.72], [0.60, 0.61, 0.62], False, "agrees"),        # d = 0.10 > 2s = 0.02
    ([0.60, 0.61, 0.62], [0.70, 0.71, 0.72], False, "contradicts"),
    ([0.70, 0.74, 0.66], [0.68, 0.69, 0.70], False, "undecided"),     # d = 0.02, s = 0.04
    ([0.70, 0.74, 0.66], [0.68, 0.69, 0.70], True, "agrees"),         # a match is not refuted
    ([0.60, 0.61, 0.62], [0.70, 0.71, 0.72], True, "contradicts"),
    ([0.90], [0.10, 0.11], False, "undecided (fewer than 2 seeds)"),
])
def test_the_verdict_rule(a, b, matches, expected):
    v, d, _ = fr.verdict(a, b, matches=matches)
    assert v == expected
    assert d == pytest.approx(sum(a) / len(a) - sum(b) / len(b))


def _fake_run(cfg: TrainConfig, pgd: float, heldout: float | None = None, collapses: int = 0,
              machine: dict | None = None) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))
    dense = cfg.model.endswith("_dense")
    (out / "results.json").write_text(json.dumps({
        "test": {"n": 1000, "clean_acc": pgd + 0.1, "pgd20_acc": pgd}, "keep_ratio": 1.0 if dense else cfg.keep_ratio,
        "total_weights": 700000, "kept_weights": int(700000 * cfg.keep_ratio), "storage": {"fp32_bytes": 2_800_000},
        "best_epoch": 5, "machine": machine or {"torch_threads": 1, "device": "cpu", "cpu_count": 2}}))
    if not dense:
        (out / "compact.json").write_text(json.dumps({"file_bytes": 23_000}))  # measured once by read_run
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["epoch", "time/epoch_s", "val/robust_acc", "guard/collapses"])
        w.writeheader()
        for e in range(1, 3):
            w.writerow({"epoch": e, "time/epoch_s": 60, "val/robust_acc": pgd, "guard/collapses": collapses if e == 2 else 0})
    if heldout is not None:
        (out / "heldout.json").write_text(json.dumps({"clean_acc": 0.8, "pgd20_acc": heldout}))


def test_the_page_is_written_from_finished_runs_only(tmp_path, monkeypatch):
    """--no-train: tuning by the held-out rule, rows on the chosen recipe, unfinished runs listed, claims decided."""
    args = _args(tmp_path / "cache")
    pgd = {"dense": 0.715, "k0.05": 0.70, "k0.01": 0.60, "k0.1": 0.40}
    # tuning: the second point wins for dense, the first for robin; a winner's run is also its row's seed 0
    for side in fr.SIDES:
        for i, p in enumerate(fr.SWEEP):
            win = (i == 1) if side == "dense" else (i == 0)
            cfg = fr.make_config(fr.side_config(side), p, 0, fr.sweep_name(side, p), args)
            _fake_run(cfg, pgd[{"dense": "dense", "robin": "k0.05"}[side]] if win else 0.6, heldout=0.75 if win else 0.7)
    tuned = {"dense": fr.SWEEP[1], "robin": fr.SWEEP[0]}
    for row in fr.ROWS:
        if row["name"] not in pgd:
            continue  # the ablations beyond keep 0.1 and the width study: not run yet
        for seed in (0, 1, 2) if row["kind"] == "headline" else (0, 1):
            if seed == 0 and row["name"] in ("dense", "k0.05"):
                continue
            cfg = fr.make_config(fr.side_config(row["side"], tuned[row["side"]]), row.get("set", {}), seed, row["name"], args)
            gpu = {"torch_threads": 2, "device": "cuda:0", "accelerator": "NVIDIA H200"} if row["name"] == "k0.1" else None
            _fake_run(cfg, pgd[row["name"]] + 0.01 * seed, collapses=3 if row["name"] == "k0.1" else 0, machine=gpu)
    out = tmp_path / "docs" / "results.md"
    monkeypatch.setattr("sys.argv", ["fmnist_results.py", "--no-train"])
    assert fr.main(["--no-train", "--cache", str(tmp_path / "cache"), "--out", str(out)]) == 0
    page = out.read_text()
    assert "| dense | cosine, lr 0.1, batch 64 | 80.0 | 75.0 |" in page and "- dense: **cosine, lr 0.1, batch 64**" in page
    assert "- robin: **cosine, lr 0.05, batch 64**" in page
    assert "72.5 ± 1.0" in page and "s0 71.5, s1 72.5, s2 73.5" in page           # the dense row, 3 seeds
    assert "k0.1-s0: guard collapses 3" in page
    assert "k0.05-p1-s0" in page.split("Not finished yet")[1]                      # listed as missing
    assert "k0.01 61.0 vs dense 72.5 (d = -11.5 points, s = 1.0; seeds 3 and 3): **contradicts**" in page
    assert "k0.05 71.0 vs dense 72.5 (d = -1.5 points, s = 1.0; seeds 3 and 3): **agrees**" in page
    assert "w32-7k vs k0.01" in page  # a width claim that has no runs yet says so
    assert "w48" not in page          # ... and one of a width not asked for is left out
    assert "23 KB (compact file)" in page  # the compact size kept in the run folder, without the model file
    assert "CUDA (NVIDIA H200): 2 run(s) (k0.1-s0, k0.1-s1)" in page and "min (CUDA) |" in page
    assert (out.parent / "img" / "results_width.png").is_file()
    record = json.loads((tmp_path / "cache" / "results.json").read_text())
    assert record["tuned"] == tuned and set(record["rows"]["dense"]) == {"0", "1", "2"}


def test_where_a_run_trained():
    assert fr._where({"machine": {"device": "cpu", "cpu_count": 2}}) == "CPU (2 cores)"
    assert fr._where({"machine": {"device": "cuda:0", "accelerator": "NVIDIA H200"}}) == "CUDA (NVIDIA H200)"
    assert fr._where({}) == "CPU (? cores)"


@pytest.mark.parametrize("flags", [["--aa-only", "--no-train"], ["--aa-only", "--no-aa"], ["--jobs", "0"]])
def test_contradictory_options_are_refused(flags, tmp_path):
    with pytest.raises(SystemExit) as e:
        fr.main(flags + ["--cache", str(tmp_path)])
    assert e.value.code == 2


@pytest.mark.slow
def test_quick_mode_runs_the_whole_pipeline(tmp_path, monkeypatch):
    """--quick (tiny budget, one seed, no width study, no AutoAttack): tuning, rows and the page,
    end to end on the real data, writing only into its own cache folder."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["fmnist_results.py", "--quick"])
    monkeypatch.setattr(fr, "ROWS", [r for r in fr.ROWS if r["name"] in ("dense", "k0.05", "k0.01", "k0.1")])  # CI time
    assert fr.main(["--quick", "--seeds", "0", "--ablation-seeds", "0", "--widths", "--no-aa"]) == 0
    cache = tmp_path / "runs" / "fmnist_results_quick"
    page = (cache / "results_quick.md").read_text()
    assert "QUICK SMOKE RUN" in page and "**Status: 4 of 4 row runs finished.**" in page
    assert "k0.1-s0: guard collapses" in page  # the keep 0.1 section, from the real metrics.csv
    assert not (tmp_path / "docs").exists()
    record = json.loads((cache / "results.json").read_text())
    assert set(record["tuned"]) == {"dense", "robin"} and all(record["tuned"].values())
