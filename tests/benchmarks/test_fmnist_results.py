"""benchmarks/fmnist_results.py, fmnist_plan.py and fmnist_page.py: the budget is pinned, tuning picks
by the held-out rule, a stale cache is refused, claims are decided by the stated rule on one device,
and the page is rendered from result files alone."""
from __future__ import annotations

import csv
import json
import sys
import types
from pathlib import Path

import pytest

from robin_plugin.training import PRESETS, TrainConfig

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
import fmnist_page as fp  # noqa: E402
import fmnist_plan as plan  # noqa: E402
import fmnist_results as fr  # noqa: E402

TUNED = {"lr_schedule": "onecycle", "lr": 0.2, "batch_size": 64}


def _args(tmp_path, quick=False):
    return types.SimpleNamespace(cache=str(tmp_path), quick=quick, widths=[32], seeds=[3, 4, 5], ablation_seeds=[3, 4])


def _row_config(row, seed, tmp_path):
    return fr.make_config(plan.side_config(row["side"], TUNED), row.get("set", {}), seed, row["name"], _args(tmp_path))


def test_every_row_is_a_valid_config_that_changes_only_what_it_says(tmp_path):
    for row in plan.ROWS + plan.width_rows([32]):
        base = fr.make_config(plan.side_config(row["side"], TUNED), {}, 0, "base", _args(tmp_path)).to_dict()
        cfg = _row_config(row, 0, tmp_path)
        assert isinstance(cfg, TrainConfig)
        changed = {k for k, v in cfg.to_dict().items() if base[k] != v} - {"out_dir"}
        said = {k for k, v in row.get("set", {}).items() if base[k] != v}
        assert changed == said, (row["name"], changed, said)
        assert cfg.eps == 0.1 and cfg.test_n == 1000 and cfg.test_pgd_steps == 20
        assert cfg.epochs == row.get("set", {}).get("epochs", 5) and cfg.attack_mode == "train"
        assert (cfg.lr_schedule, cfg.lr, cfg.batch_size) == ("onecycle", row.get("set", {}).get("lr", 0.2), 64)


def test_the_sides_differ_only_in_the_model_and_their_tuning():
    dense, robin = plan.side_config("dense"), plan.side_config("robin")
    assert {k for k in dense if dense[k] != robin[k]} == {"model"}
    assert all(set(p) == {"lr_schedule", "lr", "batch_size"} for p in plan.SWEEP)


def test_the_budget_does_not_follow_the_presets(tmp_path, monkeypatch):
    row = plan.ROWS[1]
    before = _row_config(row, 0, tmp_path)
    monkeypatch.setitem(PRESETS, "fmnist-fast", dict(PRESETS["fmnist-fast"], batch_size=7, epochs=99))
    assert _row_config(row, 0, tmp_path) == before


def test_the_heldout_images_are_outside_every_training_subset():
    assert plan.HELDOUT[0] >= plan.BUDGET["train_subset"] and plan.QUICK_HELDOUT[0] >= plan.BUDGET["train_subset"]
    assert plan.HELDOUT[1] <= 60000  # Fashion-MNIST's training set


def test_width_rows_keep_as_many_weights_as_their_width16_twin(tmp_path):
    import timm

    from robin_plugin.summary import summarize

    rows = plan.width_rows([32])
    assert {r["twin"] for r in rows} == set(plan.WIDTH_TWINS)
    for r in rows:
        twin_keep = next(x for x in plan.ROWS if x["name"] == r["twin"]).get("set", {}).get("keep_ratio", plan.BUDGET["keep_ratio"])
        kept = summarize(timm.create_model("robin_resnet18", num_classes=10, in_chans=1, width=r["width"],
                                           keep_ratio=r["set"]["keep_ratio"])).kept
        kept16 = summarize(timm.create_model("robin_resnet18", num_classes=10, in_chans=1, width=16, keep_ratio=twin_keep)).kept
        assert abs(kept - kept16) <= 0.01 * kept16, (r["name"], kept, kept16)


def test_a_cached_run_with_another_recipe_is_refused(tmp_path):
    cfg = _row_config(plan.ROWS[1], 0, tmp_path)
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(dict(cfg.to_dict(), batch_size=128, progress=True)))
    (out / "results.json").write_text(json.dumps({"test": {}}))
    with pytest.raises(SystemExit, match="batch_size"):
        fr.check_cache(cfg)


def test_a_dense_run_ignores_the_pruning_keys_of_its_cache(tmp_path):
    cfg = _row_config(plan.ROWS[0], 0, tmp_path)
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
    v, d, _ = plan.verdict(a, b, matches=matches)
    assert v == expected
    assert d == pytest.approx(sum(a) / len(a) - sum(b) / len(b))


