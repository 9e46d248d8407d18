"""Tests of the adaptive per-layer keep ratios in ``robin_plugin.pruning``."""
from __future__ import annotations

import math

import pytest
import timm
import torch
import torch.nn as nn
from hypothesis import assume, given
from hypothesis import strategies as st

import robin_plugin
from robin_plugin import ConfigError, MaskedLinear, adaptive_keep_ratios, masked_layers, set_keep_ratio
from robin_plugin.layers.selection import kept_count

sizes_st = st.lists(st.integers(1, 5_000_000), min_size=1, max_size=40)
keep_st = st.floats(1e-4, 1.0)
p_st = st.floats(0.0, 1.0)


def _weighted(ratios: list[float], sizes: list[int]) -> float:
    return math.fsum(k * n for k, n in zip(ratios, sizes))


# --- adaptive_keep_ratios: properties --------------------------------------------------------
@given(sizes_st, keep_st, p_st)
def test_every_ratio_in_0_1_and_weighted_sum_hits_target(sizes: list[int], keep_ratio: float, p: float) -> None:
    ratios = adaptive_keep_ratios(sizes, keep_ratio, p)
    assert len(ratios) == len(sizes)
    assert all(0.0 < k <= 1.0 for k in ratios)
    assert math.isclose(_weighted(ratios, sizes), keep_ratio * sum(sizes), rel_tol=1e-9)


@given(sizes_st, keep_st)
def test_p_one_is_uniform(sizes: list[int], keep_ratio: float) -> None:
    ratios = adaptive_keep_ratios(sizes, keep_ratio, 1.0)
    assert all(math.isclose(k, keep_ratio, rel_tol=1e-12) for k in ratios)


@given(sizes_st, keep_st)
def test_p_zero_gives_unclipped_layers_equal_counts(sizes: list[int], keep_ratio: float) -> None:
    ratios = adaptive_keep_ratios(sizes, keep_ratio, 0.0)
    counts = [k * n for k, n in zip(ratios, sizes) if k < 1.0]
    assume(counts)  # keep_ratio near 1 can clip every layer
    assert all(math.isclose(c, counts[0], rel_tol=1e-9) for c in counts)
    # a layer that keeps everything is no larger than that common count
    assert all(n <= counts[0] * (1 + 1e-9) for k, n in zip(ratios, sizes) if k == 1.0)


@given(sizes_st, keep_st, st.floats(0.0, 1.0, exclude_max=True))
def test_larger_layers_never_keep_a_larger_fraction(sizes: list[int], keep_ratio: float, p: float) -> None:
    ratios = adaptive_keep_ratios(sizes, keep_ratio, p)
    pairs = sorted(zip(sizes, ratios))
    for (n_small, k_small), (n_big, k_big) in zip(pairs, pairs[1:]):
        assert k_big <= k_small * (1 + 1e-12), (n_small, k_small, n_big, k_big)


@given(sizes_st, keep_st, p_st)
def test_ratio_follows_power_law_for_unclipped_layers(sizes: list[int], keep_ratio: float, p: float) -> None:
    """k_i = c * n_i**(p - 1) with one c for every layer that is not clipped at 1."""
    ratios = adaptive_keep_ratios(sizes, keep_ratio, p)
    cs = [k / n ** (p - 1.0) for k, n in zip(ratios, sizes) if k < 1.0]
    assert all(math.isclose(c, cs[0], rel_tol=1e-9) for c in cs)
    # a clipped layer would have been given at least 1 by that c (clipping only removes excess)
    if cs:
        assert all(cs[0] * n ** (p - 1.0) >= 1.0 - 1e-9 for k, n in zip(ratios, sizes) if k == 1.0)


@given(sizes_st, p_st)
def test_keep_ratio_one_keeps_everything(sizes: list[int], p: float) -> None:
    ratios = adaptive_keep_ratios(sizes, 1.0, p)
    assert all(math.isclose(k, 1.0, rel_tol=1e-12) for k in ratios)
    assert [kept_count(n, k) for n, k in zip(sizes, ratios)] == sizes


def test_keep_ratio_one_gives_exactly_one() -> None:
    assert adaptive_keep_ratios([103], 1.0, 0.0) == [1.0]


def test_clipping_small_layers() -> None:
    sizes = [10, 1_000_000]
    ratios = adaptive_keep_ratios(sizes, 0.5, 0.0)
    assert ratios[0] == 1.0  # p = 0 would give the small layer 500,005 weights: it keeps all 10
    assert ratios[1] == pytest.approx((0.5 * 1_000_010 - 10) / 1_000_000, rel=1e-12)


def test_known_values() -> None:
    # two layers n = (100, 10000), p = 0.5: k_i = c / sqrt(n_i), c * (10 + 100) = 0.1 * 10100
    ratios = adaptive_keep_ratios([100, 10_000], 0.1, 0.5)
    c = 0.1 * 10_100 / 110
    assert ratios == pytest.approx([c / 10, c / 100], rel=1e-12)


