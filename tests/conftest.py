"""Shared test settings and fixtures: a fixed torch thread count, a small, deadline-free hypothesis
profile, and the training tests' small config and trainer.

The tests use tiny models, whose ops gain nothing from several threads; with two OpenMP
threads on a busy 2-core machine, barrier spinning made a 512x16 matmul a thousand times
slower. One thread is the default; ``ROBIN_TEST_THREADS=2`` changes it. Select another
hypothesis profile with ``HYPOTHESIS_PROFILE=thorough``.

The tiny model and toy data the training tests run on are :func:`robin_plugin.testing.tiny_robin_resnet`
and :func:`robin_plugin.testing.toy_dataset`, which subprocesses of the tests import too; the
fixtures here return factories, so a test builds as many configs or trainers as it needs.
"""
from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

from robin_plugin.training import TrainConfig, Trainer, default_hooks

torch.set_num_threads(int(os.environ.get("ROBIN_TEST_THREADS", "1")))

settings.register_profile(
    "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


def _tiny_config(**kw) -> TrainConfig:
    base = dict(model="robin_resnet18", keep_ratio=0.2, p=0.1, epochs=2, batch_size=32, lr=0.05, attack="ffgsm",
                eps=0.1, step_size=0.125, eval_step_size=0.05, val_pgd_steps=2, progress=False, seed=0,
                lr_schedule="cosine", augment=False, dataset="fashion_mnist")
    base.update(kw)
    return TrainConfig(**base)


def _with_defaults(model, cfg, train_set, val_set=None, extra=(), out_dir=None) -> Trainer:
    hooks = [*default_hooks(cfg, model, train_set, val_set, out_dir), *extra]
    return Trainer(model, cfg, train_set, val_set, hooks=hooks, out_dir=out_dir)


@pytest.fixture(scope="session")
def tiny_config():
    """``tiny_config(**changes)``: a 2-epoch FFGSM TrainConfig for ``tiny_robin_resnet`` on ``toy_dataset``."""
    return _tiny_config


@pytest.fixture(scope="session")
def with_defaults():
    """``with_defaults(model, cfg, train_set, val_set=None, extra=(), out_dir=None)``: a Trainer with the
    config's default hooks followed by ``extra`` (what ``robin train`` builds)."""
    return _with_defaults
