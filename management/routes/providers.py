"""`/providers`: the catalogue as Nango serves it (each entry plus `name` and `logo_url`)."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from credentials.models import Provider
from management.auth import accepts_connect_session
from management.errors import ApiError, ValidationFailed, issue
from management.params import add_lenient, path_param, strict_query
from management.request_context import CORE, SETTINGS
from management.validation import Checker

SEARCH_PATTERN = re.compile(r"^[a-zA-Z0-9~:.@ _-]+$")
PROVIDER_NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
MAX_SEARCH_LENGTH = 255


def add_routes(router: web.UrlDispatcher) -> None:
    add_lenient(router, "GET", "/providers", list_providers)
    add_lenient(router, "GET", "/providers/{provider}", get_provider)
    add_lenient(router, "GET", "/providers/{provider}/templates", list_templates)


def provider_json(provider: Provider, public_url: str) -> dict[str, Any]:
    return {
        **provider.definition,
        "name": provider.name,
        "logo_url": f"{public_url}/images/template-logos/{provider.name}.svg",
    }


@accepts_connect_session
async def list_providers(request: web.Request) -> web.Response:
    matcher = _search_matcher(strict_query(request, ("search",)))
    public_url = request.app[SETTINGS].public_url
    data = [
        provider_json(provider, public_url)
        for provider in request.app[CORE].catalogue.all()
        if matcher is None or matcher.search(provider.name)
    ]
    return _json({"data": data})


def _search_matcher(query: dict[str, Any]) -> re.Pattern[str] | None:
    """Nango treats `search` as a case-insensitive regex on the provider name. The allowed
    characters leave `.` as the only metacharacter, so no pattern can backtrack; compiling
    is still guarded so a future widening of the rule fails as a 400, not a 500."""
    check = Checker()
    search = check.string(
        query, "search", required=False, pattern=SEARCH_PATTERN, max_length=MAX_SEARCH_LENGTH
    )
    check.raise_if_invalid("invalid_query_params")
    if search is None:
        return None
    try:
        return re.compile(search, re.IGNORECASE)
    except re.error:
        raise ValidationFailed(
            "invalid_query_params",
            [issue("invalid_format", "Invalid string: not a valid regular expression", "search")],
        ) from None


@accepts_connect_session
async def get_provider(request: web.Request) -> web.Response:
    strict_query(request)
    name = path_param(request, "provider", PROVIDER_NAME_PATTERN)
    provider = request.app[CORE].catalogue.get(name)
    if provider is None:
        raise ApiError(404, "not_found", f"Unknown provider {name}")
    return _json({"data": provider_json(provider, request.app[SETTINGS].public_url)})


async def list_templates(request: web.Request) -> web.Response:
    """authgate ships no pre-built function templates; Nango answers an unknown provider
    with an empty list too, so every provider gets one."""
    strict_query(request)
    path_param(request, "provider", PROVIDER_NAME_PATTERN)
    return _json({"data": []})


def _json(payload: Any) -> web.Response:
    # YAML may give a catalogue entry non-string keys (a bare `403:`); JSON needs strings.
    body = orjson.dumps(payload, option=orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, content_type="application/json")
