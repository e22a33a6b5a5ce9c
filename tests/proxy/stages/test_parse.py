from __future__ import annotations

import pytest
from multidict import CIMultiDict

from proxy.context import ProxyParams
from proxy.errors import InvalidHeaders
from proxy.stages.parse import parse_control_headers

BASE = {"Connection-Id": "user-123", "Provider-Config-Key": "github"}


def parse(**extra: str) -> ProxyParams:
    return parse_control_headers(CIMultiDict({**BASE, **extra}))


def issues_of(headers: dict[str, str]) -> dict[str, str]:
    with pytest.raises(InvalidHeaders) as raised:
        parse_control_headers(CIMultiDict(headers))
    return {issue["path"][0]: issue["code"] for issue in raised.value.issues}


def test_defaults() -> None:
    params = parse()
    assert params.connection_id == "user-123"
    assert params.provider_config_key == "github"
    assert params.retries == 0
    assert params.retry_on == frozenset()
    assert params.base_url_override is None
    assert params.decompress is False
    assert params.forward_headers_on_redirect is None


def test_header_names_are_case_insensitive() -> None:
    params = parse_control_headers(
        CIMultiDict({"connection-id": "a", "PROVIDER-CONFIG-KEY": "b", "retries": "3"})
    )
    assert (params.connection_id, params.provider_config_key, params.retries) == ("a", "b", 3)


def test_all_optional_headers() -> None:
    params = parse(
        **{
            "Retries": "10",
            "Retry-On": "429,409",
            "Base-Url-Override": "https://acme.my.salesforce.com",
            "Decompress": "TRUE",
            "Forward-Headers-On-Redirect": "false",
            "Nango-Activity-Log-Id": "log-1",
        }
    )
    assert params.retries == 10
    assert params.retry_on == frozenset({429, 409})
    assert params.base_url_override == "https://acme.my.salesforce.com"
    assert params.decompress is True
    assert params.forward_headers_on_redirect is False
    assert params.activity_log_id == "log-1"


def test_empty_values_count_as_absent() -> None:
    params = parse(**{"Base-Url-Override": "", "Nango-Activity-Log-Id": "", "Retries": ""})
    assert params.base_url_override is None
    assert params.activity_log_id is None
    assert params.retries == 0


def test_every_problem_is_reported_with_its_header() -> None:
    found = issues_of(
        {
            "Provider-Config-Key": "bad/key",
            "Retries": "11",
            "Retry-On": "4x9",
            "Base-Url-Override": "not a url",
            "Decompress": "yes please",
            "Nango-Activity-Log-Id": "x" * 256,
        }
    )
    assert found == {
        "connection-id": "invalid_type",
        "provider-config-key": "invalid_format",
        "retries": "invalid_value",
        "retry-on": "invalid_value",
        "base-url-override": "invalid_value",
        "decompress": "invalid_value",
        "nango-activity-log-id": "invalid_value",
    }


@pytest.mark.parametrize("retries", ["-1", "1.5", "abc", "11"])
def test_retries_out_of_range(retries: str) -> None:
    assert "retries" in issues_of({**BASE, "Retries": retries})


def test_connection_id_length_and_charset() -> None:
    assert issues_of({**BASE, "Connection-Id": "x" * 256}) == {"connection-id": "too_big"}
    assert issues_of({**BASE, "Connection-Id": "tab\there"}) == {"connection-id": "invalid_format"}
    assert parse(**{"Connection-Id": "a,b.c;d:e=f+g~h[i]j|k@l${m}n\"o'p\\q/r_s t-u"})


def test_override_must_be_absolute_http() -> None:
    assert "base-url-override" in issues_of({**BASE, "Base-Url-Override": "ftp://x.example"})
    assert "base-url-override" in issues_of({**BASE, "Base-Url-Override": "/relative"})
