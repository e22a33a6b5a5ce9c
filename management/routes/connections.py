"""`/connections`: import (upsert) an end user's credentials for one integration."""

from __future__ import annotations

import ipaddress
import re
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from aiohttp import web

from management.errors import ApiError
from management.formatters import connection_json, iso_z
from management.request_context import CORE, ENVIRONMENT, json_body, reject_query
from management.routes.integrations import UNIQUE_KEY_PATTERN
from management.validation import Checker, Path

# Nango's connection id rule: letters, digits and a fixed set of punctuation (no controls).
CONNECTION_ID_PATTERN = re.compile(r"^[a-zA-Z0-9,.;:=+~\[\]|@${}\"'\\/_ -]+$")
TAG_KEY_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9_\-./]*$")
EMAIL_PATTERN = re.compile(
    r"^(?!\.)(?!.*\.\.)[A-Za-z0-9_'+\-.]*[A-Za-z0-9_+-]@([A-Za-z0-9][A-Za-z0-9\-]*\.)+[A-Za-z]{2,}$"
)
MAX_TAGS = 10
EPOCH_MILLISECONDS_THRESHOLD = 100_000_000_000
MAX_ID_LENGTH = 255
_IMPORT_FIELDS = (
    "provider_config_key",
    "connection_id",
    "credentials",
    "metadata",
    "connection_config",
    "webhook_url_override",
    "end_user",
    "tags",
)
# Stored credential fields per type: (required, optional).
_CREDENTIAL_FIELDS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "OAUTH2": (("access_token",), ("refresh_token", "expires_at", "config_override")),
    "OAUTH2_CC": (
        ("token", "client_id", "client_secret"),
        ("client_certificate", "client_private_key", "expires_at"),
    ),
    "OAUTH1": (("oauth_token", "oauth_token_secret"), ()),
    "API_KEY": (("apiKey",), ()),
    "BASIC": (("username", "password"), ()),
    "TBA": (("token_id", "token_secret"), ("config_override",)),
    "NONE": ((), ()),
}
_WITH_RAW = frozenset({"OAUTH2", "OAUTH2_CC", "OAUTH1"})
_EMPTY_ALLOWED = frozenset({"username", "password"})


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/connections", import_connection)
    router.add_post("/connections/", import_connection)


async def import_connection(request: web.Request) -> web.Response:
    reject_query(request)
    core = request.app[CORE]
    environment = request[ENVIRONMENT]
    body = _validated_import(await json_body(request))
    integration = await core.store.get_integration(environment.id, body["provider_config_key"])
    if integration is None:
        raise ApiError(404, "not_found", "Integration does not exist")
    provider = core.catalogue.get(integration.provider)
    kind = body["credentials"]["type"]
    mode = provider.auth_mode if provider else "UNKNOWN"
    if kind != mode and not (kind == "NONE" and mode == "NONE"):
        raise ApiError(400, "invalid_body", f"Provider {mode} does not support {kind} auth")
    connection = await core.store.upsert_connection(
        environment.id,
        integration,
        connection_id=body.get("connection_id") or str(uuid.uuid4()),
        credentials=_stored_credentials(body["credentials"]),
        connection_config=body.get("connection_config") or {},
        metadata=body.get("metadata") or {},
        tags=body.get("tags") or {},
        end_user=body.get("end_user"),
    )
    payload = connection_json(connection, credentials=connection.credentials)
    return web.Response(status=201, body=orjson.dumps(payload), content_type="application/json")


def _stored_credentials(credentials: dict[str, Any]) -> dict[str, Any]:
    kind = credentials["type"]
    if kind == "NONE":
        return {}
    stored = dict(credentials)
    if kind in _WITH_RAW:
        stored["raw"] = {key: value for key, value in credentials.items() if key != "type"}
    return stored


def _validated_import(raw: Any) -> dict[str, Any]:
    check = Checker()
    body = check.expect_object(raw) or {}
    check.strict(body, _IMPORT_FIELDS)
    result: dict[str, Any] = {
        "provider_config_key": check.string(
            body,
            "provider_config_key",
            min_length=1,
            max_length=MAX_ID_LENGTH,
            pattern=UNIQUE_KEY_PATTERN,
        ),
    }
    connection_id = check.string(
        body,
        "connection_id",
        required=False,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=CONNECTION_ID_PATTERN,
    )
    if connection_id is not None:
        result["connection_id"] = connection_id
    for key in ("metadata", "connection_config", "end_user"):
        value = check.optional_object(body, key)
        if value is not None:
            result[key] = value
    tags = _tags(check, body)
    if tags is not None:
        result["tags"] = tags
    webhook = check.string(body, "webhook_url_override", required=False)
    if webhook is not None:
        problem = _webhook_url_problem(webhook)
        if problem is not None:
            check.add("invalid_format", problem, ("webhook_url_override",))
        result["webhook_url_override"] = webhook
    result["credentials"] = _credentials(check, body.get("credentials"), "credentials" in body)
    check.raise_if_invalid()
    return result


