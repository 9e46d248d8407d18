"""Files written by robin before the redesign (issue 24) still load and give the same logits.

The files in tests/fixtures/pre_redesign/ were written by make_fixtures.py at the commit named in
its MANIFEST.json and are never rewritten by the tests: a reader that stops understanding them
fails here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import load_file

import robin_plugin  # noqa: F401
from robin_plugin.export import load_deploy
from robin_plugin.loading import load_model

FIXTURES = Path(__file__).parent / "fixtures" / "pre_redesign"
EXPECTED = load_file(str(FIXTURES / "expected.safetensors"))


def _logits(model: torch.nn.Module) -> torch.Tensor:
    with torch.no_grad():
        return model.eval()(EXPECTED["x"])


@pytest.mark.parametrize("name", ["compact.safetensors", "dense.safetensors", "dense_shrunk.safetensors", "hub"])
def test_load_model_reads_the_old_file(name: str) -> None:
    torch.testing.assert_close(_logits(load_model(FIXTURES / name)), EXPECTED["logits"], rtol=1e-4, atol=1e-4)


def test_timm_reads_the_old_hub_folder_and_compact_file() -> None:
    hub = timm.create_model(f"local-dir:{FIXTURES / 'hub'}", pretrained=True)
    torch.testing.assert_close(_logits(hub), EXPECTED["logits"], rtol=1e-4, atol=1e-4)
    manifest = json.loads((FIXTURES / "MANIFEST.json").read_text())
    model = timm.create_model(manifest["model"], pretrained=True,
                              pretrained_cfg_overlay={"file": str(FIXTURES / "compact.safetensors")}, **manifest["kwargs"])
    torch.testing.assert_close(_logits(model), EXPECTED["logits"], rtol=1e-4, atol=1e-4)


def test_load_deploy_reads_the_old_file() -> None:
    torch.testing.assert_close(_logits(load_deploy(FIXTURES / "deploy.safetensors")), EXPECTED["logits"], rtol=1e-3, atol=1e-3)  # folded BN


def test_the_fixtures_are_the_committed_ones() -> None:
    """The manifest names a commit before the redesign; the model and kwargs are what the files hold."""
    manifest = json.loads((FIXTURES / "MANIFEST.json").read_text())
    assert len(manifest["commit"]) == 40
    config = json.loads((FIXTURES / "hub" / "config.json").read_text())
    assert config["architecture"] == manifest["model"]
    assert {k: config["model_args"][k] for k in manifest["kwargs"]} == manifest["kwargs"]
