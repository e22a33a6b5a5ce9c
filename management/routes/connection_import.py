"""Importing (upserting) an end user's credentials: `POST /connections` (§7.3) and the
deprecated flat `POST /connection` (§7.4).

Both overwrite an existing connection with the same id, so the store's change event is
what makes the proxy use the new credentials at once.

APP imports carry no token: the caller names the GitHub App installation and the server
mints the installation token itself, before anything is stored. A mint that fails
stores nothing and says why (by reason, never by value).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiohttp import web

from credentials.grants import GrantError, GrantRequest, renew
from credentials.models import Connection, Integration, Provider
from credentials.runtime import CoreServices
from management import end_users
from management.connection_fields import (
    CONNECTION_ID_PATTERN,
    MAX_ID_LENGTH,
    PROVIDER_CONFIG_KEY_PATTERN,
    end_user_tags,
    stored_end_user,
    webhook_url_override,
)
from management.errors import ApiError
from management.formatters import connection_json, iso_z
from management.legacy import LegacyError, missing, unknown_provider_config
from management.query import QueryReader
from management.request_context import CORE, ENVIRONMENT, json_body
from management.validation import Checker, Path

EPOCH_MILLISECONDS_THRESHOLD = 100_000_000_000
INVALID_DATE = "Invalid input: expected date, received Invalid Date"
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
    "APP": (("app_id", "installation_id"), ()),
    "NONE": ((), ()),
}
_WITH_RAW = frozenset({"OAUTH2", "OAUTH2_CC", "OAUTH1"})
_EMPTY_ALLOWED = frozenset({"username", "password"})
MINT_FAILED = "connection_test_failed"


# --- POST /connections ---------------------------------------------------------------------


async def import_connection(request: web.Request) -> web.Response:
    query = QueryReader.of(request)
    query.strict()
    query.done()
    core = request.app[CORE]
    environment = request[ENVIRONMENT]
    body = _validated_import(await json_body(request))
    integration = await core.store.get_integration(environment.id, body["provider_config_key"])
    if integration is None:
        raise ApiError(404, "not_found", "Integration does not exist")
    kind = body["credentials"]["type"]
    provider = core.catalogue.get(integration.provider)
    mode = _mode_of(provider)
    if kind != mode:
        raise ApiError(400, "invalid_body", f"Provider {mode} does not support {kind} auth")
    connection_id = body.get("connection_id") or str(uuid.uuid4())
    config = body.get("connection_config") or {}
    if provider is not None and kind == "APP":
        try:
            credentials, config = await _installation_credentials(
                core, integration, provider, connection_id, body["credentials"], config
            )
        except GrantError as failure:
            raise ApiError(400, MINT_FAILED, _mint_failure_message(failure)) from None
    else:
        credentials = _stored_credentials(body["credentials"])
    end_user = body.get("end_user")
    connection = await core.store.upsert_connection(
        environment.id,
        integration,
        connection_id=connection_id,
        credentials=credentials,
        connection_config=config,
        metadata=body.get("metadata") or {},
        tags={**end_user_tags(end_user), **body.get("tags", {})},
        end_user=end_user,
        webhook_url_override=body.get("webhook_url_override"),
    )
    payload = connection_json(connection, credentials=connection.credentials)
    return web.Response(status=201, body=orjson.dumps(payload), content_type="application/json")


def _mode_of(provider: Provider | None) -> str:
    return provider.auth_mode if provider else "UNKNOWN"


async def _installation_credentials(
    core: CoreServices,
    integration: Integration,
    provider: Provider,
    connection_id: str,
    app: dict[str, Any],
    connection_config: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A freshly minted installation token and the connection_config to store with it.

    The named installation goes into connection_config (over whatever the caller sent
    there), where the provider's token URL template reads it. Raises GrantError.
    """
    config = {
        **connection_config,
        "installation_id": app["installation_id"],
        "app_id": app["app_id"],
    }
    # Not stored: it only carries what the grant reads (the config, the credential type).
    provisional = Connection(
        id=0,
        environment_id=integration.environment_id,
        integration_id=integration.id,
        provider_config_key=integration.unique_key,
        provider=integration.provider,
        connection_id=connection_id,
        credentials={"type": "APP"},
        connection_config=config,
    )
    grant = await renew(
        GrantRequest(provisional, integration, provider, core.token_http, time.time())
    )
    stored_config = config if grant.connection_config is None else grant.connection_config
    return grant.credentials, stored_config


