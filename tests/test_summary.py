"""Tests of ``robin_plugin.summary``: per-layer figures, totals and storage (:func:`summarize`)."""
from __future__ import annotations

import math

import pytest
import timm
import torch.nn as nn
from hypothesis import given
from hypothesis import strategies as st

from robin_plugin import ModelSummary, masked_layers, robinify, storage_bytes, summarize
from robin_plugin.summary import LayerSummary, binary_entropy, format_storage


@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return timm.create_model("robin_resnet18", in_chans=1, width=4, num_classes=10, keep_ratio=0.1)


def test_layers_match_the_model(tiny: nn.Module) -> None:
    s = summarize(tiny)
    layers = masked_layers(tiny)
    assert [row.name for row in s.layers] == [n for n, _ in layers]
    for row, (_, m) in zip(s.layers, layers):
        assert row.shape == tuple(m.weight.shape)
        assert row.numel == m.weight.numel()
        assert row.keep_ratio == m.keep_ratio
        assert row.kept == m.kept == int(m.mask().sum())
    assert s.total == sum(m.weight.numel() for _, m in layers)
    assert s.kept == sum(m.kept for _, m in layers)
    assert s.keep_ratio == s.kept / s.total
    assert abs(s.kept - 0.1 * s.total) <= len(layers)


def test_other_bytes_are_the_float_statistics(tiny: nn.Module) -> None:
    """BatchNorm running mean and var plus the input mean and std, at 4 bytes each."""
    norms = [m for m in tiny.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    expected = 4 * (sum(2 * m.num_features for m in norms) + 2 * tiny.in_chans)
    assert summarize(tiny).other_bytes == expected


def _two_linear_layers() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 4, bias=False), nn.BatchNorm1d(4), nn.Linear(4, 2, bias=False))


def test_storage_figures_by_hand() -> None:
    """Two masked layers of 32 and 8 weights keeping 1/8 each (4 and 1), a non-affine BatchNorm of 4."""
    model = robinify(_two_linear_layers(), keep_ratio=0.125, p=1.0)
    s = summarize(model)
    assert [(row.numel, row.kept) for row in s.layers] == [(32, 4), (8, 1)]
    assert s.other_bytes == 32  # running mean and var: 8 floats (num_batches_tracked is an integer)
    # fp32: 40 weights * 4 + 32; signs + mask: 80 bits = 10 bytes + 32; mask: 40 bits = 5 bytes + 32;
    # bound: 40 * H(1/8) = 40 * 0.5436 = 21.7 bits -> 3 bytes + 32
    assert storage_bytes(model) == s.storage() == {
        "fp32_bytes": 192, "sign_mask_bytes": 42, "seeded_mask_bytes": 37, "entropy_bound_bytes": 35}
    # the same layers dense: 40 weights, BatchNorm weight and bias, running mean and var: 56 floats
    assert storage_bytes(_two_linear_layers()) == {"fp32_bytes": 224}
    assert format_storage({"fp32_bytes": 1_234_567, "x": 5}) == "fp32_bytes 1.235 MB, x 0.000 MB"


def _storage_line(text: str) -> str:
    lines = [ln for ln in text.splitlines() if "storage:" in ln]
    assert len(lines) == 1, text
    return lines[0][lines[0].index("storage:"):]


