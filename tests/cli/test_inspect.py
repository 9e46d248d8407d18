"""``robin inspect`` tables and plots, and the ``robin export`` / ``robin inspect`` commands."""
from __future__ import annotations

import argparse
import struct
import zlib
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

import robin_plugin
from robin_plugin.cli.export import add_export_parser
from robin_plugin.cli.inspect import add_inspect_parser
from robin_plugin.errors import RobinError
from robin_plugin.export import load_compact
from robin_plugin.viz import (
    MetricsFormatError,
    format_table,
    inspect_model,
    layer_table,
    read_metrics,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _assert_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC
    length, kind = struct.unpack(">I4s", data[8:16])
    assert kind == b"IHDR" and length == 13
    width, height = struct.unpack(">II", data[16:24])
    assert width > 50 and height > 50
    assert zlib.crc32(data[12:29]) == struct.unpack(">I", data[29:33])[0]
    assert data[-8:-4] == b"IEND"


@pytest.fixture()
def model():
    m = timm.create_model("robin_resnet18", width=4, keep_ratio=0.02, p=0.1)
    with torch.no_grad():
        for _, layer in robin_plugin.masked_layers(m):
            layer.scores.uniform_(-1, 1)
    return m.eval()


@pytest.fixture()
def metrics_csv(tmp_path):
    path = tmp_path / "metrics.csv"
    lines = ["epoch,train/loss,train/clean_acc,train/robust_acc,val/clean_acc,val/robust_acc,prune/keep_ratio,lr,note"]
    for e in range(5):
        lines.append(f"{e},{2.3 - 0.3 * e},{0.2 + 0.1 * e},{0.1 + 0.05 * e},{0.2 + 0.1 * e},,0.01,{0.1 * 0.9**e},x")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_layer_table(model):
    rows = layer_table(model)
    layers = robin_plugin.masked_layers(model)
    assert [r["name"] for r in rows] == [n for n, _ in layers]
    for r, (_, m) in zip(rows, layers):
        assert r["kept"] == m.kept and r["numel"] == m.weight.numel()
        assert 0 <= r["pruned_channels"] <= r["channels"] == m.weight.shape[0]
        assert r["mask_bits"] <= 8 * ((r["numel"] + 7) // 8)
    text = format_table(rows)
    assert "total" in text and rows[0]["name"] in text


def test_inspect_draws_valid_pngs(tmp_path, model, metrics_csv):
    paths = inspect_model(model, tmp_path / "plots", metrics=metrics_csv)
    assert sorted(p.name for p in paths) == ["channel_masks.png", "keep_ratios.png", "kernel_masks.png", "training_curves.png"]
    for p in paths:
        _assert_png(p)


def test_training_curves_plot_present_columns_only(tmp_path, metrics_csv):
    series = read_metrics(metrics_csv)
    assert "val/robust_acc" not in series and "note" not in series  # empty / non-numeric
    assert series["lr"][0] == (0.0, 0.1)
    minimal = tmp_path / "m.csv"
    minimal.write_text("epoch,val/clean_acc\n1,0.5\n2,0.6\n")
    _assert_png(inspect_model(None, tmp_path / "o", metrics=minimal)[0])


@pytest.mark.parametrize("content", ["", "loss\n1\n", "epoch,loss\n1,abc\n"])
def test_bad_metric_logs(tmp_path, content):
    path = tmp_path / "metrics.csv"
    path.write_text(content)
    with pytest.raises(MetricsFormatError):
        read_metrics(path)
    with pytest.raises(MetricsFormatError):
        read_metrics(tmp_path / "missing.csv")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robin")
    sub = parser.add_subparsers(dest="command", required=True)
    add_export_parser(sub)
    add_inspect_parser(sub)
    return parser


def _run(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    return args.func(args)


def test_cli_export_and_inspect(tmp_path, model, metrics_csv, capsys):
    ckpt = tmp_path / "model.safetensors"
    safetensors.torch.save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt)
    src = ["--model", "robin_resnet18", "--model-kwargs", '{"width": 4, "keep_ratio": 0.02, "p": 0.1}', "--checkpoint", str(ckpt)]
    compact = tmp_path / "m.robin.safetensors"
    assert _run(["export", *src, "--out", str(compact)]) == 0
    assert "information bound" in capsys.readouterr().out
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(load_compact(compact)(x), model(x))
    with pytest.raises(RobinError):  # never overwrites unless asked
        _run(["export", *src, "--out", str(compact)])
    assert _run(["export", "--compact", str(compact), "--format", "dense-shrunk", "--out", str(tmp_path / "s.safetensors")]) == 0
    assert _run(["inspect", "--compact", str(compact), "--metrics", str(metrics_csv), "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    assert "total" in out and "compact file" in out
    for name in ("keep_ratios.png", "kernel_masks.png", "channel_masks.png", "training_curves.png"):
        _assert_png(tmp_path / "plots" / name)
    with pytest.raises(RobinError, match="--checkpoint"):
        _run(["export", "--model", "robin_resnet18", "--out", str(tmp_path / "x.safetensors")])
    with pytest.raises(RobinError, match="JSON"):
        _run(["export", "--model", "robin_resnet18", "--model-kwargs", "{width: 4}", "--checkpoint", str(ckpt),
              "--out", str(tmp_path / "x.safetensors")])
