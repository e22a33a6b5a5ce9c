"""Stage 2: validate Nango's control headers into `ProxyParams`.

Empty values count as absent: the Node client always sends `Base-Url-Override` and
`Nango-Activity-Log-Id`, usually empty. Every invalid header is reported at once, each
as an issue naming the header (Nango's validation-error shape).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from yarl import URL

from proxy import compat
from proxy.context import ProxyContext, ProxyParams
from proxy.errors import InvalidHeaders
from proxy.pipeline_types import Stage
from proxy.retry import parse_retries, parse_retry_on

CONNECTION_ID_PATTERN = re.compile(r"^[a-zA-Z0-9,.;:=+~\[\]|@${}\"'\\/_ -]+$")
PROVIDER_CONFIG_KEY_PATTERN = re.compile(r"^[a-zA-Z0-9~:.@ _-]+$")
_BOOLEANS = {"true": True, "false": False}

T = TypeVar("T")


# Callers send the same few header combinations over and over; a valid combination is
# parsed once and then looked up. Bounded: cleared when full.
_MAX_REMEMBERED = 4096
_CONTROL_HEADERS = (
    compat.CONNECTION_ID,
    compat.PROVIDER_CONFIG_KEY,
    compat.BASE_URL_OVERRIDE,
    compat.RETRIES,
    compat.RETRY_ON,
    compat.DECOMPRESS,
    compat.FORWARD_HEADERS_ON_REDIRECT,
    compat.ACTIVITY_LOG_ID,
)


def parse() -> Stage:
    remembered: dict[tuple[str | None, ...], ProxyParams] = {}

    def stage(ctx: ProxyContext) -> None:
        headers = ctx.request.headers
        values = tuple([headers.get(name) for name in _CONTROL_HEADERS])
        params = remembered.get(values)
        if params is None:
            params = parse_control_headers(headers)
            if len(remembered) >= _MAX_REMEMBERED:
                remembered.clear()
            remembered[values] = params
        ctx.params = params

    return stage


def parse_control_headers(headers: Mapping[str, str]) -> ProxyParams:
    issues: list[dict[str, Any]] = []
    reader = _Reader(headers, issues)
    params = ProxyParams(
        connection_id=reader.required(compat.CONNECTION_ID, CONNECTION_ID_PATTERN),
        provider_config_key=reader.required(
            compat.PROVIDER_CONFIG_KEY, PROVIDER_CONFIG_KEY_PATTERN
        ),
        base_url_override=reader.optional(compat.BASE_URL_OVERRIDE, _absolute_url, None),
        retries=reader.optional(compat.RETRIES, parse_retries, 0),
        retry_on=reader.optional(compat.RETRY_ON, parse_retry_on, frozenset()),
        decompress=reader.optional(compat.DECOMPRESS, _boolean, False),
        forward_headers_on_redirect=reader.optional(
            compat.FORWARD_HEADERS_ON_REDIRECT, _boolean, None
        ),
        activity_log_id=reader.optional(compat.ACTIVITY_LOG_ID, _bounded, None),
    )
    if issues:
        raise InvalidHeaders(issues)
    return params


class _Reader:
    """Reads one header at a time, collecting issues instead of stopping at the first."""

    def __init__(self, headers: Mapping[str, str], issues: list[dict[str, Any]]) -> None:
        self._headers = headers
        self._issues = issues

    def required(self, name: str, pattern: re.Pattern[str]) -> str:
        value = self._headers.get(name, "")
        if not value:
            self._issue(name, "invalid_type", "Invalid input: expected string, received undefined")
        elif len(value) > compat.MAX_HEADER_VALUE:
            self._issue(name, "too_big", "Too big: expected string to have <=255 characters")
        elif not pattern.match(value):
            self._issue(
                name, "invalid_format", f"Invalid string: must match pattern /{pattern.pattern}/"
            )
        return value

    def optional(self, name: str, convert: Callable[[str], T], default: T) -> T:
        value = self._headers.get(name, "").strip()
        if not value:
            return default
        try:
            return convert(value)
        except ValueError as problem:
            self._issue(name, "invalid_value", str(problem))
            return default

    def _issue(self, name: str, code: str, message: str) -> None:
        self._issues.append({"code": code, "message": message, "path": [name.lower()]})


def _absolute_url(value: str) -> str:
    try:
        url = URL(value)
    except ValueError:
        raise ValueError("Invalid URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("Invalid URL: expected an absolute http(s) URL")
    if url.user is not None or url.password is not None:
        raise ValueError("Invalid URL: credentials in the URL are not allowed")
    return value


def _boolean(value: str) -> bool:
    try:
        return _BOOLEANS[value.lower()]
    except KeyError:
        raise ValueError('Invalid option: expected one of "true"|"false"') from None


def _bounded(value: str) -> str:
    if len(value) > compat.MAX_HEADER_VALUE:
        raise ValueError("Too big: expected string to have <=255 characters")
    return value
