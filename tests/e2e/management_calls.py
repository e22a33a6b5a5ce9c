"""Calling the management API the way a client does, with the checks every answer owes us.

`call` sends one request over the real socket and returns (status, parsed JSON). Whatever
the request, the answer must be JSON, and an error must carry Nango's envelope and name
its code in the `X-Authgate-Error` header; a 5xx is never acceptable here.
"""

from __future__ import annotations

import io
from typing import Any

from yarl import URL

from tests.e2e.conftest import Authgate, json_of

NO_BODY: Any = object()

# Every field of the full connection object (§4.5 of the management API reference).
CONNECTION_FIELDS = {
    "id",
    "connection_id",
    "provider_config_key",
    "provider",
    "errors",
    "end_user",
    "tags",
    "metadata",
    "connection_config",
    "webhook_url_override",
    "created_at",
    "updated_at",
    "last_fetched_at",
    "credentials",
}


async def call(
    authgate: Authgate,
    method: str,
    path: str,
    *,
    body: Any = NO_BODY,
    raw: bytes | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
    auth: bool = True,
) -> tuple[int, Any]:
    """`path` goes on the wire as written (already percent-encoded, query included)."""
    sent = {**(authgate.auth(key) if auth else {}), **(headers or {})}
    url = URL(str(authgate.url).rstrip("/") + path, encoded=True)
    if raw is not None:
        response = await authgate.session.request(
            method, url, data=io.BytesIO(raw), headers=sent, skip_auto_headers=["Content-Type"]
        )
    elif body is NO_BODY:
        # aiohttp would label an empty POST application/octet-stream (a 415 here).
        response = await authgate.session.request(
            method, url, headers=sent, skip_auto_headers=["Content-Type"]
        )
    else:
        response = await authgate.session.request(method, url, json=body, headers=sent)
    payload = await json_of(response)
    assert response.content_type == "application/json", (response.status, payload)
    assert response.status < 500, payload
    if response.status >= 400:
        assert set(payload) == {"error"}, payload
        assert response.headers["X-Authgate-Error"] == payload["error"]["code"]
    return response.status, payload


def assert_error(
    status: int, payload: Any, expected_status: int, code: str, message: str | None = None
) -> None:
    """An error with exactly this code (and message, when given)."""
    assert status == expected_status, payload
    assert payload["error"]["code"] == code, payload
    if message is not None:
        assert payload["error"]["message"] == message, payload


def assert_issue(
    status: int, payload: Any, code: str, path: list[str], issue_code: str | None = None
) -> dict[str, Any]:
    """A 400 validation error (`code`) with an issue at `path`; returns that issue."""
    assert status == 400, payload
    assert payload["error"]["code"] == code, payload
    issues = payload["error"]["errors"]
    for item in issues:
        assert set(item) == {"code", "message", "path"}, item
        assert item["message"], item
    matching = [item for item in issues if item["path"] == path]
    assert matching, f"no issue at {path}: {payload}"
    if issue_code is not None:
        assert issue_code in {item["code"] for item in matching}, payload
    first: dict[str, Any] = matching[0]
    return first