def _mint_failure_message(failure: GrantError) -> str:
    # GrantError messages name the reason, status and provider error code only.
    return f"The GitHub App could not mint an installation token: {failure}"


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
            pattern=PROVIDER_CONFIG_KEY_PATTERN,
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
    for key in ("metadata", "connection_config"):
        value = check.optional_object(body, key)
        if value is not None:
            result[key] = value
    if "end_user" in body:
        result["end_user"] = stored_end_user(check, body["end_user"], ("end_user",))
    if "tags" in body:
        result["tags"] = end_users.tag_map(check, body["tags"], ("tags",))
    result["webhook_url_override"] = webhook_url_override(check, body)
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
    moment = parse_moment(value)
    if moment is None:
        check.add("invalid_type", INVALID_DATE, path)
        return None
    return iso_z(moment)


def parse_moment(value: Any) -> datetime | None:
    """An ISO-8601 string or epoch seconds (milliseconds for values that would otherwise
    land thousands of years away, as JavaScript reads them); None if it is no date."""
    moment: datetime | None = None
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    elif isinstance(value, int | float) and not isinstance(value, bool):
        seconds = value / 1000 if abs(value) >= EPOCH_MILLISECONDS_THRESHOLD else value
        try:
            moment = datetime.fromtimestamp(seconds, UTC)
        except (OverflowError, ValueError, OSError):
            return None
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
    except OverflowError:  # e.g. year 1 at +01:00 is before the first UTC instant
        return None
    return moment


# --- POST /connection (deprecated) ---------------------------------------------------------

_LEGACY_ENVELOPE = (
    "provider_config_key",
    "connection_id",
    "metadata",
    "connection_config",
    "webhook_url_override",
    "no_expiration",
    "oauth_client_id_override",
    "oauth_client_secret_override",
    "raw",
)


async def import_connection_legacy(request: web.Request) -> web.Response:
    """The flat import: fields depend on the provider's auth mode, errors use the legacy
    envelope, and the answer echoes the body with `connection_id` filled in."""
    core = request.app[CORE]
    environment = request[ENVIRONMENT]
    raw = await json_body(request)
    body = dict(raw) if isinstance(raw, dict) else {}
    key = body.get("provider_config_key")
    if not key:
        raise missing("missing_provider_config", "Missing param 'provider_config_key'.")
    if not isinstance(key, str) or not PROVIDER_CONFIG_KEY_PATTERN.fullmatch(key):
        raise unknown_provider_config(key, environment.name)
    integration = await core.store.get_integration(environment.id, key)
    if integration is None:
        raise unknown_provider_config(key, environment.name)
    envelope = _legacy_envelope(body)
    provider = core.catalogue.get(integration.provider)
    mode = _mode_of(provider)
    config = envelope["connection_config"]
    connection_id = envelope["connection_id"] or str(uuid.uuid4())
    if provider is not None and mode == "APP":
        credentials, config = await _legacy_installation_credentials(
            core, integration, provider, connection_id, body, config
        )
    else:
        credentials = _legacy_credentials(mode, body, integration, config)
    body["connection_id"] = connection_id
    await core.store.upsert_connection(
        environment.id,
        integration,
        connection_id=connection_id,
        credentials=credentials,
        connection_config=config,
        metadata=envelope["metadata"],
        webhook_url_override=envelope["webhook_url_override"],
    )
    return web.Response(status=201, body=orjson.dumps(body), content_type="application/json")


def _legacy_envelope(body: dict[str, Any]) -> dict[str, Any]:
    """The fields every auth mode shares. The endpoint has no schema in Nango, but an id
    the rest of the API cannot address, or a non-object config, is refused here."""
    check = Checker()
    connection_id = check.string(
        body,
        "connection_id",
        required=False,
        min_length=1,
        max_length=MAX_ID_LENGTH,
        pattern=CONNECTION_ID_PATTERN,
    )
    metadata = _object_or_empty(check, body, "metadata")
    config = _object_or_empty(check, body, "connection_config")
    webhook = webhook_url_override(check, body)
    check.raise_if_invalid()
    return {
        "connection_id": connection_id,
        "metadata": metadata,
        "connection_config": _scopes_as_list(config),
        "webhook_url_override": webhook,
    }