def test_no_row_runs_on_the_seed_that_chose_the_recipe():
    tuning = plan.read_tuning()
    assert tuning["seed"] not in plan.SEEDS and tuning["seed"] not in plan.ABLATION_SEEDS
    assert set(tuning["chosen"]) == set(plan.SIDES)


def test_the_init_ablations_change_the_function():
    """signed Kaiming constants are the +-1 function here (tests/layers/test_layers.py); the rows use what changes it."""
    inits = {r["set"]["model_kwargs"].get("init") for r in plan.ROWS if "model_kwargs" in r.get("set", {})}
    assert "signed_kaiming_constant" not in inits and {"uniform_pm1", "kaiming_normal"} <= inits


def _fake_run(cfg: TrainConfig, pgd: float, heldout: float | None = None, collapses: int = 0,
              machine: dict | None = None) -> None:
    out = Path(cfg.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))
    dense = cfg.model.endswith("_dense")
    (out / "results.json").write_text(json.dumps({
        "test": {"n": 1000, "clean_acc": pgd + 0.1, "pgd20_acc": pgd}, "keep_ratio": 1.0 if dense else cfg.keep_ratio,
        "total_weights": 700000, "kept_weights": int(700000 * cfg.keep_ratio), "storage": {"fp32_bytes": 2_800_000},
        "best_epoch": 4, "machine": machine or {"torch_threads": 1, "device": "cpu", "cpu_count": 2}}))
    if not dense:
        (out / "compact.json").write_text(json.dumps({"file_bytes": 23_000}))  # measured once by read_run
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, ["epoch", "time/epoch_s", "val/robust_acc", "guard/collapses"])
        w.writeheader()
        for e in range(2):
            w.writerow({"epoch": e, "time/epoch_s": 60, "val/robust_acc": pgd, "guard/collapses": collapses if e == 1 else 0})
    if heldout is not None:
        (out / "heldout.json").write_text(json.dumps({"clean_acc": 0.8, "pgd20_acc": heldout}))


