from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from credentials.templates import (
    UnresolvedTemplate,
    format_time,
    interpolate,
    interpolate_complete,
    placeholders,
    request_dependent,
    request_values,
    resolve_base_url,
    template_values,
    unresolved,
)
from tests.factories import make_connection, make_integration

MOMENT = datetime(2024, 3, 5, 7, 8, 9, 123456, tzinfo=UTC)

VALUES: dict[str, Any] = {
    "connectionConfig": {"subdomain": "acme", "region": "eu", "port": 8443},
    "credentials": {"username": "ann@example.com", "password": "s3cret", "raw": {"id": "r1"}},
    "apiKey": "key-123",
    "ratio": 2.5,
    "whole": 2.0,
    "enabled": True,
    "nothing": None,
    "nested": {"list": ["zero", "one"]},
    "dotted.flat.key": "flat",
}


def fixed_clock() -> datetime:
    return MOMENT


def render(template: str, values: dict[str, Any] | None = None) -> str:
    return interpolate(template, VALUES if values is None else values, clock=fixed_clock)


# --- lookups -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("https://${connectionConfig.subdomain}.zendesk.com", "https://acme.zendesk.com"),
        ("${credentials.raw.id}", "r1"),
        ("Bearer ${apiKey}", "Bearer key-123"),
        ("${nested.list.1}", "one"),
        ("${dotted.flat.key}", "flat"),
        ("port ${connectionConfig.port}", "port 8443"),
        ("${ratio}/${whole}", "2.5/2"),
        ("no placeholders || at all", "no placeholders || at all"),
    ],
)
def test_lookups_substitute_strings_and_numbers(template: str, expected: str) -> None:
    assert render(template) == expected


@pytest.mark.parametrize(
    "template",
    ["${enabled}", "${nothing}", "${credentials.raw}", "${nested.list}", "${nested.list.7}"],
)
def test_booleans_none_and_containers_stay_in_place(template: str) -> None:
    assert render(template) == template
    assert interpolate_complete(template, VALUES) is None


def test_flat_key_with_dots_inside_a_namespace() -> None:
    values = {"connectionConfig": {"incoming_webhook.url": "https://hooks.example/1"}}
    assert render("${connectionConfig.incoming_webhook.url}", values) == "https://hooks.example/1"


def test_dot_path_wins_over_flat_key() -> None:
    values = {"a": {"b": "path"}, "a.b": "flat"}
    assert render("${a.b}", values) == "path"


def test_unresolved_placeholder_is_kept_verbatim_next_to_resolved_ones() -> None:
    text = render("https://${connectionConfig.subdomain}.${connectionConfig.domain}/x")
    assert text == "https://acme.${connectionConfig.domain}/x"
    assert unresolved(text)
    assert not unresolved("https://acme.example/x")


def test_whitespace_inside_braces_is_ignored() -> None:
    assert render("${ apiKey }") == "key-123"


def test_unclosed_placeholder_is_literal_text() -> None:
    assert render("abc ${apiKey") == "abc ${apiKey"


def test_interpolate_complete_reports_a_value_that_looks_like_a_placeholder() -> None:
    # The value contains `${`; completeness is tracked, not guessed from the output.
    values = {"apiKey": "weird${value"}
    assert interpolate_complete("k=${apiKey}", values) == "k=weird${value"


# --- `||` ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${connectionConfig.version} || 2022-11-28", "2022-11-28"),
        ("${connectionConfig.subdomain} || fallback", "acme"),
        ("${a} || ${b} || ${apiKey}", "key-123"),
        ("${a} || ${b}", "${b}"),
        ("literal || ${apiKey}", "key-123"),
    ],
)
def test_top_level_fallback(template: str, expected: str) -> None:
    assert render(template) == expected


def test_fallback_inside_a_function_argument_is_not_top_level() -> None:
    assert render("${base64(${apiKey}||x)}") == base64.b64encode(b"key-123||x").decode()


# --- functions -------------------------------------------------------------------------


def test_base64_of_interpolated_argument() -> None:
    text = render("Basic ${base64(${credentials.username}/token:${credentials.password})}")
    assert text == "Basic " + base64.b64encode(b"ann@example.com/token:s3cret").decode()


def test_digests() -> None:
    assert render("${sha256Hex(${apiKey})}") == hashlib.sha256(b"key-123").hexdigest()
    digest = base64.b64encode(hashlib.sha256(b"key-123").digest()).decode()
    assert render("${sha256Base64(${apiKey})}") == digest


