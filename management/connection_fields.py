"""Rules for the fields every connection endpoint reads: ids, keys, webhook overrides."""

from __future__ import annotations

import re
from typing import Any

from aiohttp import web

from management import end_users
from management.query import QueryReader
from management.validation import Checker, Path
from management.webhook_urls import webhook_url_problem

# Nango's connection id rule: letters, digits and a fixed set of punctuation (no controls).
CONNECTION_ID_PATTERN = re.compile(r"^[a-zA-Z0-9,.;:=+~\[\]|@${}\"'\\/_ -]+$")
PROVIDER_CONFIG_KEY_PATTERN = re.compile(r"^[a-zA-Z0-9~:.@ _-]+$")
MAX_ID_LENGTH = 255


def connection_id_param(request: web.Request) -> str:
    """The `{connection_id}` path segment, percent-decoded (aiohttp already did that),
    else 400 `invalid_uri_params`. Nango names the parameter `connectionId`."""
    check = Checker()
    value = check.string(
        {"connectionId": request.match_info.get("connection_id")},
        "connectionId",
        pattern=CONNECTION_ID_PATTERN,
        max_length=MAX_ID_LENGTH,
    )
    check.raise_if_invalid("invalid_uri_params")
    assert value is not None
    return value


def provider_config_key_query(query: QueryReader) -> str | None:
    """The required `provider_config_key` of the per-connection routes."""
    return query.string(
        "provider_config_key",
        required=True,
        pattern=PROVIDER_CONFIG_KEY_PATTERN,
        max_length=MAX_ID_LENGTH,
    )


def webhook_url_override(check: Checker, body: dict[str, Any]) -> str | None:
    """The body's `webhook_url_override` (`""` clears it), or None when absent/invalid."""
    url = check.string(body, "webhook_url_override", required=False)
    if url is None:
        return None
    problem = webhook_url_problem(url)
    if problem is not None:
        check.add("invalid_format", problem, ("webhook_url_override",))
        return None
    return url


def stored_end_user(check: Checker, value: Any, path: Path) -> dict[str, Any] | None:
    """A body's `end_user` in the stored (public §4.6) shape, every field present; None
    with issues recorded when it is invalid."""
    given = end_users.end_user(check, value, path)
    if given is None:
        return None
    return {
        "id": given["id"],
        "email": given.get("email"),
        "display_name": given.get("display_name"),
        "tags": given.get("tags"),
        "organization": None,
    }


def end_user_tags(end_user: dict[str, Any] | None) -> dict[str, str]:
    """The tags derived from a stored end user and its organization (§4.8)."""
    if end_user is None:
        return {}
    return end_users.generated_tags(end_user, end_user.get("organization"))