def _object_or_empty(check: Checker, body: dict[str, Any], key: str) -> dict[str, Any]:
    """An object field that may be absent or null (both mean empty)."""
    if body.get(key) is None:
        return {}
    return dict(check.optional_object(body, key) or {})


def _scopes_as_list(config: dict[str, Any]) -> dict[str, Any]:
    scopes = config.get("oauth_scopes_override")
    if isinstance(scopes, str):
        config["oauth_scopes_override"] = scopes.split(",")
    return config


LegacyReader = Callable[[dict[str, Any], Integration, dict[str, Any]], dict[str, Any]]


def _legacy_credentials(
    mode: str, body: dict[str, Any], integration: Integration, config: dict[str, Any]
) -> dict[str, Any]:
    reader = _LEGACY_READERS.get(mode)
    if reader is None:
        raise LegacyError(400, "invalid_auth_mode", f"Unsupported auth type {mode}")
    return reader(body, integration, config)


def _required(body: dict[str, Any], name: str, code: str, message: str) -> str:
    value = body.get(name)
    if not value:
        raise missing(code, message)
    if not isinstance(value, str):
        raise LegacyError(400, code, f"The param '{name}' must be a string.")
    return value


def _optional_string(body: dict[str, Any], name: str) -> str | None:
    value = body.get(name)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise LegacyError(400, "invalid_body", f"The param '{name}' must be a string.")
    return value


def _config_override(body: dict[str, Any]) -> dict[str, str]:
    override: dict[str, str] = {}
    for source, target in (
        ("oauth_client_id_override", "client_id"),
        ("oauth_client_secret_override", "client_secret"),
    ):
        value = _optional_string(body, source)
        if value is not None:
            override[target] = value
    return override


def _legacy_oauth2(body: dict[str, Any], _: Integration, __: dict[str, Any]) -> dict[str, Any]:
    access_token = _required(body, "access_token", "missing_access_token", _MISSING_ACCESS_TOKEN)
    expires_at = _legacy_expiry(body)
    credentials: dict[str, Any] = {"type": "OAUTH2", "access_token": access_token}
    refresh_token = _optional_string(body, "refresh_token")
    if refresh_token is not None:
        credentials["refresh_token"] = refresh_token
    if expires_at is not None:
        credentials["expires_at"] = expires_at
    override = _config_override(body)
    if override:
        credentials["config_override"] = override
    credentials["raw"] = _legacy_raw(body)
    return credentials


def _legacy_expiry(body: dict[str, Any]) -> str | None:
    """`expires_at`, else now + `expires_in` seconds; one of them is required unless
    `no_expiration` is true."""
    if body.get("expires_at"):
        moment = parse_moment(body["expires_at"])
    elif body.get("expires_in"):
        moment = _after(body["expires_in"])
    elif body.get("no_expiration") is True:
        return None
    else:
        raise missing("missing_expires_at", _MISSING_EXPIRES_AT)
    if moment is None:
        raise missing("invalid_expires_at", _INVALID_EXPIRES_AT)
    return iso_z(moment)


def _after(seconds: Any) -> datetime | None:
    if isinstance(seconds, str):
        try:
            seconds = float(seconds)
        except ValueError:
            return None
    if isinstance(seconds, bool) or not isinstance(seconds, int | float):
        return None
    try:
        return datetime.now(UTC) + timedelta(seconds=seconds)
    except (OverflowError, ValueError):
        return None


def _legacy_raw(body: dict[str, Any]) -> Any:
    """The provider's token response as given in `raw`, else the token fields of the body
    (Nango keeps the whole request body; the envelope fields are no token data)."""
    raw = body.get("raw")
    if isinstance(raw, dict):
        return raw
    return {key: value for key, value in body.items() if key not in _LEGACY_ENVELOPE}


