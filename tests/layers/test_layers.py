"""Tests of the masked binary layers in ``robin_plugin.layers.masked``."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from robin_plugin.errors import ConfigError, UnknownNameError
from robin_plugin.layers.masked import INITS, MaskedConv2d, MaskedLinear, init_scores, init_weight
from robin_plugin.layers.selection import kept_count, topk_mask


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _conv(keep_ratio: float = 0.3, seed: int = 0, **kw) -> MaskedConv2d:
    return MaskedConv2d(3, 5, 3, padding=1, keep_ratio=keep_ratio, generator=_gen(seed), **kw)


# --- construction ----------------------------------------------------------------------------
@pytest.mark.parametrize("make", [_conv, lambda **kw: MaskedLinear(7, 4, keep_ratio=0.3, generator=_gen())])
def test_only_scores_are_parameters_and_weights_are_buffers(make) -> None:
    layer = make()
    assert [name for name, _ in layer.named_parameters()] == ["scores"]
    assert "weight" in dict(layer.named_buffers())
    assert "weight" in layer.state_dict() and "scores" in layer.state_dict()
    assert layer.bias is None
    assert layer.scores.shape == layer.weight.shape
    assert not layer.weight.requires_grad


def test_binary_init_is_exactly_plus_minus_one_and_balanced() -> None:
    w = init_weight(torch.Size((64, 32, 3, 3)), "binary", _gen())
    assert set(w.unique().tolist()) == {-1.0, 1.0}
    assert abs(w.mean().item()) < 0.05  # a fair draw: about as many +1 as -1


def test_signed_kaiming_constant_init() -> None:
    w = init_weight(torch.Size((16, 8, 3, 3)), "signed_kaiming_constant", _gen())
    expected = math.sqrt(2.0) / math.sqrt(8 * 9)
    assert torch.allclose(w.abs(), torch.full_like(w, expected))
    assert (w > 0).any() and (w < 0).any()


def test_kaiming_normal_init_has_the_kaiming_std() -> None:
    w = init_weight(torch.Size((256, 64, 3, 3)), "kaiming_normal", _gen())
    assert w.std().item() == pytest.approx(math.sqrt(2.0 / (64 * 9)), rel=0.03)


def test_uniform_pm1_init_is_uniform_on_minus_one_one() -> None:
    w = init_weight(torch.Size((256, 64, 3, 3)), "uniform_pm1", _gen())
    assert w.min().item() >= -1.0 and w.max().item() <= 1.0
    assert w.std().item() == pytest.approx(1 / math.sqrt(3), rel=0.02)  # U(-1, 1)
    assert len(w.unique()) > 1000  # not binary


def _model_and_grads(init: str, last_bn: bool = True, bn_eps: float | None = None) -> tuple[torch.Tensor, list[torch.Tensor]]:
    import timm

    model = timm.create_model("robin_resnet18", width=4, keep_ratio=0.3, in_chans=1, num_classes=10, seed=5,
                              init=init, last_bn=last_bn).train().double()
    for m in model.modules():
        if bn_eps is not None and isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.eps = bn_eps
    x = torch.rand(8, 1, 28, 28, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    logits = model(x)
    torch.nn.functional.cross_entropy(logits, torch.arange(8) % 10).backward()
    return logits.detach(), [p.grad.clone() for n, p in model.named_parameters() if n.endswith("scores")]


def test_a_per_layer_constant_scale_is_a_no_op_with_non_affine_batchnorm() -> None:
    """Signed Kaiming constants are the +-1 weights times one constant per layer. A non-affine BatchNorm
    follows every masked layer (the last BN follows the classifier): it divides the constant out of the
    outputs, and the straight-through gradient to a score (gradient of the masked weight times the
    weight) carries the constant once in each direction. So logits and score gradients are those of
    the +-1 model, up to BatchNorm's eps (added to a variance the constant scales): the ablation
    tests nothing, and the results page's ablations are ``kaiming_normal`` and ``uniform_pm1``."""
    logits_pm1, grads_pm1 = _model_and_grads("binary", bn_eps=1e-30)
    logits_sc, grads_sc = _model_and_grads("signed_kaiming_constant", bn_eps=1e-30)
    torch.testing.assert_close(logits_sc, logits_pm1, rtol=1e-9, atol=1e-9)
    for g_sc, g_pm1 in zip(grads_sc, grads_pm1, strict=True):
        torch.testing.assert_close(g_sc, g_pm1, rtol=1e-9, atol=1e-12)
    for init in ("kaiming_normal", "uniform_pm1"):  # these change the function
        logits, _ = _model_and_grads(init, bn_eps=1e-30)
        assert (logits - logits_pm1).abs().max() > 0.1
    logits_nobn, _ = _model_and_grads("binary", last_bn=False, bn_eps=1e-30)  # without the last BN the classifier's scale shows
    logits_sc_nobn, _ = _model_and_grads("signed_kaiming_constant", last_bn=False, bn_eps=1e-30)
    assert (logits_sc_nobn - logits_nobn).abs().max() > 0.1


