"""Serving settings: workers, keep-alive and the drain, read from the environment."""

from __future__ import annotations

import os

import pytest

from authgate.settings import ServingSettings, usable_cores
from credentials.config import ConfigError


def test_defaults_are_one_worker_per_usable_core_and_a_61_second_keepalive() -> None:
    settings = ServingSettings.from_env({})
    assert settings.workers == len(os.sched_getaffinity(0)) == usable_cores()
    assert settings.keepalive_timeout == 61.0
    assert settings.drain_timeout == 30.0
    assert settings.drain_delay == 0.0
    assert settings.stop_seconds == 30.0


def test_every_value_is_read() -> None:
    settings = ServingSettings.from_env(
        {
            "AUTHGATE_WORKERS": "3",
            "AUTHGATE_KEEPALIVE_TIMEOUT": "75",
            "AUTHGATE_DRAIN_TIMEOUT": "20",
            "AUTHGATE_DRAIN_DELAY": "5",
        }
    )
    assert settings == ServingSettings(
        workers=3, keepalive_timeout=75.0, drain_timeout=20.0, drain_delay=5.0
    )
    assert settings.stop_seconds == 25.0


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHGATE_WORKERS", "0"),
        ("AUTHGATE_WORKERS", "1000"),
        ("AUTHGATE_KEEPALIVE_TIMEOUT", "0"),
        ("AUTHGATE_DRAIN_TIMEOUT", "-0.5"),
        ("AUTHGATE_DRAIN_DELAY", "later"),
    ],
)
def test_bad_values_name_their_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as refused:
        ServingSettings.from_env({variable: value})
    assert refused.value.variable == variable
