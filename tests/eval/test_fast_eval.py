"""The fast attack copy (eval.fast.attack_model): same function, same verdicts, the model untouched."""
from __future__ import annotations

import pytest
import timm
import torch
import torch.nn.functional as F

import robin_plugin  # noqa: F401  (registers the models)
from robin_plugin.eval.evaluate import evaluate
from robin_plugin.eval.fast import attack_model
from robin_plugin.eval.reference import reference_autoattack
from robin_plugin.testing import fashion_mnist_subset, pgd_train

EPS = 0.1


def _calibrated(model, shape=(1, 28, 28)):
    g = torch.Generator().manual_seed(0)
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(torch.rand(16, *shape, generator=g))
    return model.eval()


@pytest.mark.parametrize("kwargs", [dict(width=4), dict(width=8, keep_ratio=0.2, last_bn=False)])
def test_attack_model_computes_the_model(kwargs):
    model = _calibrated(timm.create_model("robin_resnet18", in_chans=1, num_classes=10, **kwargs))
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    fast = attack_model(model)
    assert torch.equal(torch.random.get_rng_state(), rng)
    assert not model.training and all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fast.modules())  # folded into the convolutions
    g = torch.Generator().manual_seed(1)
    x = torch.rand(6, 1, 28, 28, generator=g).requires_grad_(True)
    y = torch.randint(0, 10, (6,), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(fast(x), model(x), rtol=1e-4, atol=1e-4)
    g_fast, = torch.autograd.grad(F.cross_entropy(fast(x), y), x)
    g_model, = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    # a ReLU input within rounding of 0 may switch, so compare the whole gradient, not each entry
    # (a wrongly folded layer gives a relative difference of order 1)
    assert (g_fast - g_model).norm() <= 1e-2 * g_model.norm()


def test_attack_model_without_folding_is_the_model_itself():
    model = _calibrated(timm.create_model("robin_resnet18", in_chans=1, num_classes=10, width=4))
    assert attack_model(model, fold=False, channels_last=False) is model


@pytest.fixture(scope="module")
def robust_conv_model():
    """A width-4 robin ResNet-18 adversarially trained briefly, so that some points stay robust."""
    x, y = fashion_mnist_subset("train", 3000)
    torch.manual_seed(0)
    model = timm.create_model("robin_resnet18", in_chans=1, num_classes=10, width=4, keep_ratio=0.1)
    return pgd_train(model, x, y, steps=60, eps=EPS / 2, pgd_steps=2)


@pytest.mark.slow
def test_fast_and_exact_attacks_give_identical_verdicts(robust_conv_model):
    """Per-point verdicts on the same points and seeds: fast copy == model itself == pyautoattack."""
    model = robust_conv_model
    x, y = fashion_mnist_subset("test", 12)
    eps = EPS / 4
    fast = evaluate(model, x, y, eps, batch_size=12, run_checks=False, pgd_steps=5, progress=False, fast=True)
    exact = evaluate(model, x, y, eps, batch_size=12, run_checks=False, pgd_steps=5, progress=False, fast=False)
    assert fast.settings["fast"] and not exact.settings["fast"]
    # meaningful only if the attacks decide something: some points stay robust, some are broken
    assert 0 < sum(fast.robust) < round(fast.clean_acc * 12), (fast.clean_acc, fast.robust)
    assert fast.robust == exact.robust
    assert fast.robust_acc_after == exact.robust_acc_after
    ref = reference_autoattack(model, x, y, eps, batch_size=12)
    assert ref["robust"] == fast.robust
    assert set(ref["stage_seconds"]) == {"apgd-ce", "apgd-t", "fab-t", "square"} or ref["autoattack_acc"] == 0