def _write_tuning(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tuning.json").write_text(json.dumps(dict(plan.read_tuning(), chosen={"dense": TUNED, "robin": TUNED})))


def _records(tmp_path: Path, pgd: dict[str, float], gpu_rows: tuple[str, ...] = ()) -> Path:
    """Fake finished runs of the rows in ``pgd`` (each seed +1 point), written as result files."""
    args, folder = _args(tmp_path / "cache"), tmp_path / "results"
    _write_tuning(folder)
    runs = {}
    for row in plan.ROWS:
        if row["name"] not in pgd:
            continue
        for seed in plan.seeds_of(row, args.seeds, args.ablation_seeds):
            cfg = _row_config(row, seed, tmp_path / "cache")
            _fake_run(cfg, pgd[row["name"]] + 0.01 * (seed - 3), collapses=3 if row["name"] == "k0.1" else 0)
            runs.setdefault(row["name"], {})[seed] = fr.read_run(cfg)
    assert fr.write_records(runs, folder) == sum(len(v) for v in runs.values())
    assert fr.write_records(runs, folder) == 0  # unchanged files are left alone
    for name in gpu_rows:  # the same recipe and seed, trained on a GPU
        cfg = _row_config(next(r for r in plan.ROWS if r["name"] == name), 3, tmp_path / "gpu")
        _fake_run(cfg, 0.10, machine={"torch_threads": 2, "device": "cuda:0", "accelerator": "NVIDIA H200"})
        fr.write_records({name: {3: fr.read_run(cfg)}}, folder)
    return folder


def test_a_run_becomes_one_result_file_named_by_row_seed_and_device(tmp_path):
    folder = _records(tmp_path, {"k0.05": 0.70}, gpu_rows=("k0.05",))
    assert sorted(p.name for p in folder.glob("k0.05-*")) == ["k0.05-s3.cpu.json", "k0.05-s3.cuda.json", "k0.05-s4.cpu.json",
                                                              "k0.05-s5.cpu.json"]
    rec = json.loads((folder / "k0.05-s3.cpu.json").read_text())
    assert rec["test"]["pgd20_acc"] == 0.70 and rec["where"] == "CPU (2 cores)" and rec["compact_bytes"] == 23_000
    assert rec["config"]["seed"] == 3 and rec["config"]["attack_mode"] == "train"
    assert [e["val/robust_acc"] for e in rec["epochs"]] == [0.70, 0.70] and rec["train_minutes"] == 2.0


def test_the_page_is_rendered_from_result_files_on_one_device(tmp_path):
    pgd = {"dense": 0.715, "k0.05": 0.70, "k0.01": 0.60, "k0.1": 0.40, "k0.05-p1": 0.60}
    folder = _records(tmp_path, pgd, gpu_rows=("k0.05-p1",))
    page = fp.render_page(folder, seeds=[3, 4, 5], ablation_seeds=[3, 4], widths=[32], aa_n=500, proxy=None)
    assert "**Status: 13 of 31 runs finished.**" in page
    assert "72.5 ± 1.0" in page and "s3 71.5, s4 72.5, s5 73.5" in page              # the dense row, 3 seeds
    assert "k0.01 61.0 vs dense 72.5 (d = -11.5 points, s = 1.0; seeds 3 and 3): **contradicts**" in page
    assert "k0.05 71.0 vs dense 72.5 (d = -1.5 points, s = 1.0; seeds 3 and 3): **agrees**" in page
    # the GPU run of k0.05-p1 seed 3 is not in its row (which has only its CPU seeds) but in the device section
    assert "k0.05 71.0 vs k0.05-p1 60.5 (d = +10.5 points, s = 1.0; seeds 3 and 2): **agrees**" in page
    assert "| k0.05-p1-s3 | 60.0 | CUDA (NVIDIA H200) | 10.0 | -50.0 |" in page
    assert "every row below trained on CPU (2 cores)" in page and "CUDA" not in page.split("## 2.")[1].split("## 3.")[0]
    assert "| k0.1-s3 | 40.0, 40.0 | 40.0 |" in page                                  # the keep 0.1 study
    assert "Not finished yet: " in page and "k0.05-uniformpm1-s3" in page.split("Not finished yet: ")[1]
    assert "- dense-s3: not run yet." in page                                          # AutoAttack, every seed
    assert "23 KB (compact file)" in page and "w48" not in page
    assert "53.0" not in page and "71.0%" not in page  # nothing quoted from the earlier page


def test_readme_figures_are_rendered_and_a_block_without_its_file_is_refused(tmp_path):
    folder = _records(tmp_path, {"dense": 0.715, "k0.05": 0.70})
    main_job, size = tmp_path / "main_job.json", tmp_path / "compact_size.json"
    main_job.write_text(json.dumps({"clean_acc": 0.841, "pgd20_acc": 0.706, "cpu": "AMD EPYC", "train_seconds": 247.2,
                                    "end_to_end_seconds": 361.4}))
    blocks = fp.readme_blocks(folder, main_job, size)
    text = "a (<!-- figures:main-job -->old<!-- /figures:main-job -->) b <!-- figures:results -->x<!-- /figures:results -->"
    out = fp.render_readme(text, blocks)
    assert "<!-- figures:main-job -->84.1% / 70.6% on AMD EPYC: 247 s of training and 6 min 1 s end to end" in out
    assert "tuned dense twin 72.5 ± 1.0% (3 seed(s))" in out and "keep 0.01: not run yet" in out
    assert "matches dense full-precision AT (k0.05 vs dense): agrees" in out
    with pytest.raises(FileNotFoundError, match="compact-size"):
        fp.render_readme(text + "<!-- figures:compact-size -->266 KB<!-- /figures:compact-size -->", blocks)


def test_the_committed_page_and_readme_are_what_the_script_renders():
    """docs/results.md and the README's figure blocks are generated: edit the result files, not the text."""
    assert fp.PAGE.read_text() == fp.render_page() + "\n", "run .venv/bin/python benchmarks/fmnist_page.py"
    assert fp.README.read_text() == fp.render_readme(fp.README.read_text(), fp.readme_blocks())


@pytest.mark.parametrize("flags", [["--aa-only", "--no-aa"], ["--jobs", "0"]])
def test_contradictory_options_are_refused(flags, tmp_path):
    with pytest.raises(SystemExit) as e:
        fr.main(flags + ["--cache", str(tmp_path)])
    assert e.value.code == 2


@pytest.mark.slow
def test_quick_mode_runs_the_whole_pipeline(tmp_path, monkeypatch):
    """--quick (tiny budget, one seed, no AutoAttack): tuning, rows, result files and the page, end to end
    on the real data, writing only into its own cache folder."""
    monkeypatch.chdir(tmp_path)
    assert fr.main(["--quick", "--seeds", "3", "--ablation-seeds", "3", "--widths", "--no-aa", "--rows", "dense", "k0.1"]) == 0
    cache = tmp_path / "runs" / "fmnist_results_quick"
    page = (cache / "results_quick.md").read_text()
    assert "QUICK SMOKE RUN" in page and "**Status: 2 of " in page
    assert "| k0.1-s3 |" in page  # the keep 0.1 study, from the real metrics.csv
    assert sorted(p.name for p in (cache / "results").iterdir()) == ["dense-s3.cpu.json", "k0.1-s3.cpu.json", "tuning.json"]
    assert not (tmp_path / "docs").exists()
    assert set(json.loads((cache / "results" / "tuning.json").read_text())["chosen"]) == {"dense", "robin"}