@pytest.mark.parametrize("name", ["robin_resnet18", "robin_resnet18_dense"])
def test_the_three_reports_print_the_same_storage(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    """`robin models`, `robin train`'s results and `robin eval`'s report print one set of figures."""
    from robin_plugin.cli import main
    from robin_plugin.eval.report import format_report, storage_of
    from robin_plugin.cli.train import _print_result
    from robin_plugin.training.run import model_figures

    assert main(["models", "--pattern", name, "--no-layers"]) == 0
    models_line = _storage_line(capsys.readouterr().out)
    kwargs = {} if name.endswith("_dense") else dict(keep_ratio=0.01, p=0.1)  # what `robin models` builds
    model = timm.create_model(name, **kwargs)
    run = dict(model="m", dataset="d", attack="pgd", eps=0.1, epochs=1, train_images=1, train_time_s=0.0,
               machine={"device": "cpu"}, **model_figures(model))
    _print_result(run, "out")
    train_line = _storage_line(capsys.readouterr().out)
    eval_line = _storage_line(format_report({"name": "m", "clean_acc": "50.00", "autoattack_acc": "40.00",
                                             **storage_of(model)}))
    assert models_line == train_line == eval_line == f"storage: {format_storage(storage_bytes(model))}"
    assert run["storage"] == storage_of(model)["storage_bytes"] == storage_bytes(model)


def test_full_size_resnet34_storage() -> None:
    s = summarize(timm.create_model("robin_resnet34"))  # keep_ratio 0.01, p 0.1
    assert s.total == 21_265_088
    # the weights alone: 85.1 MB at fp32, 5.3 MB as signs + mask, 2.7 MB as a mask over seeded weights
    assert s.fp32_bytes - s.other_bytes == 85_060_352
    assert s.sign_mask_bytes - s.other_bytes == 5_316_272
    assert s.seeded_mask_bytes - s.other_bytes == 2_658_136
    assert s.entropy_bound_bytes < s.seeded_mask_bytes / 5  # 1% kept: H(0.01) is 0.08 bits


def test_str_is_a_table(tiny: nn.Module) -> None:
    text = str(summarize(tiny))
    for name, _ in masked_layers(tiny):
        assert name in text
    assert "total" in text and "storage:" in text and "x smaller" in text
    assert f"{summarize(tiny).total:,}" in text


def test_dense_model_has_no_masked_layers() -> None:
    s = summarize(timm.create_model("robin_resnet18_dense", width=4))
    assert s.layers == [] and s.total == 0 and s.kept == 0 and s.keep_ratio == 0.0
    assert s.other_bytes > 0  # its float weights are counted as "other"
    assert s.fp32_bytes == s.other_bytes


def test_str_of_an_empty_summary() -> None:
    assert "total" in str(summarize(nn.Identity()))


# --- the entropy bound -----------------------------------------------------------------------
def test_binary_entropy_values() -> None:
    assert binary_entropy(0.5) == 1.0
    assert binary_entropy(0.0) == binary_entropy(1.0) == 0.0
    assert binary_entropy(0.01) == pytest.approx(0.0807931, abs=1e-6)


@given(st.floats(0.0, 1.0))
def test_binary_entropy_is_symmetric_and_at_most_one_bit(k: float) -> None:
    h = binary_entropy(k)
    assert 0.0 <= h <= 1.0
    assert h == pytest.approx(binary_entropy(1.0 - k), abs=1e-12)


@given(n=st.integers(1, 3000), data=st.data())
def test_entropy_bound_covers_every_mask(n: int, data: st.DataObject) -> None:
    """log2 C(n, m) <= n H(m/n): n*H(k) bits can index every mask with m of n weights kept."""
    m = data.draw(st.integers(0, n))
    row = LayerSummary("x", (n,), n, max(m, 1) / n, m)
    assert math.log2(math.comb(n, m)) <= row.entropy_bits + 1e-9


def test_model_summary_totals_from_rows() -> None:
    rows = [LayerSummary("a", (10, 10), 100, 0.1, 10), LayerSummary("b", (4,), 4, 1.0, 4)]
    s = ModelSummary(rows, other_bytes=8)
    assert (s.total, s.kept) == (104, 14)
    assert s.fp32_bytes == 424 and s.sign_mask_bytes == 34 and s.seeded_mask_bytes == 21
    assert s.entropy_bound_bytes == math.ceil(100 * binary_entropy(0.1) / 8) + 8  # layer b: H(1) = 0

