"""Path and query parameters the way Nango's routes read them, plus lenient routing.

Nango parses query strings with `qs`: a repeated key becomes an array, `key[]=v` and
`key[0]=v` become arrays, `key[sub]=v` becomes an object. Routes then validate the result
strictly (unknown keys are a 400). Path parameters arrive percent-decoded (aiohttp does
that) and are validated by pattern, so `%2F` inside an ID is refused rather than routed.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable

from aiohttp import web

from management.request_context import json_body
from management.validation import Checker

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
QueryValue = str | list[str] | dict[str, str]

_BRACKETED = re.compile(r"^([^\[\]]+)\[([^\[\]]*)\]")


def add_lenient(router: web.UrlDispatcher, method: str, path: str, handler: Handler) -> None:
    """Route `path` and `path/` alike: Express treats a trailing slash as optional, and
    some Nango clients (listRecords) send one."""
    router.add_route(method, path, handler)
    router.add_route(method, path + "/", handler)


def parse_query(request: web.Request) -> dict[str, QueryValue]:
    """The query string in `qs` shapes (one level of brackets is enough for our routes)."""
    parsed: dict[str, QueryValue] = {}
    for key, value in request.query.items():
        bracketed = _BRACKETED.match(key)
        if bracketed is None:
            _add_plain(parsed, key, value)
        else:
            _add_bracketed(parsed, bracketed.group(1), bracketed.group(2), value)
    return parsed


def _add_plain(parsed: dict[str, QueryValue], key: str, value: str) -> None:
    current = parsed.get(key)
    if current is None:
        parsed[key] = value
    elif isinstance(current, list):
        current.append(value)
    elif isinstance(current, dict):
        current[str(len(current))] = value
    else:
        parsed[key] = [current, value]


def _add_bracketed(parsed: dict[str, QueryValue], base: str, sub: str, value: str) -> None:
    current = parsed.get(base)
    if sub == "" or sub.isdigit():
        if current is None:
            parsed[base] = [value]
        elif isinstance(current, list):
            current.append(value)
        elif isinstance(current, dict):
            current[sub or str(len(current))] = value
        else:
            parsed[base] = [current, value]
        return
    if isinstance(current, dict):
        current[sub] = value
    elif current is None:
        parsed[base] = {sub: value}
    else:
        # `a=1&a[x]=2`: qs would make a mixed object; no route accepts that shape anyway.
        items = current if isinstance(current, list) else [current]
        parsed[base] = {**{str(index): item for index, item in enumerate(items)}, sub: value}


def strict_query(request: web.Request, allowed: Iterable[str] = ()) -> dict[str, QueryValue]:
    """The parsed query; any key outside `allowed` is a 400 `invalid_query_params`."""
    query = parse_query(request)
    check = Checker()
    check.strict(query, allowed)
    check.raise_if_invalid("invalid_query_params")
    return query


def path_param(
    request: web.Request, name: str, pattern: re.Pattern[str], *, max_length: int = 255
) -> str:
    """A decoded path parameter that matches `pattern`, else 400 `invalid_uri_params`."""
    check = Checker()
    value = check.string(request.match_info, name, pattern=pattern, max_length=max_length)
    check.raise_if_invalid("invalid_uri_params")
    assert value is not None
    return value


async def reject_body(request: web.Request) -> None:
    """Routes that take no body accept none, or an empty JSON object (`{}` says nothing);
    anything else is a 400 `invalid_body`, as Nango's empty strict schema answers."""
    body = await json_body(request)
    if body is None:
        return
    check = Checker()
    obj = check.expect_object(body)
    if obj is not None:
        check.strict(obj, ())
    check.raise_if_invalid()
