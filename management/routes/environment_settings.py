"""`/environment/settings`: where auth webhooks go and which are sent, the OAuth callback
URL, and the legacy public key with its HMAC (an authgate extension; Nango keeps these in
its dashboard).

Secrets are write-only: the webhook signing secret and the HMAC key are generated here,
returned once in the PATCH answer that made them, and never shown again (GET says only
whether they exist). A secret is made when it is first needed: the webhook secret when a
webhook URL is first set, the HMAC key when HMAC is first enabled.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
from aiohttp import web

from credentials.environment_settings import (
    EnvironmentSettings,
    EnvironmentSettingsStore,
    generate_secret,
)
from credentials.outbound import OutboundBlocked, check_url
from management.params import add_lenient, reject_body, strict_query
from management.request_context import CORE, ENVIRONMENT, json_body
from management.settings import is_http_url
from management.validation import Checker, type_name
from management.webhook_urls import PRIVATE_ADDRESS, webhook_url_problem

MAX_URL_LENGTH = 2048
GENERATE = frozenset({"generate", "rotate"})
"""A secret-valued field takes one of these words: make a new value (both mean the same)."""

_URL_FIELDS = ("webhook_url", "webhook_secondary_url")
_FLAGS = ("send_auth_creation", "send_auth_refresh_error", "hmac_enabled")
_FIELDS = (*_URL_FIELDS, *_FLAGS, "callback_url", "public_key", "hmac_key", "webhook_secret")


def add_routes(router: web.UrlDispatcher) -> None:
    add_lenient(router, "GET", "/environment/settings", get_settings)
    add_lenient(router, "PATCH", "/environment/settings", patch_settings)


async def get_settings(request: web.Request) -> web.Response:
    strict_query(request)
    await reject_body(request)
    current = await _store(request).get(request[ENVIRONMENT].id)
    return _json({"data": settings_view(current)})


async def patch_settings(request: web.Request) -> web.Response:
    strict_query(request)
    allow_private = request.app[CORE].settings.allow_private_upstreams
    store = _store(request)
    environment_id = request[ENVIRONMENT].id
    current = await store.get(environment_id)
    changes = _validated_changes(await json_body(request), current, allow_private)
    revealed = _fill_in_secrets(changes, current)
    updated = await store.update(environment_id, **changes) if changes else current
    view = settings_view(updated)
    view.update({name: changes[name] for name in revealed})
    return _json({"data": view})


def settings_view(settings: EnvironmentSettings) -> dict[str, Any]:
    """Everything but the secrets, which are only said to exist."""
    return {
        "callback_url": settings.callback_url,
        "webhook_url": settings.webhook_url,
        "webhook_secondary_url": settings.webhook_secondary_url,
        "send_auth_creation": settings.send_auth_creation,
        "send_auth_refresh_error": settings.send_auth_refresh_error,
        "has_webhook_secret": settings.webhook_secret is not None,
        "public_key": settings.public_key,
        "hmac_enabled": settings.hmac_enabled,
        "has_hmac_key": settings.hmac_key is not None,
    }


# --- validation ------------------------------------------------------------------------


def _validated_changes(
    body: Any, current: EnvironmentSettings, allow_private: bool
) -> dict[str, Any]:
    check = Checker()
    fields = check.expect_object({} if body is None else body)
    if fields is None:
        check.raise_if_invalid()
        return {}
    check.strict(fields, _FIELDS)
    changes: dict[str, Any] = {}
    for name in _URL_FIELDS:
        if name in fields:
            changes[name] = _webhook_url(check, fields[name], name, allow_private)
    if "callback_url" in fields:
        changes["callback_url"] = _callback_url(check, fields["callback_url"])
    for name in _FLAGS:
        value = check.boolean(fields, name)
        if value is not None:
            changes[name] = value
    if "public_key" in fields:
        changes["public_key"] = _generated(check, fields, "public_key", nullable=True)
    if "hmac_key" in fields:
        changes["hmac_key"] = _generated(check, fields, "hmac_key", nullable=True)
    if "webhook_secret" in fields:
        changes["webhook_secret"] = _generated(check, fields, "webhook_secret", nullable=False)
    _check_hmac(check, changes, current)
    check.raise_if_invalid()
    return changes


def _webhook_url(check: Checker, value: Any, name: str, allow_private: bool) -> str | None:
    """None clears (so does ""); a URL must be one authgate may post to."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        message = f"Invalid input: expected string, received {type_name(value)}"
        check.add("invalid_type", message, (name,))
        return None
    problem = _webhook_url_problem(value, allow_private)
    if problem is not None:
        check.add("invalid_format", problem, (name,))
        return None
    return value


