"""Tests of ``robin_plugin.rng`` (seeded streams, isolated RNG), ``robin_plugin.pgd`` and the one input conversion."""
from __future__ import annotations

import hashlib

import pytest
import torch

from robin_plugin.data import to_float
from robin_plugin.errors import ConfigError, InputError
from robin_plugin.pgd import check_eps, default_pgd_step, pgd_attack
from robin_plugin.rng import derive_seed, isolated_rng, stream_generator


def test_derive_seed_is_the_first_8_bytes_of_sha256() -> None:
    digest = hashlib.sha256(b"7/shuffle/3").digest()
    assert derive_seed(7, "shuffle", 3) == int.from_bytes(digest[:8], "little") & (2**63 - 1)
    assert derive_seed(7, "shuffle", 3) != derive_seed(7, "shuffle", 4)


def test_stream_generator_is_derive_seed_and_validates_the_seed() -> None:
    a = torch.rand(5, generator=stream_generator(3, "head/10"))
    b = torch.rand(5, generator=torch.Generator().manual_seed(derive_seed(3, "head/10")))
    assert torch.equal(a, b)
    # a stream named in parts is the same stream as its parts joined by "/"
    assert torch.equal(torch.rand(3, generator=stream_generator(3, "head", 10)),
                       torch.rand(3, generator=stream_generator(3, "head/10")))
    for bad in (-1, 1.5, True, "0"):
        with pytest.raises(ConfigError, match="seed must be an integer >= 0"):
            stream_generator(bad, "body")


def test_isolated_rng_restores_and_optionally_seeds() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    with isolated_rng(5):
        inside = torch.rand(3)
    with isolated_rng():
        torch.rand(100)
    assert torch.equal(torch.rand(3), expected)  # the caller's stream went on as if nothing ran
    torch.manual_seed(5)
    assert torch.equal(inside, torch.rand(3))
    with isolated_rng(5, torch.device("cpu")):
        assert torch.equal(torch.rand(3), inside)


def test_check_eps_one_rule() -> None:
    assert check_eps(8 / 255) == 8 / 255 and check_eps(1, "step_size") == 1.0
    for bad in (0, -0.1, 1.5, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(ConfigError, match=r"must be a number in \(0, 1\]"):
            check_eps(bad)
    with pytest.raises(ConfigError, match=r"^step_size must be a number in \(0, 0.5\]"):
        check_eps(0.6, "step_size", 0.5)


def test_pgd_attack_is_torchattacks_pgd_with_the_eval_step_rule() -> None:
    attack = pgd_attack(torch.nn.Linear(2, 2), 0.1, 3)
    assert (attack.eps, attack.alpha, attack.steps, attack.random_start) == (0.1, default_pgd_step(0.1), 3, True)
    assert pgd_attack(torch.nn.Linear(2, 2), 0.1, 3, alpha=0.05).alpha == 0.05
    with pytest.raises(ConfigError, match="pgd steps"):
        pgd_attack(torch.nn.Linear(2, 2), 0.1, 0)
    with pytest.raises(ConfigError, match="alpha"):
        pgd_attack(torch.nn.Linear(2, 2), 0.1, 1, alpha=2.0)


def test_every_pgd_caller_uses_the_one_pgd() -> None:
    """Training, validation, the guard and evaluation build their PGD with robin_plugin.pgd.pgd_attack."""
    import robin_plugin.eval.measure
    import robin_plugin.training.attacks
    import robin_plugin.training.guard
    import robin_plugin.training.metrics

    for module in (robin_plugin.training.attacks, robin_plugin.training.guard, robin_plugin.training.metrics,
                   robin_plugin.eval.measure):
        assert module.pgd_attack is pgd_attack, module.__name__
        assert "torchattacks.PGD(" not in open(module.__file__, encoding="utf-8").read(), module.__name__


def test_to_float_is_the_one_conversion() -> None:
    x = torch.tensor([[0, 51, 255]], dtype=torch.uint8)
    assert torch.equal(to_float(x), x.float() / 255) and to_float(x).dtype == torch.float32
    for dtype in (torch.float16, torch.float32, torch.float64):
        y = to_float(torch.tensor([0.25, 1.0], dtype=dtype))
        assert y.dtype == torch.float32 and y.tolist() == [0.25, 1.0]
    with pytest.raises(InputError, match=r"must be uint8 \(0..255\) or floats in \[0, 1\], got dtype torch.int64"):
        to_float(torch.tensor([1]))
