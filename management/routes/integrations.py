"""`/integrations`: one environment's configurations of catalogue providers."""

from __future__ import annotations

import re
from typing import Any

import orjson
from aiohttp import web

from credentials.models import AuthMode
from credentials.store import AlreadyExists
from management.errors import ApiError, ValidationFailed, issue
from management.formatters import integration_json
from management.request_context import CORE, ENVIRONMENT, SETTINGS, json_body, reject_query
from management.validation import Checker

PROVIDER_PATTERN = re.compile(r"^[a-zA-Z0-9_-]+$")
UNIQUE_KEY_PATTERN = re.compile(r"^[a-zA-Z0-9~:.@ _-]+$")
SCOPES_PATTERN = re.compile(r"^$|^[0-9a-zA-Z:/_.*-]+(,[0-9a-zA-Z:/_.*-]+)*$")
_NEEDS_CLIENT = frozenset({AuthMode.OAUTH1, AuthMode.OAUTH2, AuthMode.APP, AuthMode.CUSTOM})
_CREATE_FIELDS = (
    "provider",
    "unique_key",
    "display_name",
    "forward_webhooks",
    "credentials",
    "integration_config",
    "custom",
)
_OAUTH_FIELDS = ("type", "client_id", "client_secret", "scopes", "webhook_secret")
_APP_FIELDS = ("type", "app_id", "app_link", "private_key")
_CUSTOM_FIELDS = ("type", "client_id", "client_secret", "app_id", "app_link", "private_key")
_RSA_BEGIN = "-----BEGIN RSA PRIVATE KEY----"
_RSA_END = "-----END RSA PRIVATE KEY-----"


def add_routes(router: web.UrlDispatcher) -> None:
    router.add_post("/integrations", create_integration)
    router.add_post("/integrations/", create_integration)


async def create_integration(request: web.Request) -> web.Response:
    reject_query(request)
    core = request.app[CORE]
    body = _validated_create(await json_body(request))
    provider = core.catalogue.get(body["provider"])
    if provider is None:
        raise ValidationFailed(
            "invalid_body", [issue("invalid_string", "Invalid provider", "provider")]
        )
    credentials = body.get("credentials")
    if credentials is not None and credentials["type"] != provider.auth_mode:
        raise ApiError(400, "invalid_body", "incompatible credentials auth type and provider auth")
    if credentials is None and provider.auth_mode in _NEEDS_CLIENT:
        raise ApiError(400, "invalid_body", "Missing credentials")
    custom = body.get("custom") or body.get("integration_config")
    try:
        integration = await core.store.create_integration(
            request[ENVIRONMENT].id,
            unique_key=body["unique_key"],
            provider=provider.name,
            display_name=body.get("display_name"),
            forward_webhooks=body.get("forward_webhooks", True),
            credentials=credentials,
            custom=custom,
        )
    except AlreadyExists:
        raise ValidationFailed(
            "invalid_body", [issue("invalid_string", "Unique key already exists", "uniqueKey")]
        ) from None
    data = integration_json(integration, provider, request.app[SETTINGS].public_url)
    return web.Response(body=orjson.dumps({"data": data}), content_type="application/json")


def _validated_create(raw: Any) -> dict[str, Any]:
    check = Checker()
    body = check.expect_object(raw)
    if body is None:
        check.raise_if_invalid()
        raise AssertionError("unreachable")
    check.strict(body, _CREATE_FIELDS)
    result: dict[str, Any] = {
        "provider": check.string(body, "provider", pattern=PROVIDER_PATTERN, max_length=255),
        "unique_key": check.string(body, "unique_key", pattern=UNIQUE_KEY_PATTERN, max_length=255),
    }
    display_name = check.string(body, "display_name", required=False, min_length=1, max_length=255)
    if display_name is not None:
        result["display_name"] = display_name
    forward = check.boolean(body, "forward_webhooks")
    if forward is not None:
        result["forward_webhooks"] = forward
    for key in ("integration_config", "custom"):
        mapping = check.string_map(body, key, max_value=8192)
        if mapping is not None:
            result[key] = mapping
    if "credentials" in body:
        result["credentials"] = _validated_credentials(check, body["credentials"])
    check.raise_if_invalid()
    return result


def _validated_credentials(check: Checker, raw: Any) -> dict[str, Any] | None:
    path = ("credentials",)
    credentials = check.expect_object(raw, path)
    if credentials is None:
        return None
    kind = credentials.get("type")
    if kind in ("OAUTH1", "OAUTH2", "TBA"):
        return _oauth_client(check, credentials, path)
    if kind == "APP":
        return _app_client(check, credentials, path, _APP_FIELDS)
    if kind == "CUSTOM":
        return _app_client(check, credentials, path, _CUSTOM_FIELDS)
    check.add("invalid_union", "invalid credentials object", (*path, "type"))
    return None


def _oauth_client(
    check: Checker, credentials: dict[str, Any], path: tuple[str, ...]
) -> dict[str, Any]:
    check.strict(credentials, _OAUTH_FIELDS, path)
    result: dict[str, Any] = {
        "type": credentials["type"],
        "client_id": check.string(credentials, "client_id", path, min_length=1, max_length=255),
        "client_secret": check.string(credentials, "client_secret", path, min_length=1),
    }
    scopes = check.string(credentials, "scopes", path, required=False, pattern=SCOPES_PATTERN)
    if scopes is not None:
        result["scopes"] = scopes
    secret = check.string(credentials, "webhook_secret", path, required=False, max_length=255)
    if secret is not None:
        result["webhook_secret"] = secret
    return result


def _app_client(
    check: Checker, credentials: dict[str, Any], path: tuple[str, ...], fields: tuple[str, ...]
) -> dict[str, Any]:
    check.strict(credentials, fields, path)
    result: dict[str, Any] = {"type": credentials["type"]}
    for name in fields[1:]:
        minimum = 1 if name != "private_key" else 0
        result[name] = check.string(credentials, name, path, min_length=minimum, max_length=None)
    key = result.get("private_key")
    if isinstance(key, str) and not (
        key.startswith(_RSA_BEGIN) and key.rstrip().endswith(_RSA_END)
    ):
        check.add(
            "invalid_format", "Invalid private key: expected an RSA PEM key", (*path, "private_key")
        )
    return result
