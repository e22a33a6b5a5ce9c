"""What routes read from a request: the environment, the services, the JSON body."""

from __future__ import annotations

from typing import Any, Literal, Protocol

import orjson
from aiohttp import web

from credentials.models import Connection, Environment
from credentials.runtime import CoreServices
from management.errors import ApiError
from management.sessions import ConnectSessionPrincipal
from management.settings import ManagementSettings
from management.validation import Checker


class ResultPublisher(Protocol):
    """Tells the browser that started an authorisation how it ended, over the WebSocket
    it opened (`ws_client_id`), on whichever replica holds that socket."""

    async def publish_success(
        self,
        ws_client_id: str,
        provider_config_key: str,
        connection_id: str,
        *,
        is_pending: bool = False,
    ) -> None: ...

    async def publish_error(self, ws_client_id: str, error_type: str, error_desc: str) -> None: ...


class AuthEvents(Protocol):
    """Where the auth flows report outcomes for auth webhooks (an outbox in the store)."""

    async def connection_created(
        self,
        environment: Environment,
        connection: Connection,
        auth_mode: str,
        *,
        operation: Literal["creation", "override"],
    ) -> None: ...

    async def connection_creation_failed(
        self,
        environment: Environment,
        *,
        provider_config_key: str,
        connection_id: str | None,
        provider: str,
        auth_mode: str,
        error_type: str,
        error_description: str,
        end_user: dict[str, Any] | None = None,
        tags: dict[str, str] | None = None,
    ) -> None: ...


CORE = web.AppKey("management_core", CoreServices)
PUBLISHER = web.AppKey("result_publisher", ResultPublisher)
"""Set by the WebSocket module when the app serves it; flows skip publishing without it."""
AUTH_EVENTS = web.AppKey("auth_events", AuthEvents)
"""Set when auth webhooks are wired; flows skip reporting without it."""
SETTINGS = web.AppKey("management_settings", ManagementSettings)
ENVIRONMENT = web.RequestKey("environment", Environment)
# Set only when the caller authenticated with a connect-session token.
CONNECT_SESSION = web.RequestKey("connect_session", ConnectSessionPrincipal)


async def json_body(request: web.Request) -> Any:
    """The parsed JSON body; an empty body counts as none.

    Besides the syntax, the whole tree is checked for what the store cannot keep (too deep
    a nesting, NUL characters), so no route has to think about it.
    """
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        limit = request.client_max_size
        raise ApiError(
            413, "payload_too_large", f"The request body is larger than {limit} bytes"
        ) from None
    if not raw.strip():
        return None
    try:
        value = orjson.loads(raw)
    except orjson.JSONDecodeError as problem:
        raise ApiError(400, "invalid_json", str(problem)) from None
    check = Checker()
    check.json_tree(value)
    check.raise_if_invalid()
    return value


def reject_query(request: web.Request) -> None:
    """Endpoints that take no query parameters refuse any (Nango's strictness)."""
    if request.query_string:
        keys = ", ".join(sorted(set(request.query.keys()))) or request.query_string
        raise ApiError(400, "invalid_query_params", f"Unexpected query parameters: {keys}")