def _legacy_oauth2_cc(
    body: dict[str, Any], integration: Integration, _: dict[str, Any]
) -> dict[str, Any]:
    token = _required(body, "access_token", "missing_access_token", _MISSING_ACCESS_TOKEN)
    client = integration.credentials or {}
    override = _config_override(body)
    credentials: dict[str, Any] = {
        "type": "OAUTH2_CC",
        "token": token,
        "client_id": override.get("client_id", client.get("client_id", "")),
        "client_secret": override.get("client_secret", client.get("client_secret", "")),
    }
    if body.get("expires_at"):
        moment = parse_moment(body["expires_at"])
        if moment is None:
            raise missing("invalid_expires_at", _INVALID_EXPIRES_AT)
        credentials["expires_at"] = iso_z(moment)
    credentials["raw"] = _legacy_raw(body)
    return credentials


def _legacy_oauth1(body: dict[str, Any], _: Integration, __: dict[str, Any]) -> dict[str, Any]:
    token = _required(body, "oauth_token", "missing_oauth_token", "Missing param 'oauth_token'.")
    secret = _required(
        body,
        "oauth_token_secret",
        "missing_oauth_token_secret",
        "Missing param 'oauth_token_secret'.",
    )
    return {
        "type": "OAUTH1",
        "oauth_token": token,
        "oauth_token_secret": secret,
        "raw": _legacy_raw(body),
    }


def _legacy_basic(body: dict[str, Any], _: Integration, __: dict[str, Any]) -> dict[str, Any]:
    username = _required(
        body,
        "username",
        "missing_basic_username",
        "Missing param username for basic api authentication.",
    )
    return {
        "type": "BASIC",
        "username": username,
        "password": _optional_string(body, "password") or "",
    }


def _legacy_api_key(body: dict[str, Any], _: Integration, __: dict[str, Any]) -> dict[str, Any]:
    api_key = _required(body, "api_key", "missing_api_key", "Missing param 'api_key'.")
    return {"type": "API_KEY", "apiKey": api_key}


async def _legacy_installation_credentials(
    core: CoreServices,
    integration: Integration,
    provider: Provider,
    connection_id: str,
    body: dict[str, Any],
    config: dict[str, Any],
) -> tuple[dict[str, Any], dict[str, Any]]:
    app = {
        "app_id": _required(body, "app_id", "missing_app_id", "Missing param 'app_id'."),
        "installation_id": _required(
            body, "installation_id", "missing_installation_id", "Missing param 'installation_id'."
        ),
    }
    try:
        return await _installation_credentials(
            core, integration, provider, connection_id, app, config
        )
    except GrantError as failure:
        raise LegacyError(400, MINT_FAILED, _mint_failure_message(failure)) from None


def _legacy_tba(body: dict[str, Any], _: Integration, config: dict[str, Any]) -> dict[str, Any]:
    token_id = _required(body, "token_id", "missing_token_id", "Missing param 'token_id'.")
    secret = _required(
        body, "token_secret", "missing_token_secret", "Missing param 'token_secret'."
    )
    if not config.get("accountId"):
        raise ApiError(
            400,
            "missing_account_id",
            "A TBA connection needs connection_config.accountId.",
        )
    return {
        "type": "TBA",
        "token_id": token_id,
        "token_secret": secret,
        "config_override": _config_override(body),
    }


def _legacy_none(_: dict[str, Any], __: Integration, ___: dict[str, Any]) -> dict[str, Any]:
    return {}


_MISSING_ACCESS_TOKEN = "Missing param 'access_token'."  # noqa: S105  (a message)
_MISSING_EXPIRES_AT = (
    "Importing an OAuth2 token requires the 'expires_at' parameter."
    " If the token doesn't expire pass in the 'no_expiration' parameter"
)
_INVALID_EXPIRES_AT = "The provided 'expires_at' parameter is invalid. It should be a valid date"
_LEGACY_READERS: dict[str, LegacyReader] = {
    "OAUTH2": _legacy_oauth2,
    "OAUTH2_CC": _legacy_oauth2_cc,
    "OAUTH1": _legacy_oauth1,
    "BASIC": _legacy_basic,
    "API_KEY": _legacy_api_key,
    "TBA": _legacy_tba,
    "NONE": _legacy_none,
}
