"""Pure response reading: decoding, classification details, Retry-After, errors' text."""

from __future__ import annotations

from datetime import UTC, datetime
from email.utils import format_datetime

from multidict import CIMultiDict, CIMultiDictProxy

from credentials.grants import GrantError, TokenReply
from credentials.grants.base import clip, redact
from credentials.grants.responses import (
    at_path,
    classify,
    decode_body,
    provider_error,
    retry_after,
)
from tests.credentials.grants.fakes import NOW


def reply(status: int, **headers: str) -> TokenReply:
    return TokenReply(status, CIMultiDictProxy(CIMultiDict(headers)), b"")


def test_decode_body() -> None:
    assert decode_body(b'{"access_token": "t"}') == {"access_token": "t"}
    assert decode_body(b"access_token=t&scope=a%20b") == {"access_token": "t", "scope": "a b"}
    assert decode_body(b"[1, 2]") is None
    assert decode_body(b"<html><body>oops</body></html>") is None
    assert decode_body(b"") is None
    assert decode_body(b"\xff\xfe") is None


def test_retry_after_seconds_and_date() -> None:
    assert retry_after(reply(429, **{"Retry-After": "30"}), NOW) == 30.0
    later = format_datetime(datetime.fromtimestamp(NOW + 90, UTC), usegmt=True)
    assert retry_after(reply(503, **{"Retry-After": later}), NOW) == 90.0
    earlier = format_datetime(datetime.fromtimestamp(NOW - 90, UTC), usegmt=True)
    assert retry_after(reply(429, **{"Retry-After": earlier}), NOW) == 0.0
    assert retry_after(reply(429, **{"Retry-After": "soon"}), NOW) is None
    assert retry_after(reply(500, **{"Retry-After": "30"}), NOW) is None


def test_success_is_not_an_error() -> None:
    assert classify(reply(200), {"access_token": "t"}, now=NOW) is None
    assert classify(reply(201), {"token": "t", "error": None}, now=NOW) is None
    assert classify(reply(200), None, now=NOW) is None  # decoding decides that one


def test_a_2xx_error_of_another_kind_is_a_transient_refusal() -> None:
    error = classify(reply(200), {"ok": False, "error": "invalid_refresh_token"}, now=NOW)
    assert error is not None
    assert (error.reason, error.permanent, error.provider_error) == (
        "provider_4xx",
        False,
        "invalid_refresh_token",
    )


def test_provider_error_only_takes_code_shaped_codes() -> None:
    assert provider_error({"error": "invalid_grant", "error_description": "gone"}) == (
        "invalid_grant",
        "gone",
    )
    assert provider_error({"error": "Something went wrong, sorry"}) == (
        None,
        "Something went wrong, sorry",
    )
    assert provider_error({"error": {"code": 7}, "message": "Bad credentials"}) == (
        None,
        "Bad credentials",
    )
    assert provider_error({"error": "x", "error_description": "has s3cret-v"}, ["s3cret-v"]) == (
        "x",
        "has [redacted]",
    )


def test_error_text() -> None:
    error = GrantError(
        "invalid_grant",
        status=400,
        provider_error="invalid_grant",
        description="line one\nline two\x1b[31m",
    )
    assert str(error) == (
        "invalid_grant (HTTP 400; provider error 'invalid_grant'; "
        "description 'line one line two [31m')"
    )
    assert error.permanent
    assert str(GrantError("timeout")) == "timeout"
    assert not GrantError("timeout").permanent
    assert GrantError("provider_4xx", permanent=True).permanent


def test_clip_and_redact() -> None:
    assert len(clip("x" * 500)) == 200
    assert clip("a\r\nb") == "a  b"
    assert redact("abc abcdef", ["abcdef", "abc"]) == "abc [redacted]"  # short ones stay
    assert redact("token-long-1 and token-long", ["token-long", "token-long-1"]) == (
        "[redacted] and [redacted]"
    )


def test_at_path() -> None:
    body = {"a": {"b": [{"c": "x"}]}, "flat.key": 1}
    assert at_path(body, "a.b.0.c") == "x"
    assert at_path(body, "a.b.1.c") is None
    assert at_path(body, "a.z") is None
