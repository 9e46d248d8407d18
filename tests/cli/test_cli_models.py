"""Tests of the ``robin models`` command (``robin_plugin.cli``)."""
from __future__ import annotations

import re

import pytest

from robin_plugin.cli import build_parser, main


def test_models_totals_only(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--pattern", "robin_resnet18*", "--no-layers"]) == 0
    out = capsys.readouterr().out
    assert "== robin_resnet18 (keep_ratio=0.01, p=0.1) ==" in out
    assert "weights 11,164,352" in out
    assert "fp32_bytes" in out and "entropy_bound_bytes" in out
    assert "== robin_resnet18_dense (dense full-precision twin) ==" in out
    assert "layer1.0.conv1" not in out  # --no-layers


def test_models_per_layer_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--pattern", "robin_resnet18", "--keep-ratio", "0.05", "--p", "0.5"]) == 0
    out = capsys.readouterr().out
    assert "== robin_resnet18 (keep_ratio=0.05, p=0.5) ==" in out
    assert "layer4.1.conv2" in out and "head.fc" in out and "storage:" in out
    assert "robin_resnet18_dense" not in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--keep-ratio", "1.5"], r"keep_ratio.*\(0, 1\], got 1.5"),
        (["--keep-ratio", "0"], r"keep_ratio.*\(0, 1\], got 0.0"),
        (["--p", "2"], r"p must be in \[0, 1\].*got 2.0"),
        (["--pattern", "nothing_*"], "no registered model matches 'nothing_\\*'"),
    ],
)
def test_bad_settings_exit_2_with_a_clear_message(
    capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    base = ["models", "--pattern", "robin_resnet18", "--no-layers"]
    assert main(base + argv) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("robin models: error: ")
    assert re.search(message, captured.err), captured.err
    assert "Traceback" not in captured.err


def test_unparseable_value_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["models", "--keep-ratio", "abc"])
    assert info.value.code == 2
    assert "invalid float value: 'abc'" in capsys.readouterr().err


def test_parser_defaults() -> None:
    args = build_parser().parse_args(["models"])
    assert (args.pattern, args.keep_ratio, args.p, args.layers) == ("robin_*", 0.01, 0.1, True)
