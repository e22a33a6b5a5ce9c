"""The JSON log formatter: fields as given, except those whose name says "secret"."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from credentials.jsonlog import REDACTED, JsonFormatter, is_secret_name

SECRET = "sk-JSONLOG-6e5d4c3b2a19"


def rendered(**extra: Any) -> dict[str, Any]:
    record = logging.LogRecord("authgate.test", logging.INFO, __file__, 1, "hello %s", ("x",), None)
    record.__dict__.update(extra)
    line: dict[str, Any] = orjson.loads(JsonFormatter().format(record))
    return line


@pytest.mark.parametrize(
    "name",
    [
        "authorization",
        "Authorization",
        "proxy-authorization",
        "token",
        "access_token",
        "accessToken",
        "refresh_token",
        "id_token",
        "secret",
        "client_secret",
        "password",
        "apiKey",
        "api_key",
        "x-api-key",
        "private_key",
        "cookie",
        "set-cookie",
        "credentials",
        "signature",
    ],
)
def test_secret_named_fields_are_redacted(name: str) -> None:
    line = rendered(**{name: SECRET})
    assert line[name] == REDACTED
    assert SECRET not in orjson.dumps(line).decode()


@pytest.mark.parametrize(
    "name",
    [
        "request_id",
        "connection",
        "path",
        "status",
        "token_url",
        "credential_type",
        "tokens",
        "refresh",
        "retry_reasons",
        "query_keys",
    ],
)
def test_ordinary_fields_are_kept(name: str) -> None:
    assert not is_secret_name(name)
    assert rendered(**{name: "value-1"})[name] == "value-1"


def test_nested_secret_fields_are_redacted_at_any_depth() -> None:
    headers = {"Accept": "*/*", "Authorization": f"Bearer {SECRET}"}
    line = rendered(
        request={"headers": headers, "body": [{"client_secret": SECRET, "n": 1}]},
    )
    assert line["request"] == {
        "headers": {"Accept": "*/*", "Authorization": REDACTED},
        "body": [{"client_secret": REDACTED, "n": 1}],
    }


def test_too_deep_a_structure_is_replaced_whole() -> None:
    deep: Any = {"token": SECRET}
    for _ in range(20):
        deep = {"inner": deep}
    line = rendered(deep=deep)
    assert SECRET not in orjson.dumps(line).decode()


def test_message_level_and_logger_are_written() -> None:
    line = rendered()
    assert (line["message"], line["level"], line["logger"]) == ("hello x", "info", "authgate.test")
