"""Tests of the pure selection functions in ``robin_plugin.layers.selection``."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from robin_plugin.errors import ConfigError
from robin_plugin.layers.selection import kept_count, straight_through, topk_keep, topk_mask, topk_mask_by_sort


# --- strategies ------------------------------------------------------------------------------
@st.composite
def scores_and_count(draw, tie_heavy: bool | None = None):
    """(|scores| tensor of 1 to 4 dims, count in [1, numel]); optionally drawn from few values."""
    shape = tuple(draw(st.lists(st.integers(1, 6), min_size=1, max_size=4)))
    n = math.prod(shape)
    if tie_heavy is None:
        tie_heavy = draw(st.booleans())
    if tie_heavy:  # a tiny value set forces many ties, the case a naive threshold gets wrong
        values = st.sampled_from([0.0, 0.25, 0.5, 1.0])
    else:
        values = st.floats(0.0, 10.0, allow_nan=False, allow_infinity=False, width=32)
    flat = draw(st.lists(values, min_size=n, max_size=n))
    count = draw(st.integers(1, n))
    return torch.tensor(flat, dtype=torch.float32).reshape(shape), count


# --- kept_count ------------------------------------------------------------------------------
@given(n=st.integers(1, 10**8), k=st.floats(1e-9, 1.0))
def test_kept_count_is_round_k_n_at_least_one(n: int, k: float) -> None:
    c = kept_count(n, k)
    assert 1 <= c <= n
    assert c == max(1, round(k * n))


def test_kept_count_examples() -> None:
    assert kept_count(100, 0.01) == 1
    assert kept_count(100, 0.001) == 1  # never prune a layer away entirely
    assert kept_count(1000, 0.0125) == 12  # round half to even, like Python's round
    assert kept_count(7, 1.0) == 7


@pytest.mark.parametrize("n, k", [(0, 0.5), (-3, 0.5), (10, 0.0), (10, -0.1), (10, 1.5), (10, float("nan"))])
def test_kept_count_rejects_bad_input(n: int, k: float) -> None:
    with pytest.raises(ConfigError):
        kept_count(n, k)


# --- topk_mask -------------------------------------------------------------------------------
@given(scores_and_count())
def test_topk_mask_is_binary_and_keeps_exactly_count(sc: tuple[torch.Tensor, int]) -> None:
    s, count = sc
    mask = topk_mask(s, count)
    assert mask.shape == s.shape and mask.dtype == s.dtype
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert int(mask.sum()) == count
    # everything kept is at least as large as everything dropped
    if count < s.numel():
        assert s[mask.bool()].min() >= s[~mask.bool()].max()


@given(scores_and_count())
def test_topk_mask_equals_full_sort(sc: tuple[torch.Tensor, int]) -> None:
    s, count = sc
    assert torch.equal(topk_mask(s, count), topk_mask_by_sort(s, count))


@given(scores_and_count(tie_heavy=True))
def test_topk_mask_equals_full_sort_with_many_ties(sc: tuple[torch.Tensor, int]) -> None:
    s, count = sc
    assert torch.equal(topk_mask(s, count), topk_mask_by_sort(s, count))


@given(scores_and_count(), st.one_of(st.none(), st.floats(-1.0, 12.0, allow_nan=False)))
def test_a_hint_never_changes_the_selection(sc: tuple[torch.Tensor, int], hint: float | None) -> None:
    """Any hint (below, at, above the threshold; far off) gives the full sort's mask and threshold."""
    s, count = sc
    keep, threshold = topk_keep(s, count, hint=hint)
    assert keep.dtype == torch.bool and keep.shape == (s.numel(),)
    assert torch.equal(keep.to(s.dtype).reshape(s.shape), topk_mask_by_sort(s, count))
    assert threshold == s.reshape(-1).sort(descending=True).values[count - 1]


def test_a_hint_at_the_threshold_searches_only_the_candidates(monkeypatch) -> None:
    s = torch.arange(1000, dtype=torch.float32)
    seen = []
    real = torch.topk
    monkeypatch.setattr(torch, "topk", lambda t, *a, **k: seen.append(t.numel()) or real(t, *a, **k))
    keep, threshold = topk_keep(s, 10, hint=985.0)
    assert seen == [15] and float(threshold) == 990.0 and keep[990:].all() and not keep[:990].any()
    seen.clear()
    topk_keep(s, 10, hint=995.0)  # too few candidates: all scores are searched
    assert seen == [1000]


