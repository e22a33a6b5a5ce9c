from __future__ import annotations

import pytest

from proxy.headers import (
    HOP_BY_HOP,
    apply_overrides,
    caller_header_layers,
    forwarded_request_headers,
    response_headers,
)

Headers = list[tuple[str, str]]


def test_hop_by_hop_lists_rfc_9110_fields_in_lower_case() -> None:
    assert {
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    } == HOP_BY_HOP


# --- forwarded_request_headers ---------------------------------------------------------


def test_body_and_accept_headers_pass_through_everything_else_is_dropped() -> None:
    incoming = [
        ("Host", "localhost:3003"),
        ("Authorization", "Bearer secret-key"),
        ("Connection-Id", "c1"),
        ("Provider-Config-Key", "github"),
        ("Retries", "3"),
        ("Retry-On", "429"),
        ("Base-Url-Override", ""),
        ("Decompress", "true"),
        ("Nango-Activity-Log-Id", ""),
        ("Nango-Is-Sync", "false"),
        ("Content-Type", "application/xml"),
        ("Content-Encoding", "gzip"),
        ("Accept", "application/vnd.github+json"),
        ("User-Agent", "nango-node"),
        ("Cookie", "a=b"),
        ("X-Forwarded-For", "1.2.3.4"),
        ("Content-Length", "12"),
        ("Accept-Encoding", "gzip"),
    ]
    assert forwarded_request_headers(incoming) == [
        ("Content-Type", "application/xml"),
        ("Content-Encoding", "gzip"),
        ("Accept", "application/vnd.github+json"),
    ]


def test_prefixed_header_is_forwarded_without_prefix_keeping_the_callers_spelling() -> None:
    incoming = [("Nango-Proxy-X-GitHub-Api-Version", "2022-11-28"), ("nango-proxy-x-a", "1")]
    assert forwarded_request_headers(incoming) == [
        ("X-GitHub-Api-Version", "2022-11-28"),
        ("x-a", "1"),
    ]


@pytest.mark.parametrize("prefix", ["Nango-Proxy-", "nango-proxy-", "NANGO-PROXY-", "NaNgO-pRoXy-"])
def test_prefix_is_matched_case_insensitively(prefix: str) -> None:
    assert forwarded_request_headers([(prefix + "Foo", "v")]) == [("Foo", "v")]


def test_prefixed_header_overrides_every_plain_line_of_the_same_name() -> None:
    incoming = [
        ("Accept", "text/html"),
        ("accept", "text/plain"),
        ("Nango-Proxy-ACCEPT", "application/json"),
        ("Content-Type", "application/json"),
    ]
    assert forwarded_request_headers(incoming) == [
        ("Content-Type", "application/json"),
        ("ACCEPT", "application/json"),
    ]


def test_prefixed_header_overrides_a_plain_one_that_comes_after_it() -> None:
    incoming = [("Nango-Proxy-Content-Type", "text/csv"), ("Content-Type", "application/json")]
    assert forwarded_request_headers(incoming) == [("Content-Type", "text/csv")]


def test_the_last_prefixed_header_of_a_name_wins() -> None:
    incoming = [
        ("Nango-Proxy-X-Key", "first"),
        ("Nango-Proxy-Other", "o"),
        ("nango-proxy-x-key", "second"),
    ]
    assert forwarded_request_headers(incoming) == [("x-key", "second"), ("Other", "o")]


def test_empty_plain_header_is_absent_but_empty_prefixed_header_is_forwarded() -> None:
    incoming = [("Content-Type", ""), ("Accept", ""), ("Nango-Proxy-X-Empty", "")]
    assert forwarded_request_headers(incoming) == [("X-Empty", "")]


def test_repeated_plain_lines_are_kept_in_order() -> None:
    incoming = [("Accept", "text/html"), ("Accept", "application/json")]
    assert forwarded_request_headers(incoming) == incoming


def test_caller_may_override_authorization_through_the_prefix() -> None:
    # Nango allows it; the secret key in the plain Authorization never goes upstream.
    incoming = [("Authorization", "Bearer sk"), ("Nango-Proxy-Authorization", "token abc")]
    assert forwarded_request_headers(incoming) == [("Authorization", "token abc")]


@pytest.mark.parametrize(
    "name",
    [
        "Host",
        "Content-Length",
        "Transfer-Encoding",
        "Connection",
        "Keep-Alive",
        "Proxy-Connection",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "TE",
        "Trailer",
        "Upgrade",
        "transfer-encoding",
    ],
)
def test_framing_and_hop_by_hop_names_are_never_forwarded_even_when_prefixed(name: str) -> None:
    assert forwarded_request_headers([("Nango-Proxy-" + name, "x"), (name, "y")]) == []


def test_bare_prefix_is_not_a_header() -> None:
    assert forwarded_request_headers([("Nango-Proxy-", "x")]) == []


def test_forwarded_request_headers_accept_any_iterable() -> None:
    pairs = (pair for pair in [("Accept", "a/b")])
    assert forwarded_request_headers(pairs) == [("Accept", "a/b")]


# --- apply_overrides ---------------------------------------------------------------------


def test_override_replaces_base_lines_case_insensitively_and_keeps_the_rest() -> None:
    base = [("authorization", "Bearer t"), ("X-Api-Version", "1"), ("accept", "a/b")]
    overrides = [("Accept", "c/d")]
    assert apply_overrides(base, overrides) == [
        ("authorization", "Bearer t"),
        ("X-Api-Version", "1"),
        ("Accept", "c/d"),
    ]


