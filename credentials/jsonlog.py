"""Structured logging: one JSON object per line, built with orjson.

Log calls pass fields through `extra={...}`; the formatter writes the message, level,
logger, time and those fields. Callers never put credential values into a log call in the
first place; as a second line of defence, a field whose name says it holds a secret
(`authorization`, `token`, `access_token`, `client_secret`, `password`, `apiKey`, ...) is
written as `[redacted]`, at any depth of nested mappings and lists.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

_TRACE_FRAMES = 3
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)
REDACTED = "[redacted]"
# Matched against the end of a field name lower-cased with everything but letters and
# digits removed, so `access_token`, `accessToken` and `Access-Token` are one name, and
# `refresh_token`, `x-api-key`, `client_secret` and `Proxy-Authorization` are all caught
# while `token_url` or `credential_type` are not.
_SECRET_NAME_ENDINGS = (
    "authorization",
    "token",
    "secret",
    "password",
    "passwd",
    "apikey",
    "privatekey",
    "cookie",
    "signature",
    "credentials",
)
_MAX_REDACTION_DEPTH = 8


def is_secret_name(name: str) -> bool:
    """Whether a field of this name may hold a secret."""
    folded = "".join(ch for ch in name.lower() if ch.isalnum())
    return folded.endswith(_SECRET_NAME_ENDINGS)


def redact(value: Any, depth: int = 0) -> Any:
    """`value` with every mapping entry under a secret-looking key replaced by
    `[redacted]`; too deep a structure is replaced whole rather than walked."""
    if isinstance(value, Mapping):
        if depth >= _MAX_REDACTION_DEPTH:
            return REDACTED
        return {
            key: REDACTED if is_secret_name(str(key)) else redact(item, depth + 1)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple | set | frozenset):
        if depth >= _MAX_REDACTION_DEPTH:
            return REDACTED
        return [redact(item, depth + 1) for item in value]
    return value


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD_ATTRIBUTES:
                entry[key] = REDACTED if is_secret_name(key) else redact(value)
        if record.exc_info and record.exc_info[0] is not None:
            # The type and where it was raised, never the message or the values: those
            # can quote local values, which may be secrets.
            entry["exception"] = record.exc_info[0].__name__
            entry["exception_at"] = _where(record.exc_info[2])
        return orjson.dumps(entry, default=str).decode()


def _where(trace: TracebackType | None) -> list[str]:
    """`module:line` of the innermost frames, where the exception was raised."""
    frames = traceback.extract_tb(trace)[-_TRACE_FRAMES:]
    return [f"{Path(frame.filename).stem}:{frame.lineno}" for frame in frames]


def configure_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours and print raw query strings.
    logging.getLogger("aiohttp.access").disabled = True
