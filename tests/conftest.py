"""Shared test settings: a fixed torch thread count and a small, deadline-free hypothesis profile.

The tests use tiny models, whose ops gain nothing from several threads; with two OpenMP
threads on a busy 2-core machine, barrier spinning made a 512x16 matmul a thousand times
slower. One thread is the default; ``ROBIN_TEST_THREADS=2`` changes it. Select another
hypothesis profile with ``HYPOTHESIS_PROFILE=thorough``.
"""
from __future__ import annotations

import os

import torch
from hypothesis import HealthCheck, settings

torch.set_num_threads(int(os.environ.get("ROBIN_TEST_THREADS", "1")))

settings.register_profile(
    "default", max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile("thorough", max_examples=300, deadline=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