def _credentials(check: Checker, raw: Any, present: bool) -> dict[str, Any]:
    path: Path = ("credentials",)
    if not present:
        check.add("invalid_type", "Invalid input: expected object, received undefined", path)
        return {}
    credentials = check.expect_object(raw, path)
    if credentials is None:
        return {}
    kind = credentials.get("type")
    if not isinstance(kind, str) or kind not in _CREDENTIAL_FIELDS:
        check.add("invalid_union", "invalid credentials object", (*path, "type"))
        return {}
    required, optional = _CREDENTIAL_FIELDS[kind]
    check.strict(credentials, ("type", *required, *optional), path)
    result: dict[str, Any] = {"type": kind}
    for name in required:
        minimum = 0 if name in _EMPTY_ALLOWED else 1
        result[name] = check.string(credentials, name, path, min_length=minimum)
    for name in optional:
        if name in credentials:
            result[name] = _optional_credential(check, credentials, name, path)
    return result


def _optional_credential(check: Checker, credentials: dict[str, Any], name: str, path: Path) -> Any:
    if name == "expires_at":
        return _expires_at(check, credentials[name], (*path, name))
    if name == "config_override":
        override = check.expect_object(credentials[name], (*path, name)) or {}
        check.strict(override, ("client_id", "client_secret"), (*path, name))
        return {key: check.string(override, key, (*path, name)) for key in override}
    return check.string(credentials, name, path)


def _expires_at(check: Checker, value: Any, path: Path) -> str | None:
    """Any ISO-8601 date or epoch seconds; stored as `toISOString()` does."""
    moment: datetime | None = None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            moment = None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        # Epoch seconds, or milliseconds (Nango's JavaScript reading) for values that
        # would otherwise land thousands of years away.
        seconds = value / 1000 if abs(value) >= EPOCH_MILLISECONDS_THRESHOLD else value
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, ValueError, OSError):
            moment = None
    if moment is None:
        check.add("invalid_type", "Invalid input: expected date, received Invalid Date", path)
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return iso_z(moment)
    except OverflowError:  # e.g. year 1 at +01:00 is before the first UTC instant
        check.add("invalid_type", "Invalid input: expected date, received Invalid Date", path)
        return None


def _webhook_url_problem(url: str) -> str | None:
    """Why the URL may not receive webhooks, or None. `""` clears the override."""
    if url == "":
        return None
    try:
        parts = urlsplit(url)
        host = (parts.hostname or "").rstrip(".").lower()
    except ValueError:
        return "Invalid URL"
    if parts.scheme not in ("http", "https") or not host:
        return "Invalid URL"
    if host == "nango.dev" or host.endswith(".nango.dev"):
        return "Webhook URL cannot point to nango.dev"
    if host == "localhost" or host.endswith(".localhost"):
        return "Webhook URL cannot point to a loopback, private or link-local address"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address.is_loopback or address.is_private or address.is_link_local:
        return "Webhook URL cannot point to a loopback, private or link-local address"
    if address.is_unspecified:
        return "Webhook URL cannot point to a loopback, private or link-local address"
    return None


def _tags(check: Checker, body: dict[str, Any]) -> dict[str, str] | None:
    tags = check.string_map(body, "tags", max_value=255)
    if tags is None:
        return None
    if len(tags) > MAX_TAGS:
        check.add("too_big", f"Too big: expected object to have <={MAX_TAGS} keys", ("tags",))
    normalised: dict[str, str] = {}
    for key, value in tags.items():
        if len(key) > 64 or not TAG_KEY_PATTERN.fullmatch(key):
            check.add("invalid_key", f"Invalid tag key: {key!r}", ("tags", key))
        elif key.lower() in normalised:
            check.add(
                "custom", f'Duplicate tag key after case normalization: "{key}"', ("tags", key)
            )
        elif not value:
            check.add(
                "too_small", "Too small: expected string to have >=1 characters", ("tags", key)
            )
        elif key.lower() == "end_user_email" and not EMAIL_PATTERN.fullmatch(value):
            check.add("invalid_format", "Invalid email address", ("tags", key))
        else:
            normalised[key.lower()] = value
    return normalised