def test_override_removes_every_base_line_of_that_name() -> None:
    base = [("X-A", "1"), ("x-a", "2"), ("Y", "y")]
    assert apply_overrides(base, [("X-a", "3")]) == [("Y", "y"), ("X-a", "3")]


def test_repeated_override_lines_are_all_kept() -> None:
    assert apply_overrides([("A", "0")], [("a", "1"), ("A", "2")]) == [("a", "1"), ("A", "2")]


def test_empty_overrides_return_a_copy_of_base() -> None:
    base = [("A", "1")]
    merged = apply_overrides(base, [])
    assert merged == base
    assert merged is not base


def test_layers_compose_injected_then_provider_then_caller() -> None:
    injected = [("authorization", "Bearer token")]
    provider = [("x-api-version", "2"), ("user-agent", "provider-ua")]
    caller = forwarded_request_headers(
        [("Nango-Proxy-X-Api-Version", "3"), ("Content-Type", "application/json")]
    )
    merged = apply_overrides(apply_overrides(injected, provider), caller)
    assert merged == [
        ("authorization", "Bearer token"),
        ("user-agent", "provider-ua"),
        ("Content-Type", "application/json"),
        ("X-Api-Version", "3"),
    ]


def test_overrides_may_be_a_generator() -> None:
    merged = apply_overrides([("A", "1"), ("B", "2")], (h for h in [("a", "9")]))
    assert merged == [("B", "2"), ("a", "9")]


# --- response_headers --------------------------------------------------------------------


def test_end_to_end_headers_pass_and_hop_by_hop_ones_are_dropped() -> None:
    upstream = [
        ("Content-Type", "application/json"),
        ("Connection", "keep-alive"),
        ("Keep-Alive", "timeout=5"),
        ("Proxy-Authenticate", "Basic"),
        ("Proxy-Connection", "keep-alive"),
        ("Trailer", "X-Checksum"),
        ("Upgrade", "h2c"),
        ("TE", "trailers"),
        ("Content-Length", "2"),
        ("ETag", '"abc"'),
        ("X-RateLimit-Remaining", "59"),
    ]
    assert response_headers(upstream) == [
        ("Content-Type", "application/json"),
        ("Content-Length", "2"),
        ("ETag", '"abc"'),
        ("X-RateLimit-Remaining", "59"),
    ]


def test_fields_named_in_connection_are_dropped_even_when_listed_after_them() -> None:
    upstream = [
        ("X-Internal", "1"),
        ("x-trace", "t"),
        ("Content-Type", "text/plain"),
        ("Connection", " X-Internal ,x-TRACE"),
        ("connection", "close"),
    ]
    assert response_headers(upstream) == [("Content-Type", "text/plain")]


def test_repeated_headers_are_kept_in_order() -> None:
    upstream = [
        ("Set-Cookie", "a=1; Path=/"),
        ("Vary", "Accept"),
        ("set-cookie", "b=2; Path=/"),
        ("Set-Cookie", "c=3"),
    ]
    assert response_headers(upstream) == upstream


@pytest.mark.parametrize(
    "upstream",
    [
        [("Transfer-Encoding", "chunked"), ("Content-Length", "10"), ("A", "1")],
        [("Content-Length", "10"), ("transfer-encoding", "gzip, chunked"), ("A", "1")],
    ],
)
def test_never_both_content_length_and_transfer_encoding(upstream: Headers) -> None:
    assert response_headers(upstream) == [("A", "1")]


def test_content_length_is_kept_without_transfer_encoding() -> None:
    assert response_headers([("Content-Length", "10")]) == [("Content-Length", "10")]


def test_decoded_body_drops_its_encoding_and_length() -> None:
    upstream = [("Content-Encoding", "gzip"), ("Content-Length", "10"), ("Content-Type", "a/b")]
    assert response_headers(upstream, decoded=True) == [("Content-Type", "a/b")]
    assert response_headers(upstream) == upstream


def test_response_headers_accept_any_iterable() -> None:
    assert response_headers(h for h in [("Connection", "x"), ("X", "1"), ("Y", "2")]) == [
        ("Y", "2")
    ]


def test_caller_layers_put_plain_accept_under_injected_headers() -> None:
    defaults, overrides = caller_header_layers(
        [
            ("Accept", "*/*"),
            ("Content-Type", "multipart/form-data; boundary=x"),
            ("Nango-Proxy-X-Trace", "t"),
            ("Authorization", "Bearer caller"),
        ]
    )
    assert defaults == [("Accept", "*/*")]
    assert overrides == [("Content-Type", "multipart/form-data; boundary=x"), ("X-Trace", "t")]
    injected = [("accept", "application/vnd.github+json"), ("content-type", "application/json")]
    final = apply_overrides(apply_overrides(defaults, injected), overrides)
    assert ("accept", "application/vnd.github+json") in final
    assert ("Content-Type", "multipart/form-data; boundary=x") in final
    assert ("content-type", "application/json") not in final


def test_prefixed_accept_overrides_everything() -> None:
    defaults, overrides = caller_header_layers(
        [("Accept", "*/*"), ("Nango-Proxy-Accept", "text/csv")]
    )
    assert defaults == []
    assert overrides == [("Accept", "text/csv")]
