"""benchmarks/fmnist_results.py: the table's recipe is pinned and a stale cache is refused."""
from __future__ import annotations

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


def _args(tmp_path, quick=False):
    return types.SimpleNamespace(cache=str(tmp_path), quick=quick)


def test_every_row_is_a_valid_config_that_changes_only_what_it_says(tmp_path):
    base = fr.row_config({"name": "base"}, 0, _args(tmp_path)).to_dict()
    for row in fr.ROWS:
        cfg = fr.row_config(row, 0, _args(tmp_path))
        assert isinstance(cfg, TrainConfig)
        changed = {k for k, v in cfg.to_dict().items() if base[k] != v} - {"out_dir"}
        said = set(row.get("set", {}))
        assert changed == said, (row["name"], changed, said)
        assert cfg.eps == 0.1 and cfg.test_n == 1000 and cfg.test_pgd_steps == 20


def test_the_recipe_does_not_follow_the_presets(tmp_path, monkeypatch):
    before = fr.row_config(fr.ROWS[1], 0, _args(tmp_path))
    monkeypatch.setitem(PRESETS, "fmnist-fast", dict(PRESETS["fmnist-fast"], batch_size=7, epochs=99))
    assert fr.row_config(fr.ROWS[1], 0, _args(tmp_path)) == before


def test_a_cached_run_with_another_recipe_is_refused(tmp_path):
    row = fr.ROWS[1]
    cfg = fr.row_config(row, 0, _args(tmp_path))
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    stale = dict(cfg.to_dict(), batch_size=64, progress=not cfg.progress)
    (out / "config.json").write_text(json.dumps(stale))
    (out / "results.json").write_text(json.dumps({"test": {}}))
    with pytest.raises(SystemExit, match="batch_size"):
        fr.run_row(row, 0, _args(tmp_path))


def test_a_dense_row_ignores_the_pruning_keys_of_its_cache(tmp_path, monkeypatch):
    row = fr.ROWS[0]
    cfg = fr.row_config(row, 0, _args(tmp_path))
    assert cfg.model.endswith("_dense")
    out = Path(cfg.out_dir)
    out.mkdir(parents=True)
    (out / "config.json").write_text(json.dumps(dict(cfg.to_dict(), keep_ratio=0.5, p=1.0)))
    (out / "results.json").write_text(json.dumps({"test": {"clean_acc": 0.5}}))
    result = fr.run_row(row, 0, _args(tmp_path))
    assert result["test"] == {"clean_acc": 0.5} and result["compact_bytes"] is None
