"""The one structured log line per proxied request, and its activity-log entry.

Only identifiers, sizes, timings and outcomes go in: never a header value, a query value
or a body. The query contributes the names of its parameters only, and only names that
look like names (a bare `?<token>` has no name to keep).

`log_request` also hands the request to the activity log when one is given; that is an
in-memory append, never I/O.
"""

from __future__ import annotations

import logging
import re
import time
from typing import Any

from credentials.activity import ActivityEntry, ActivityLog
from credentials.jsonlog import log_flat
from proxy.context import ProxyContext
from proxy.urls import path_for_log

log = logging.getLogger("authgate.access")


# What a query parameter name written by a program looks like: short words of letters
# and digits joined by `_ - . [ ]`, none of them long or a random-looking mix of letters
# and digits. Anything else (a bare value, a token used as a name, an encoded blob) might
# be a credential and is reported as `?`.
_PARAMETER_NAME = re.compile(r"[A-Za-z0-9_.\-\[\]]{1,64}")
_NAME_WORD = re.compile(r"[A-Za-z0-9]+")
_MAX_WORD = 24
_MIXED_WORD = 8  # a letters-and-digits word this long reads as an identifier, not a name
_MAX_QUERY_KEYS = 32
UNNAMED_PARAMETER = "?"


def log_request(ctx: ProxyContext, activity: ActivityLog | None) -> None:
    fields = access_fields(ctx)
    log_flat(log, "proxy", fields)
    if activity is not None:
        entry = activity_entry(ctx, fields)
        if entry is not None:
            activity.record(entry)


def access_fields(ctx: ProxyContext) -> dict[str, Any]:
    outcome = ctx.outcome
    # Overhead is ours up to the first response byte; streaming time is the provider's.
    responded = outcome.responded_at or time.perf_counter()
    overhead = max(responded - ctx.started - outcome.upstream_seconds, 0.0)
    params = ctx.params
    return {
        "request_id": ctx.request_id,
        "environment": ctx.environment.name if ctx.environment else None,
        "integration": params.provider_config_key if params else None,
        "connection": params.connection_id if params else None,
        "activity_log_id": params.activity_log_id if params else None,
        "method": ctx.request.method,
        "host": outcome.upstream_host or None,
        "path": path_for_log(ctx.request.raw_path),
        "query_keys": query_keys(_raw_query(ctx.request.raw_path)),
        "status": outcome.status,
        "error": outcome.error_code,
        "upstream_ms": round(outcome.upstream_seconds * 1000, 3),
        "overhead_ms": round(overhead * 1000, 3),
        "retries": outcome.retries,
        "retry_reasons": list(outcome.retry_reasons),
        "refresh": outcome.refresh,
        "rate_limit": outcome.rate_limit,
        "reauthorized": outcome.reauthorized,
        "bytes_in": outcome.bytes_in or ctx.request.content_length or 0,
        "bytes_out": outcome.bytes_out,
    }


def _raw_query(target: str) -> str:
    return target.partition("?")[2].partition("#")[0]


ACCESS_FIELD_NAMES = (
    "request_id",
    "environment",
    "integration",
    "connection",
    "activity_log_id",
    "method",
    "host",
    "path",
    "query_keys",
    "status",
    "error",
    "upstream_ms",
    "overhead_ms",
    "retries",
    "retry_reasons",
    "refresh",
    "rate_limit",
    "reauthorized",
    "bytes_in",
    "bytes_out",
)


def query_keys(raw_query: str) -> list[str]:
    """The parameter names of a raw query string, in order, values dropped.

    A part without `=` or whose name does not look like a parameter name is reported as
    `?`: it may be a credential passed as a bare value.
    """
    keys: list[str] = []
    for part in raw_query.split("&"):
        if not part:
            continue
        if len(keys) == _MAX_QUERY_KEYS:
            keys.append("...")
            break
        name, has_value, _ = part.partition("=")
        keys.append(name if has_value and looks_like_a_name(name) else UNNAMED_PARAMETER)
    return keys


def looks_like_a_name(name: str) -> bool:
    if not _PARAMETER_NAME.fullmatch(name):
        return False
    for word in _NAME_WORD.findall(name):
        if len(word) > _MAX_WORD:
            return False
        mixed = any(ch.isdigit() for ch in word) and any(ch.isalpha() for ch in word)
        if mixed and len(word) >= _MIXED_WORD:
            return False
    return True


def activity_entry(ctx: ProxyContext, fields: dict[str, Any]) -> ActivityEntry | None:
    """The activity-log entry of a request that named a connection in an environment;
    None for one refused before that (bad secret key, invalid control headers)."""
    if ctx.environment is None or ctx.params is None:
        return None
    return ActivityEntry(
        environment_id=ctx.environment.id,
        provider_config_key=ctx.params.provider_config_key,
        connection_id=ctx.params.connection_id,
        activity_log_id=ctx.params.activity_log_id,
        request_id=ctx.request_id,
        method=ctx.request.method,
        host=fields["host"],
        path=fields["path"],
        status=ctx.outcome.status,
        error_code=ctx.outcome.error_code,
        upstream_ms=float(fields["upstream_ms"]),
        overhead_ms=float(fields["overhead_ms"]),
        retries=ctx.outcome.retries,
    )
