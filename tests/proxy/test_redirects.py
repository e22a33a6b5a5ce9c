from __future__ import annotations

import pytest

from proxy.redirects import Hop, next_hop

HEADERS = [
    ("authorization", "Bearer t"),
    ("x-api-key", "k"),
    ("Content-Type", "application/json"),
    ("Accept", "*/*"),
]


def hop(
    status: int,
    location: str | None,
    method: str = "GET",
    forward: bool = False,
    url: str = "https://api.example.com/v1/a?x=1",
) -> Hop | None:
    return next_hop(
        method=method,
        url=url,
        status=status,
        location=location,
        headers=HEADERS,
        injected=frozenset({"authorization", "x-api-key"}),
        forward_credentials=forward,
    )


def test_not_a_redirect() -> None:
    assert hop(200, "/x") is None
    assert hop(302, None) is None
    assert hop(304, "/x") is None


def test_relative_location_resolves_against_the_current_url() -> None:
    result = hop(302, "../b?y=2")
    assert result is not None
    assert result.url == "https://api.example.com/b?y=2"


def test_same_origin_keeps_credentials() -> None:
    result = hop(301, "/v2/a")
    assert result is not None
    assert ("authorization", "Bearer t") in result.headers
    assert ("x-api-key", "k") in result.headers


def test_other_origin_drops_every_injected_credential() -> None:
    result = hop(302, "https://cdn.example.net/file")
    assert result is not None
    names = {name.lower() for name, _ in result.headers}
    assert "authorization" not in names
    assert "x-api-key" not in names
    assert "accept" in names


def test_https_to_http_downgrade_drops_credentials() -> None:
    result = hop(302, "http://api.example.com/v1/a")
    assert result is not None
    assert "authorization" not in {name for name, _ in result.headers}


def test_forwarding_on_redirect_keeps_credentials_across_origins() -> None:
    result = hop(302, "https://elsewhere.example.org/", forward=True)
    assert result is not None
    assert ("authorization", "Bearer t") in result.headers


@pytest.mark.parametrize(
    ("status", "method", "expected_method", "keeps_body"),
    [
        (303, "POST", "GET", False),
        (303, "PUT", "GET", False),
        (302, "POST", "GET", False),
        (301, "POST", "GET", False),
        (302, "PUT", "PUT", True),
        (307, "POST", "POST", True),
        (308, "PATCH", "PATCH", True),
        (307, "GET", "GET", False),
        (303, "HEAD", "HEAD", False),
    ],
)
def test_method_and_body_rules(
    status: int, method: str, expected_method: str, keeps_body: bool
) -> None:
    result = hop(status, "/next", method=method)
    assert result is not None
    assert result.method == expected_method
    assert result.keep_body is keeps_body
    has_content_type = any(name.lower() == "content-type" for name, _ in result.headers)
    assert has_content_type is keeps_body


def test_non_http_location_is_not_followed() -> None:
    assert hop(302, "file:///etc/passwd") is None
