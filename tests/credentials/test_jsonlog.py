"""The JSON log formatter: fields as given, except those whose name says "secret"."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest

from credentials.jsonlog import (
    REDACTED,
    BatchingStreamHandler,
    JsonFormatter,
    configure_logging,
    is_secret_name,
    log_flat,
)

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


# --- the per-request fast path ------------------------------------------------------------

FLAT_FIELDS: dict[str, Any] = {
    "request_id": "r-1",
    "status": 200,
    "upstream_ms": 1.5,
    "query_keys": ["page", "?"],
    "error": None,
    "reauthorized": False,
}


@pytest.fixture
def installed(tmp_path: Any) -> Any:
    """configure_logging's real set-up, writing to a file; the previous set-up restored."""
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("INFO")
    handler = root.handlers[0]
    assert isinstance(handler, BatchingStreamHandler)
    path = tmp_path / "log.jsonl"
    with path.open("w") as stream:
        handler.setStream(stream)
        yield path, handler
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_log_flat_writes_what_the_formatter_writes(installed: Any) -> None:
    path, handler = installed
    logger = logging.getLogger("authgate.test-flat")
    log_flat(logger, "proxy", dict(FLAT_FIELDS))
    logger.info("proxy", extra=dict(FLAT_FIELDS))
    handler.flush()
    fast, slow = (orjson.loads(line) for line in path.read_text().splitlines())
    assert fast.pop("time") == pytest.approx(slow.pop("time"), abs=1)
    assert list(fast.items()) == list(slow.items())


def test_log_flat_goes_through_logging_when_the_set_up_is_not_plain(
    installed: Any, caplog: pytest.LogCaptureFixture
) -> None:
    logger = logging.getLogger("authgate.test-flat")
    with caplog.at_level(logging.INFO):
        log_flat(logger, "proxy", dict(FLAT_FIELDS))
    assert [record.getMessage() for record in caplog.records] == ["proxy"]
    assert caplog.records[0].__dict__["request_id"] == "r-1"


def test_no_access_field_name_looks_secret() -> None:
    """log_flat skips redaction; that is safe only while no access field is secret-named."""
    from proxy.access_log import ACCESS_FIELD_NAMES

    assert [name for name in ACCESS_FIELD_NAMES if is_secret_name(name)] == []
