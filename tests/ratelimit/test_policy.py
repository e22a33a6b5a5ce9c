"""Rate-limit configuration: off by default, parsed strictly, errors name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from credentials.config import ConfigError
from proxy.settings import ProxySettings
from ratelimit.bucket import Limit
from ratelimit.policy import Mode, RateLimitPolicy, parse_rate, policy_from_env

SECOND = 1_000_000


def test_off_unless_configured() -> None:
    policy = policy_from_env({})
    assert policy == RateLimitPolicy()
    assert not policy.enabled
    assert policy.limit_for("dev", "github") is None
    assert ProxySettings.from_env({}).rate_limits == policy


@pytest.mark.parametrize(
    ("text", "count", "period_s"),
    [
        ("10/s", 10, 1),
        ("600/m", 600, 60),
        ("100/10s", 100, 10),
        ("5000/h", 5000, 3600),
        ("1/d", 1, 86400),
        (" 3 / minute ", 3, 60),
        ("2/30seconds", 2, 30),
        ("7/HOURS", 7, 3600),
    ],
)
def test_rates(text: str, count: int, period_s: int) -> None:
    assert parse_rate(text) == (count, period_s * SECOND)


@pytest.mark.parametrize("text", ["", "10", "10/", "/s", "10/ms", "0/s", "1.5/s", "-1/s", "1/0s"])
def test_unreadable_rates(text: str) -> None:
    with pytest.raises(ValueError, match=r"expected|unknown|must"):
        parse_rate(text)


def test_a_global_default_with_and_without_burst() -> None:
    policy = policy_from_env({"AUTHGATE_RATE_LIMIT": "600/m"})
    assert policy.default == Limit(600, 60 * SECOND, 600)
    assert policy.limit_for("any", "thing") == policy.default
    assert policy.enabled
    policy = policy_from_env({"AUTHGATE_RATE_LIMIT": "10/s", "AUTHGATE_RATE_LIMIT_BURST": "5"})
    assert policy.default == Limit(10, SECOND, 5)


def test_mode_and_max_wait() -> None:
    policy = policy_from_env(
        {"AUTHGATE_RATE_LIMIT_MODE": "WAIT", "AUTHGATE_RATE_LIMIT_MAX_WAIT": "2.5"}
    )
    assert (policy.mode, policy.max_wait, policy.wait_budget()) == (Mode.WAIT, 2.5, 2.5)
    assert policy_from_env({"AUTHGATE_RATE_LIMIT_MAX_WAIT": "2.5"}).wait_budget() == 0.0


def test_overrides_file(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(
        "github: {rate: 5/s, burst: 10}\n"
        "prod/github: {rate: 1/s}\n"
        "slack: 2/m\n"
        "internal: off\n"
        "'quoted': 'off'\n"
    )
    policy = policy_from_env(
        {"AUTHGATE_RATE_LIMITS_FILE": str(path), "AUTHGATE_RATE_LIMIT": "100/s"}
    )
    assert policy.limit_for("dev", "github") == Limit(5, SECOND, 10)
    assert policy.limit_for("prod", "github") == Limit(1, SECOND, 1)
    assert policy.limit_for("dev", "slack") == Limit(2, 60 * SECOND, 2)
    assert policy.limit_for("dev", "internal") is None
    assert policy.limit_for("dev", "quoted") is None
    assert policy.limit_for("dev", "other") == Limit(100, SECOND, 100)


def test_overrides_alone_enable_limiting_and_off_alone_does_not(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text("github: 1/s\n")
    policy = policy_from_env({"AUTHGATE_RATE_LIMITS_FILE": str(path)})
    assert policy.enabled
    assert policy.limit_for("dev", "other") is None
    path.write_text("github: off\n")
    assert not policy_from_env({"AUTHGATE_RATE_LIMITS_FILE": str(path)}).enabled
    path.write_text("")
    assert not policy_from_env({"AUTHGATE_RATE_LIMITS_FILE": str(path)}).enabled


RATE = "AUTHGATE_RATE_LIMIT"
BURST = "AUTHGATE_RATE_LIMIT_BURST"
MODE = "AUTHGATE_RATE_LIMIT_MODE"
MAX_WAIT = "AUTHGATE_RATE_LIMIT_MAX_WAIT"
FILE = "AUTHGATE_RATE_LIMITS_FILE"


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        ({RATE: "fast"}, RATE),
        ({RATE: "10/fortnight"}, RATE),
        ({RATE: "1/d", BURST: "99999"}, RATE),
        ({RATE: "10/s", BURST: "0"}, BURST),
        ({RATE: "10/s", BURST: "x"}, BURST),
        ({BURST: "5"}, BURST),
        ({MODE: "queue"}, MODE),
        ({MAX_WAIT: "-1"}, MAX_WAIT),
        ({MAX_WAIT: "nan"}, MAX_WAIT),
        ({MAX_WAIT: "soon"}, MAX_WAIT),
        ({FILE: "/nonexistent/limits.yaml"}, FILE),
    ],
)
def test_invalid_values_stop_start_up_naming_the_variable(
    environ: dict[str, str], variable: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        ProxySettings.from_env(environ)
    assert raised.value.variable == variable


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ("github: {rate: 5/s, burst: 0}\n", "entry 'github': burst must be at least 1"),
        ("github: {rate: 5/s, burst: ten}\n", "entry 'github': burst must be an integer"),
        ("github: {rate: 5/s, burst: true}\n", "entry 'github': burst must be an integer"),
        ("github: {burst: 3}\n", "entry 'github': rate is required"),
        ("github: {rate: 5/s, brust: 3}\n", "entry 'github': unknown field(s) brust"),
        ("github: 5 per second\n", "entry 'github': expected <count>/<period>"),
        ("github: 12\n", "entry 'github': expected off, a rate"),
        ("'': 1/s\n", "must be a string"),
        ("- github\n", "expected a mapping"),
        ("github: [\n", "not valid YAML"),
    ],
)
def test_invalid_overrides_name_the_file_and_entry(
    tmp_path: Path, content: str, fragment: str
) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError) as raised:
        ProxySettings.from_env({"AUTHGATE_RATE_LIMITS_FILE": str(path)})
    assert raised.value.variable == "AUTHGATE_RATE_LIMITS_FILE"
    assert fragment in str(raised.value)
    assert str(path) in str(raised.value)