@pytest.mark.parametrize("init", INITS)
def test_every_init_builds_a_working_layer(init: str) -> None:
    layer = _conv(init=init)
    assert layer.init == init
    out = layer(torch.rand(2, 3, 8, 8))
    assert out.shape == (2, 5, 8, 8) and torch.isfinite(out).all()


def test_unknown_init_names_the_value_and_suggests() -> None:
    with pytest.raises(UnknownNameError, match=r"'binar'.*did you mean 'binary'.*valid: binary"):
        _conv(init="binar")
    with pytest.raises(UnknownNameError, match="valid: binary, signed_kaiming_constant, kaiming_normal, uniform_pm1"):
        MaskedLinear(3, 2, init="xavier")


def test_scores_are_uniform_in_minus_a_a() -> None:
    s = init_scores(torch.Size((64, 32, 3, 3)), 0.01, False, _gen())
    assert s.abs().max() <= 0.01
    assert s.abs().max() > 0.0099 and s.min() < 0 < s.max()
    s_fan = init_scores(torch.Size((64, 32, 3, 3)), 0.01, True, _gen())
    assert s_fan.abs().max() <= 0.01 / math.sqrt(32 * 9)
    assert torch.allclose(s_fan * math.sqrt(32 * 9), s)  # same draw, scaled by 1/sqrt(fan_in)


@pytest.mark.parametrize("scale", [0.0, -0.01, float("nan"), float("inf"), "0.01"])
def test_bad_score_scale_is_refused(scale) -> None:
    with pytest.raises(ConfigError, match="score_init_scale must be a finite number > 0"):
        _conv(score_init_scale=scale)


@pytest.mark.parametrize("k", [0.0, -0.5, 1.01, float("nan"), True, "0.5"])
def test_bad_keep_ratio_is_refused(k) -> None:
    with pytest.raises(ConfigError, match=r"keep_ratio is the fraction of weights KEPT and must be in \(0, 1\]"):
        _conv(keep_ratio=k)
    layer = _conv()
    with pytest.raises(ConfigError):
        layer.keep_ratio = k
    assert layer.keep_ratio == 0.3  # unchanged after a refused assignment


def test_same_generator_seed_same_layer_different_seed_different_weights() -> None:
    a, b, c = _conv(seed=1), _conv(seed=1), _conv(seed=2)
    assert torch.equal(a.weight, b.weight) and torch.equal(a.scores, b.scores)
    assert not torch.equal(a.weight, c.weight)
    assert not torch.equal(a.scores, c.scores)


def test_extra_repr_shows_settings() -> None:
    r = repr(_conv(keep_ratio=0.25))
    assert "keep_ratio=0.25" in r and f"kept={kept_count(135, 0.25)}" in r and "init=binary" in r


# --- forward ---------------------------------------------------------------------------------
@given(keep_ratio=st.floats(0.001, 1.0), seed=st.integers(0, 2**16))
def test_conv_forward_uses_weight_times_topk_mask(keep_ratio: float, seed: int) -> None:
    layer = _conv(keep_ratio, seed)
    mask = layer.mask()
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    assert int(mask.sum()) == layer.kept == kept_count(layer.weight.numel(), keep_ratio)
    assert torch.equal(mask, topk_mask(layer.scores.detach().abs(), layer.kept))
    x = torch.rand(2, 3, 6, 6, generator=_gen(seed))
    expected = F.conv2d(x, layer.weight * mask, padding=1)
    assert torch.allclose(layer(x), expected, atol=1e-6)


def test_linear_forward_uses_weight_times_topk_mask() -> None:
    layer = MaskedLinear(10, 4, keep_ratio=0.2, generator=_gen())
    x = torch.randn(3, 10)
    assert torch.allclose(layer(x), x @ (layer.weight * layer.mask()).t(), atol=1e-6)
    assert layer(torch.randn(2, 5, 10)).shape == (2, 5, 4)


@given(keep_ratio=st.floats(0.01, 1.0), seed=st.integers(0, 2**16), data=st.data())
def test_flipping_score_signs_changes_nothing_in_the_forward(keep_ratio: float, seed: int, data) -> None:
    layer = _conv(keep_ratio, seed)
    x = torch.rand(2, 3, 5, 5, generator=_gen(seed))
    before = layer(x)
    flip = torch.tensor(data.draw(st.lists(st.sampled_from([-1.0, 1.0]), min_size=135, max_size=135)))
    with torch.no_grad():
        layer.scores.mul_(flip.reshape(layer.scores.shape))
    assert torch.equal(layer(x), before)


