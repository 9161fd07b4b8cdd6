"""Hypothesis profile for the unit tests: no per-example deadline (2 shared cores make timings noisy)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile("unit", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile("unit")