def test_hmac_splits_on_the_last_top_level_comma() -> None:
    values = {"date": "Tue, 05 Mar 2024", "secret": "pa,ss"}
    text = render("${hmacSha1Hex(${date}\nGET, ${secret})}", values)
    expected = hmac.new(b"pa,ss", b"Tue, 05 Mar 2024\nGET", hashlib.sha1).hexdigest()
    assert text == expected


def test_nested_functions() -> None:
    inner = base64.b64encode(b"key-123").decode()
    assert (
        render("${sha256Hex(${base64(${apiKey})})}") == hashlib.sha256(inner.encode()).hexdigest()
    )


def test_function_with_missing_argument_stays_whole() -> None:
    template = "Basic ${base64(${credentials.username}:${credentials.token})}"
    assert render(template) == template
    assert interpolate_complete(template, VALUES) is None


def test_unknown_function_stays_unresolved() -> None:
    template = "${awsSigV4(${apiKey}, x, us-east-1, iam)}"
    assert render(template) == template
    assert interpolate_complete(template, VALUES) is None


# --- time and random ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("${now}", "2024-03-05T07:08:09.123Z"),
        ("${now:X}", str(int(MOMENT.timestamp()))),
        ("${now:x}", str(int(MOMENT.timestamp()) * 1000 + 123)),
        ("${now:YYYY-MM-DD}", "2024-03-05"),
        ("${now:YYYY-MM-DDTHH:mm:ss}", "2024-03-05T07:08:09"),
        ("${now:YYYYMMDDTHHmmss[Z]}", "20240305T070809Z"),
        ("${now:ddd, DD MMM YYYY HH:mm:ss ZZ}", "Tue, 05 Mar 2024 07:08:09 +0000"),
        ("${now+7:days:YYYY-MM-DD}", "2024-03-12"),
        ("${now+1:minutes:X}", str(int(MOMENT.timestamp()) + 60)),
        ("${now-1:months:YYYY-MM-DD}", "2024-02-05"),
        ("${now+1:fortnights:X}", "${now+1:fortnights:X}"),
    ],
)
def test_now_formats(template: str, expected: str) -> None:
    assert render(template, {}) == expected


def test_naive_and_offset_clocks_are_read_as_utc() -> None:
    naive = datetime(2024, 1, 1, 12, 0, 0)
    assert interpolate("${now:HH}", {}, clock=lambda: naive) == "12"
    plus_two = datetime(2024, 1, 1, 14, 0, 0, tzinfo=timezone(timedelta(hours=2)))
    assert interpolate("${now:HH}", {}, clock=lambda: plus_two) == "12"


def test_format_time_twelve_hour_and_literals() -> None:
    evening = datetime(2024, 3, 5, 19, 5, 0, tzinfo=UTC)
    assert format_time(evening, "h:mm A [at] dddd D MMMM YY") == "7:05 PM at Tuesday 5 March 24"


def test_one_now_and_one_random_per_interpolation() -> None:
    calls: list[int] = []

    def counting_random() -> str:
        calls.append(1)
        return f"r{len(calls)}"

    text = interpolate("${random}/${random}", {}, random_source=counting_random)
    assert text == "r1/r1"
    assert len(calls) == 1


def test_default_random_is_a_uuid4() -> None:
    value = interpolate("${random}", {})
    assert len(value) == 36
    assert value[14] == "4"


# --- introspection ---------------------------------------------------------------------


def test_placeholders_lists_names_inside_functions_once() -> None:
    template = (
        "Basic ${base64(${credentials.username}:${hmacSha1Hex(${now:X}${method}, "
        "${credentials.password})})} ${credentials.username} ${random}"
    )
    assert placeholders(template) == ["credentials.username", "method", "credentials.password"]


@pytest.mark.parametrize(
    ("template", "dynamic"),
    [
        ("Bearer ${apiKey}", False),
        ("${connectionConfig.version} || 2022-11-28", False),
        ("${now:YYYYMMDDTHHmmss[Z]}", True),
        ("${random}", True),
        ("${sha256Hex(${endpoint})}", True),
        (
            "${base64(${credentials.username}:${hmacSha1Hex(${method}, ${credentials.password})})}",
            True,
        ),
    ],
)
def test_request_dependent(template: str, dynamic: bool) -> None:
    assert request_dependent(template) is dynamic