def test_empty_and_order_preserved() -> None:
    assert adaptive_keep_ratios([], 0.1, 0.1) == []
    a = adaptive_keep_ratios([5000, 30, 400], 0.1, 0.1)
    b = adaptive_keep_ratios([30, 400, 5000], 0.1, 0.1)
    assert a == pytest.approx([b[2], b[0], b[1]], rel=1e-12)


# --- bad input -------------------------------------------------------------------------------
@pytest.mark.parametrize("keep_ratio", [0.0, -0.1, 1.0001, float("nan"), float("inf"), True, None, "0.1"])
def test_bad_keep_ratio(keep_ratio) -> None:
    with pytest.raises(ConfigError, match=r"keep_ratio is the fraction of weights KEPT and must be in \(0, 1\]"):
        adaptive_keep_ratios([10, 20], keep_ratio, 0.1)


@pytest.mark.parametrize("p", [-0.01, 1.01, float("nan"), False, "0.1"])
def test_bad_p(p) -> None:
    with pytest.raises(ConfigError, match=r"p must be in \[0, 1\]") as info:
        adaptive_keep_ratios([10, 20], 0.1, p)
    assert repr(p) in str(info.value)


@pytest.mark.parametrize("sizes", [[0], [10, -1]])
def test_bad_layer_sizes(sizes: list[int]) -> None:
    with pytest.raises(ConfigError, match="every layer size must be >= 1"):
        adaptive_keep_ratios(sizes, 0.1, 0.1)


# --- set_keep_ratio on models ----------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny() -> nn.Module:
    return timm.create_model("robin_resnet18", in_chans=1, width=4, num_classes=10, keep_ratio=0.1)


def test_set_keep_ratio_applies_adaptive_ratios_in_layer_order(tiny: nn.Module) -> None:
    layers = masked_layers(tiny)
    assert [n for n, _ in layers][0] == "conv1" and [n for n, _ in layers][-1] == "head.fc"
    ratios = set_keep_ratio(tiny, 0.2, 0.3)
    assert ratios == adaptive_keep_ratios([m.weight.numel() for _, m in layers], 0.2, 0.3)
    assert [m.keep_ratio for _, m in layers] == ratios


@given(keep_ratio=st.floats(1e-3, 1.0), p=p_st)
def test_model_masks_keep_their_counts_and_total_matches(tiny: nn.Module, keep_ratio: float, p: float) -> None:
    set_keep_ratio(tiny, keep_ratio, p)
    layers = masked_layers(tiny)
    total = sum(m.weight.numel() for _, m in layers)
    kept = 0
    for _, m in layers:
        mask = m.mask()
        assert set(mask.unique().tolist()) <= {0.0, 1.0}
        assert int(mask.sum()) == m.kept == kept_count(m.weight.numel(), m.keep_ratio)
        kept += int(mask.sum())
    # per layer: rounding moves the count by <= 0.5 and the "at least one" rule by < 1
    assert abs(kept - keep_ratio * total) <= len(layers)


def test_set_keep_ratio_needs_masked_layers() -> None:
    with pytest.raises(ConfigError, match="has no masked layers; use robin_plugin.robinify first"):
        set_keep_ratio(nn.Sequential(nn.Linear(3, 3)), 0.1, 0.1)


def test_set_keep_ratio_rejects_bad_values_without_changing_the_model() -> None:
    model = nn.Sequential(MaskedLinear(10, 10, keep_ratio=0.5), MaskedLinear(10, 2, keep_ratio=0.5))
    with pytest.raises(ConfigError):
        set_keep_ratio(model, 1.5, 0.1)
    with pytest.raises(ConfigError):
        set_keep_ratio(model, 0.1, -1)
    assert [m.keep_ratio for _, m in masked_layers(model)] == [0.5, 0.5]


def test_set_keep_ratio_is_exported_at_top_level() -> None:
    assert robin_plugin.set_keep_ratio is set_keep_ratio
    assert robin_plugin.adaptive_keep_ratios is adaptive_keep_ratios


@given(sizes=st.lists(st.integers(1, 1000), min_size=2, max_size=8), keep_ratio=keep_st, p=p_st)
def test_kept_counts_of_adaptive_ratios_track_the_target(sizes: list[int], keep_ratio: float, p: float) -> None:
    ratios = adaptive_keep_ratios(sizes, keep_ratio, p)
    kept = sum(kept_count(n, k) for n, k in zip(sizes, ratios))
    assert abs(kept - keep_ratio * sum(sizes)) <= len(sizes)


def test_set_keep_ratio_moves_no_weights_or_scores() -> None:
    model = nn.Sequential(MaskedLinear(10, 10), MaskedLinear(10, 2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    set_keep_ratio(model, 0.3, 0.5)
    # only the keep ratios (state since 0.2) change
    after = model.state_dict()
    assert all(torch.equal(before[k], v) for k, v in after.items() if not k.endswith(("keep_ratio", "keep_ratio_bits")))
    assert [after[f"{i}.keep_ratio"].item() for i in range(2)] == [m.keep_ratio for m in model]