# --- gradient --------------------------------------------------------------------------------
@given(keep_ratio=st.floats(0.01, 1.0), seed=st.integers(0, 2**16), linear=st.booleans())
def test_score_gradient_is_straight_through_times_sign(keep_ratio: float, seed: int, linear: bool) -> None:
    """grad_scores = (dL/dW_eff * weight) * sign(scores), for kept and pruned scores alike."""
    g = _gen(seed)
    if linear:
        layer = MaskedLinear(6, 4, keep_ratio=keep_ratio, generator=g)
        x = torch.randn(5, 6, generator=g)
        fn = lambda w: F.linear(x, w)  # noqa: E731
    else:
        layer = _conv(keep_ratio, seed)
        x = torch.rand(2, 3, 5, 5, generator=g)
        fn = lambda w: F.conv2d(x, w, padding=1)  # noqa: E731
    target = torch.randn(fn(layer.weight).shape, generator=g)
    ((layer(x) - target) ** 2).sum().backward()

    w_eff = (layer.weight * layer.mask()).requires_grad_()
    ((fn(w_eff) - target) ** 2).sum().backward()
    expected = w_eff.grad * layer.weight * torch.sign(layer.scores.detach())
    assert torch.allclose(layer.scores.grad, expected, rtol=1e-5, atol=1e-6)
    assert layer.weight.grad is None


def test_pruned_scores_get_gradient_too() -> None:
    layer = MaskedLinear(20, 5, keep_ratio=0.1, generator=_gen())
    out = layer(torch.randn(8, 20))
    (out * torch.randn(out.shape)).sum().backward()  # dL/dW_eff is dense: every score sees it
    pruned = layer.mask() == 0
    assert (layer.scores.grad[pruned] != 0).all()  # a pruned weight can come back


# --- mask cache ------------------------------------------------------------------------------
def test_mask_is_cached_until_scores_change() -> None:
    layer = _conv()
    m1 = layer.mask()
    layer(torch.rand(1, 3, 4, 4))
    assert layer.mask() is m1  # many forward passes (an attack's) share one selection


def test_optimizer_step_refreshes_the_cached_mask() -> None:
    layer = MaskedLinear(30, 10, keep_ratio=0.2, generator=_gen())
    old = layer.mask().clone()
    opt = torch.optim.SGD(layer.parameters(), lr=1.0, momentum=0.9, weight_decay=5e-4)
    layer(torch.randn(16, 30)).pow(2).sum().backward()
    opt.step()
    new = layer.mask()
    assert torch.equal(new, topk_mask(layer.scores.detach().abs(), layer.kept))
    assert not torch.equal(new, old)  # a large step must change the selection


def test_in_place_score_edits_and_load_state_dict_refresh_the_mask() -> None:
    layer = MaskedLinear(8, 4, keep_ratio=0.25, generator=_gen())
    layer.mask()
    with torch.no_grad():
        layer.scores.copy_(torch.arange(32.0).reshape(4, 8))
    assert torch.equal(layer.mask().reshape(-1), (torch.arange(32) >= 24).float())
    layer.load_state_dict({"weight": layer.weight, "scores": -torch.arange(32.0).flip(0).reshape(4, 8),
                           "keep_ratio": torch.tensor(0.25, dtype=torch.float64)})
    assert torch.equal(layer.mask().reshape(-1), (torch.arange(32) < 8).float())


def test_changing_keep_ratio_refreshes_the_mask() -> None:
    layer = _conv(keep_ratio=0.5)
    assert int(layer.mask().sum()) == kept_count(135, 0.5)
    layer.keep_ratio = 0.1
    assert int(layer.mask().sum()) == kept_count(135, 0.1)


def test_dtype_change_refreshes_the_mask() -> None:
    layer = _conv()
    layer.mask()
    layer.double()
    assert layer.mask().dtype == torch.float64
    assert layer(torch.rand(1, 3, 4, 4, dtype=torch.float64)).dtype == torch.float64


# --- learning --------------------------------------------------------------------------------
def _train_tiny_masked_mlp(drop_sign: bool, steps: int = 40) -> float:
    """Held-out accuracy of a 2-layer masked MLP on a 4-class linear teacher task (chance 0.25)."""
    g = _gen(0)
    d, classes = 16, 4
    teacher = torch.randn(classes, d, generator=g)
    x, x_test = torch.randn(512, d, generator=g), torch.randn(512, d, generator=g)
    y, y_test = (x @ teacher.t()).argmax(1), (x_test @ teacher.t()).argmax(1)
    net = nn.Sequential(
        MaskedLinear(d, 64, keep_ratio=0.5, generator=g), nn.BatchNorm1d(64, affine=False), nn.ReLU(),
        MaskedLinear(64, classes, keep_ratio=0.5, generator=g), nn.BatchNorm1d(classes, affine=False),
    )
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        if drop_sign:  # the prototype's bug: gradient taken w.r.t. |s| but applied to s
            for p in net.parameters():
                p.grad.mul_(torch.sign(p.detach()))
        opt.step()
    net.eval()
    with torch.no_grad():
        return (net(x_test).argmax(1) == y_test).float().mean().item()


def test_tiny_masked_model_learns_and_needs_the_sign() -> None:
    acc = _train_tiny_masked_mlp(drop_sign=False)
    assert acc > 0.7, f"masked MLP should clearly beat chance (0.25), got {acc:.3f}"
    acc_no_sign = _train_tiny_masked_mlp(drop_sign=True)
    assert acc_no_sign < acc - 0.3, f"dropping d|s|/ds should break learning, got {acc_no_sign:.3f}"