def test_ties_broken_by_lower_index() -> None:
    s = torch.tensor([1.0, 2.0, 1.0, 1.0, 0.5])
    assert topk_mask(s, 2).tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]
    assert topk_mask(s, 3).tolist() == [1.0, 1.0, 1.0, 0.0, 0.0]
    assert torch.equal(topk_mask(torch.zeros(2, 3), 4), torch.tensor([[1.0, 1, 1], [1, 0, 0]]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_topk_mask_other_dtypes(dtype: torch.dtype) -> None:
    s = torch.rand(50, generator=torch.Generator().manual_seed(0)).to(dtype)
    for count in (1, 7, 25, 50):
        mask = topk_mask(s, count)
        assert mask.dtype == dtype
        assert torch.equal(mask, topk_mask_by_sort(s, count))


@given(scores_and_count(), st.data())
def test_raising_a_kept_score_keeps_it(sc: tuple[torch.Tensor, int], data: st.DataObject) -> None:
    s, count = sc
    mask = topk_mask(s, count).reshape(-1)
    i = data.draw(st.sampled_from(torch.nonzero(mask).reshape(-1).tolist()))
    raised = s.clone().reshape(-1)
    raised[i] += data.draw(st.floats(0.0, 5.0))
    assert topk_mask(raised, count)[i] == 1


@given(scores_and_count(), st.data())
def test_lowering_an_unkept_score_keeps_it_out(sc: tuple[torch.Tensor, int], data: st.DataObject) -> None:
    s, count = sc
    mask = topk_mask(s, count).reshape(-1)
    dropped = torch.nonzero(mask == 0).reshape(-1).tolist()
    if not dropped:
        return  # count == numel: nothing is out
    i = data.draw(st.sampled_from(dropped))
    lowered = s.clone().reshape(-1)
    lowered[i] = lowered[i] * data.draw(st.floats(0.0, 1.0))
    assert topk_mask(lowered, count)[i] == 0


@pytest.mark.parametrize("count", [0, -1, 11])
def test_topk_mask_rejects_bad_count(count: int) -> None:
    with pytest.raises(ConfigError, match=r"count must be in \[1, 10\]"):
        topk_mask(torch.rand(10), count)


def test_topk_mask_does_not_track_gradients() -> None:
    s = torch.rand(20, requires_grad=True)
    assert not topk_mask(s, 5).requires_grad


# --- straight_through ------------------------------------------------------------------------
@given(
    st.lists(st.floats(-1.0, 1.0, allow_nan=False, width=32).filter(lambda v: v != 0.0), min_size=1, max_size=40),
    st.data(),
)
def test_straight_through_value_and_gradient(values: list[float], data: st.DataObject) -> None:
    scores = torch.tensor(values, requires_grad=True)
    n = scores.numel()
    mask = topk_mask(scores.detach().abs(), data.draw(st.integers(1, n)))
    upstream = torch.tensor(data.draw(st.lists(st.floats(-3, 3, width=32), min_size=n, max_size=n)))
    out = straight_through(scores, mask)
    assert torch.equal(out, mask)
    out.backward(upstream)
    # d|s|/ds = sign(s): the gradient reaches every score (kept or not), with the sign applied
    assert torch.equal(scores.grad, upstream * torch.sign(scores.detach()))


def test_gradient_step_moves_abs_score_the_right_way_for_negative_scores() -> None:
    """A descent step on ``scores`` must grow |s| where growing |s| lowers the loss, whatever s's sign.

    Dropping the sign (passing ``grad`` straight to ``s``) would shrink |s| for every negative score
    that should grow: the network would then stay at chance.
    """
    scores = torch.tensor([0.3, -0.3, 0.3, -0.3], requires_grad=True)
    mask = topk_mask(scores.detach().abs(), 2)
    upstream = torch.tensor([-1.0, -1.0, 1.0, 1.0])  # L = upstream . mask: first two want to be kept
    straight_through(scores, mask).backward(upstream)
    with torch.no_grad():
        new = scores - 0.1 * scores.grad
    change = new.abs() - scores.detach().abs()
    assert (change[:2] > 0).all()  # |s| grows for both signs where a larger |s| lowers L
    assert (change[2:] < 0).all()  # and shrinks where it raises L
