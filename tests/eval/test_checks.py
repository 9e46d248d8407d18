"""robin_plugin.eval.checks: the gradient-masking checks fire on obfuscated gradients, stay quiet otherwise."""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

from robin_plugin.errors import ConfigError
from robin_plugin.eval import AutoAttackConfig, evaluate
from robin_plugin.eval.checks import (
    CheckResult,
    check_black_box,
    check_deterministic,
    check_large_eps,
    check_more_iterations,
    check_zero_gradients,
    one_point,
)
from robin_plugin.testing import fashion_mnist_subset, tiny_robin_mlp

EPS = 0.1
fractions = st.floats(0.0, 1.0)


class Quantised(nn.Module):
    """Deliberately obfuscated gradients: inputs rounded to 8 bits, so d(output)/d(input) = 0 everywhere."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(torch.round(x * 255) / 255)


@pytest.fixture(scope="module")
def normal_model():
    """A masked binary MLP trained normally (not robust) on 3,000 Fashion-MNIST images."""
    net = tiny_robin_mlp(hidden=64, keep_ratio=0.3)
    x, y = fashion_mnist_subset("train", 3000)
    opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    g = torch.Generator().manual_seed(0)
    for _ in range(150):
        idx = torch.randint(0, len(x), (128,), generator=g)
        loss = F.cross_entropy(net(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    return net.eval()


CFG = AutoAttackConfig(apgd_iter=10, square_queries=300)


def _checks(model, n=60):
    xt, yt = fashion_mnist_subset("test", n)
    r = evaluate(model, xt, yt, EPS, attacks=("apgd-ce", "square"), config=CFG, pgd_steps=10, progress=False)
    return r, {c.name: c for c in r.checks}


def test_checks_quiet_on_a_normal_model(normal_model):
    r, checks = _checks(normal_model)
    assert r.clean_acc > 0.6
    assert set(checks) == {"deterministic", "zero_gradients", "large_eps", "more_iterations", "black_box"}
    assert all(c.passed for c in checks.values()), [c.message for c in checks.values()]
    assert r.checks_passed and r.warnings == []


def test_checks_fire_on_obfuscated_gradients(normal_model):
    r, checks = _checks(Quantised(normal_model))
    assert r.clean_acc > 0.6
    assert not checks["zero_gradients"].passed and checks["zero_gradients"].value == 1.0
    assert not checks["black_box"].passed, checks["black_box"].message  # Square breaks what APGD could not
    assert not checks["large_eps"].passed, checks["large_eps"].message  # PGD is stuck even at eps 0.5
    assert checks["deterministic"].passed
    assert not r.checks_passed
    assert len(r.warnings) >= 3 and all(w.startswith("WARNING") for w in r.warnings)


def test_deterministic_check_fires_on_a_randomised_model(normal_model):
    class Noisy(nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, x):
            return self.m((x + 0.05 * torch.randn_like(x)).clamp(0, 1))

    r, checks = _checks(Noisy(normal_model), n=20)
    assert not checks["deterministic"].passed


# --- the pure functions ---------------------------------------------------------------------
def test_large_eps():
    assert check_large_eps({0.1: 0.5, 0.2: 0.2, 0.5: 0.0}).passed
    c = check_large_eps({0.1: 0.5, 0.5: 0.3})
    assert not c.passed and c.value == 0.3 and "0.5" in c.message and c.message.startswith("WARNING")
    c = check_large_eps({0.1: 0.2, 0.2: 0.4, 0.5: 0.0})
    assert not c.passed and "rose" in c.message
    with pytest.raises(ConfigError):
        check_large_eps({})
    with pytest.raises(ConfigError):
        check_large_eps({0.1: 1.5})


@given(st.lists(fractions, min_size=2, max_size=6))
def test_more_iterations_passes_iff_never_rises(accs):
    labelled = [(f"A{i}", a) for i, a in enumerate(accs)]
    c = check_more_iterations(labelled)
    # the check ignores float noise below 1e-12 (an accuracy step is at least 1/n)
    never_rises = all(b <= a + 1e-12 for i, a in enumerate(accs) for b in accs[i + 1:])
    assert c.passed == never_rises


def test_more_iterations_tolerance():
    assert check_more_iterations([("PGD-10", 0.50), ("PGD-40", 0.52)], tol=one_point(50)).passed
    assert not check_more_iterations([("PGD-10", 0.50), ("PGD-40", 0.56)], tol=one_point(50)).passed
    with pytest.raises(ConfigError):
        check_more_iterations([("PGD-10", 0.5)])


@given(fractions, fractions)
def test_black_box(a, b):
    c = check_black_box(a, b)
    assert c.passed == (a - b <= 0.002 + 1e-12)
    assert c.value == pytest.approx(a - b)


def test_zero_gradients_and_roundtrip():
    assert check_zero_gradients(0, 10).passed
    c = check_zero_gradients(3, 10)
    assert not c.passed and c.value == pytest.approx(0.3) and "3 of 10" in c.message
    assert CheckResult.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError):
        check_zero_gradients(11, 10)
    with pytest.raises(ConfigError):
        one_point(0)
    assert check_deterministic(0.0).passed and not check_deterministic(0.1).passed