def test_request_values_from_the_upstream_url() -> None:
    values = request_values(
        "get",
        "https://user:pw@api-1.duo.example:8443/admin/v1/users?z=1&a=b c&a=%2F&empty=",
        endpoint="/admin/v1/users",
        content_type="application/json",
    )
    assert values == {
        "method": "GET",
        "endpoint": "/admin/v1/users",
        "host": "api-1.duo.example:8443",
        "path": "/admin/v1/users",
        "params": "a=%2F&a=b%20c&empty=&z=1",
        "urlCanonicalParams": "a=%2F&a=b%20c&empty=&z=1",
        "contentType": "application/json",
    }
    assert request_values("POST", "https://h.example")["path"] == "/"
    assert "contentType" not in request_values("POST", "https://h.example")


# --- base URLs ---------------------------------------------------------------------------

INTERCOM = "https://api.${connectionConfig.region}.intercom.io || https://api.intercom.io"


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"region": "eu"}, "https://api.eu.intercom.io"),
        ({"region": "au"}, "https://api.au.intercom.io"),
        ({}, "https://api.intercom.io"),
        ({"region": ""}, "https://api.intercom.io"),
    ],
)
def test_intercom_region_rule(config: dict[str, Any], expected: str) -> None:
    assert resolve_base_url(INTERCOM, {"connection_config": config}) == expected


def test_base_url_rule_uses_the_first_config_key_not_substitution() -> None:
    # `other` would substitute on the left, but `flag` (the first key) decides.
    template = "https://${connectionConfig.flag}${connectionConfig.other}.x || https://default"
    assert resolve_base_url(template, {"connectionConfig": {"other": "o"}}) == "https://default"
    both = {"connectionConfig": {"flag": "f", "other": "o"}}
    assert resolve_base_url(template, both) == "https://fo.x"


def test_base_url_accepts_both_namespace_spellings() -> None:
    template = "https://${connection_config.subdomain}.zendesk.com"
    assert resolve_base_url(template, {"connectionConfig": {"subdomain": "a"}}) == (
        "https://a.zendesk.com"
    )
    camel = "https://${connectionConfig.subdomain}.zendesk.com"
    assert resolve_base_url(camel, {"connection_config": {"subdomain": "b"}}) == (
        "https://b.zendesk.com"
    )


def test_base_url_names_missing_config_keys() -> None:
    template = "https://${connectionConfig.subdomain}.${connectionConfig.domain}"
    with pytest.raises(UnresolvedTemplate) as caught:
        resolve_base_url(template, {"connection_config": {"domain": "", "other": "x"}})
    assert caught.value.missing == ["connectionConfig.subdomain", "connectionConfig.domain"]
    assert caught.value.missing_connection_config == ["subdomain", "domain"]
    assert "subdomain" in str(caught.value)


def test_base_url_without_placeholders_passes_through() -> None:
    assert resolve_base_url("https://api.github.com", {}) == "https://api.github.com"


def test_base_url_with_credentials_and_metadata() -> None:
    values = {"metadata": {"instance_url": "https://eu1.example"}, "connection_config": {}}
    assert resolve_base_url("${metadata.instance_url}/api", values) == "https://eu1.example/api"


# --- template_values ---------------------------------------------------------------------


def test_template_values_namespaces() -> None:
    connection = make_connection(
        {"type": "OAUTH2", "access_token": "at-1", "raw": {"scope": "repo"}},
        connection_config={
            "subdomain": "acme",
            "empty": "",
            "none": None,
            "connectionConfig.x": "1",
        },
        metadata={"team": "t"},
    )
    integration = make_integration({"client_id": "cid", "client_secret": "csec"})
    values = template_values(connection, integration)
    assert values["connectionConfig"] == {"subdomain": "acme", "x": "1"}
    assert values["connection_config"] is values["connectionConfig"]
    assert values["credentials"]["access_token"] == "at-1"
    assert values["access_token"] == "at-1"  # flattened
    assert values["accessToken"] == "at-1"
    assert values["metadata"] == {"team": "t"}
    assert values["connection_id"] == "conn-1"
    assert (values["clientId"], values["clientSecret"]) == ("cid", "csec")


def test_template_values_access_token_from_token_field() -> None:
    values = template_values(make_connection({"type": "OAUTH2_CC", "token": "t-1"}), None)
    assert values["accessToken"] == "t-1"
    assert "clientId" not in values


def test_template_values_credential_fields_cannot_shadow_namespaces() -> None:
    connection = make_connection({"type": "API_KEY", "apiKey": "k", "metadata": "evil"})
    values = template_values(connection, make_integration(None))
    assert values["metadata"] == {}
    assert values["apiKey"] == "k"
    assert "accessToken" not in values
