from __future__ import annotations

import pytest

from credentials.config import ConfigError
from proxy.settings import ProxySettings


def test_defaults() -> None:
    settings = ProxySettings.from_env({})
    assert (settings.host, settings.port) == ("127.0.0.1", 3003)
    assert settings.allow_private_upstreams is False


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("AUTHGATE_PORT", "http"),
        ("AUTHGATE_PORT", "65536"),
        ("AUTHGATE_ALLOW_PRIVATE_UPSTREAMS", "sure"),
        ("AUTHGATE_UPSTREAM_CONNECT_TIMEOUT", "0"),
        ("AUTHGATE_UPSTREAM_TOTAL_TIMEOUT", "nan"),
        ("AUTHGATE_MAX_BODY_BYTES", "0"),
        ("AUTHGATE_LOG_LEVEL", "LOUD"),
    ],
)
def test_invalid_values_name_the_variable(variable: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        ProxySettings.from_env({variable: value})
    assert raised.value.variable == variable


def test_retry_wait_cannot_exceed_the_deadline() -> None:
    with pytest.raises(ConfigError) as raised:
        ProxySettings.from_env(
            {"AUTHGATE_RETRY_MAX_DELAY": "30", "AUTHGATE_UPSTREAM_TOTAL_TIMEOUT": "5"}
        )
    assert raised.value.variable == "AUTHGATE_RETRY_MAX_DELAY"
