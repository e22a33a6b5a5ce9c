"""Structured logging: one JSON object per line, built with orjson.

Log calls pass fields through `extra={...}`; the formatter writes the message, level,
logger, time and those fields. Nothing here knows about credentials: callers never put
credential values into a log call in the first place.
"""

from __future__ import annotations

import logging
import sys
import traceback
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson

_TRACE_FRAMES = 3
_STANDARD_ATTRIBUTES = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)


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
                entry[key] = value
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
