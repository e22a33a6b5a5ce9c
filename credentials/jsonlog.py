"""Structured logging: one JSON object per line, built with orjson.

Log calls pass fields through `extra={...}`; the formatter writes the message, level,
logger, time and those fields. Callers never put credential values into a log call in the
first place; as a second line of defence, a field whose name says it holds a secret
(`authorization`, `token`, `access_token`, `client_secret`, `password`, `apiKey`, ...) is
written as `[redacted]`, at any depth of nested mappings and lists.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sys
import time
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
_SCALARS = frozenset({str, int, float, bool, type(None)})


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """Whether a field of this name may hold a secret (memoised: names repeat)."""
    folded = "".join(ch for ch in name.lower() if ch.isalnum())
    return folded.endswith(_SECRET_NAME_ENDINGS)


def redact(value: Any, depth: int = 0) -> Any:
    """`value` with every mapping entry under a secret-looking key replaced by
    `[redacted]`; too deep a structure is replaced whole rather than walked."""
    if type(value) in _SCALARS:
        return value  # most fields: nothing to walk, and no ABC check to pay for
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


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes the lines logged during one event-loop turn in one write.

    On a busy proxy every request logs a line; one `write` per turn instead of one per
    line saves a system call per request. Lines logged outside a running event loop (at
    start-up, from threads) are written at once, together with any pending ones.
    """

    def __init__(self, stream: Any) -> None:
        super().__init__(stream)
        self._pending: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self.write_line(line)

    def write_line(self, line: str) -> None:
        """Queue one finished line (terminator included)."""
        self._pending.append(line)
        if len(self._pending) > 1:
            return  # a write is already scheduled
        try:
            asyncio.get_running_loop().call_soon(self.flush)
        except RuntimeError:
            self.flush()

    def flush(self) -> None:
        with self.lock or contextlib.nullcontext():
            if self._pending:
                lines, self._pending = self._pending, []
                self.stream.write("".join(lines))
            super().flush()


_installed: BatchingStreamHandler | None = None


def log_flat(logger: logging.Logger, message: str, fields: dict[str, Any]) -> None:
    """`logger.info(message, extra=fields)`, cheaper, for a line logged on every request.

    `fields` must be flat (scalars and lists of scalars) under names that are not
    secret-looking, so redaction has nothing to do; the caller's tests pin that. When
    the logging set-up is the one `configure_logging` installed, the line is built here
    and handed to the handler directly (the same JSON the formatter writes, without a
    LogRecord); under any other set-up (tests capturing logs, say) it goes through
    logging as usual.
    """
    handler = _installed
    if handler is None or not logger.isEnabledFor(logging.INFO) or not _plain_path(logger):
        logger.info(message, extra=fields)
        return
    entry = {"time": round(time.time(), 3), "level": "info", "logger": logger.name}
    entry["message"] = message
    entry.update(fields)
    handler.write_line(orjson.dumps(entry, default=str).decode() + handler.terminator)


def _plain_path(logger: logging.Logger) -> bool:
    """Whether a record of `logger` would reach only the installed handler, unfiltered."""
    current: logging.Logger | None = logger
    while current is not None:
        if current.filters or (current.handlers and current.parent is not None):
            return False
        if current.parent is None:
            installed = _installed
            return (
                installed is not None and current.handlers == [installed] and not installed.filters
            )
        if not current.propagate:
            return False
        current = current.parent
    return False


def configure_logging(level: str = "INFO") -> None:
    # The JSON lines carry none of the caller's file, line, thread or process, so the
    # logging module need not look them up on every record (its documented switches;
    # `_srcfile = None` is how its own comments say to skip the stack walk).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = BatchingStreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    global _installed
    _installed = handler
    root.setLevel(level)
    # aiohttp's own access log would duplicate ours and print raw query strings.
    logging.getLogger("aiohttp.access").disabled = True