def _webhook_url_problem(url: str, allow_private: bool) -> str | None:
    if len(url) > MAX_URL_LENGTH:
        return f"Too big: expected string to have <={MAX_URL_LENGTH} characters"
    problem = webhook_url_problem(url)
    if problem is not None and not (problem == PRIVATE_ADDRESS and allow_private):
        return problem
    try:
        check_url(url, allow_private=allow_private)
    except OutboundBlocked as blocked:
        return f"Webhook URL refused by the outbound policy: {blocked.reason}"
    return None


def _callback_url(check: Checker, value: Any) -> str | None:
    """Where providers send the browser back: any absolute http(s) URL (the browser, not
    authgate, goes there, so the outbound policy does not apply)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        message = f"Invalid input: expected string, received {type_name(value)}"
        check.add("invalid_type", message, ("callback_url",))
        return None
    if len(value) > MAX_URL_LENGTH or not is_http_url(value):
        check.add("invalid_format", "Invalid URL", ("callback_url",))
        return None
    return value


def _generated(check: Checker, fields: dict[str, Any], name: str, *, nullable: bool) -> Any:
    """`"generate"`/`"rotate"` → a marker replaced by a new value; null removes."""
    value = fields[name]
    if value is None and nullable:
        return None
    if value in GENERATE:
        return _GENERATE
    allowed = '"generate", "rotate"' + (" or null" if nullable else "")
    check.add("invalid_value", f"Invalid input: expected {allowed}", (name,))
    return None


_GENERATE = object()


def _check_hmac(check: Checker, changes: dict[str, Any], current: EnvironmentSettings) -> None:
    enabled = changes.get("hmac_enabled", current.hmac_enabled)
    if enabled and "hmac_key" in changes and changes["hmac_key"] is None:
        check.add("custom", "The HMAC key cannot be removed while HMAC is enabled", ("hmac_key",))


# --- secrets -------------------------------------------------------------------------------


def _fill_in_secrets(changes: dict[str, Any], current: EnvironmentSettings) -> list[str]:
    """Generate what was asked for, and what a change needs: a webhook secret once a
    webhook URL exists, an HMAC key once HMAC is on. Returns the secrets to reveal."""
    if changes.get("public_key") is _GENERATE:
        changes["public_key"] = str(uuid.uuid4())
    revealed = []
    webhooks_on = any(changes.get(name, getattr(current, name)) for name in _URL_FIELDS)
    if changes.get("webhook_secret") is _GENERATE or (
        webhooks_on and current.webhook_secret is None and "webhook_secret" not in changes
    ):
        changes["webhook_secret"] = generate_secret()
        revealed.append("webhook_secret")
    hmac_on = changes.get("hmac_enabled", current.hmac_enabled)
    key_after = changes.get("hmac_key", current.hmac_key)
    if changes.get("hmac_key") is _GENERATE or (hmac_on and key_after is None):
        changes["hmac_key"] = generate_secret()
        revealed.append("hmac_key")
    return revealed


def _store(request: web.Request) -> EnvironmentSettingsStore:
    return EnvironmentSettingsStore(request.app[CORE].store)


def _json(body: dict[str, Any]) -> web.Response:
    return web.Response(body=orjson.dumps(body), content_type="application/json")
