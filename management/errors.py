"""Errors of the management API and their JSON envelopes (Nango's shapes).

ApiError                      status, code, message, optional `errors` / `payload`
 ├── ValidationFailed         400  invalid_body / invalid_query_params / invalid_uri_params
 └── AuthenticationFailed     401  legacy shape with `payload: {}`

The credential store being unreachable is a 503 `store_unavailable` with `Retry-After`.
"""

from __future__ import annotations

from typing import Any

import orjson
from aiohttp import web

ERROR_HEADER = "X-Authgate-Error"
STORE_UNAVAILABLE_CODE = "store_unavailable"
STORE_UNAVAILABLE_MESSAGE = "The credential store is unreachable; try again"
# Seconds; an outage is usually a restart or failover, so retrying soon is reasonable.
STORE_UNAVAILABLE_RETRY_AFTER = 1

Issue = dict[str, Any]


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str | None = None) -> None:
        super().__init__(message or code)
        self.status = status
        self.code = code
        self.message = message

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code}
        if self.message is not None:
            error["message"] = self.message
        return {"error": error}


class ValidationFailed(ApiError):
    def __init__(self, code: str, issues: list[Issue]) -> None:
        super().__init__(400, code, _summary(issues))
        self.issues = issues

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "errors": self.issues}}


class AuthenticationFailed(ApiError):
    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "code": self.code, "payload": {}}}


def issue(code: str, message: str, *path: str) -> Issue:
    return {"code": code, "message": message, "path": list(path)}


def error_response(error: ApiError) -> web.Response:
    return web.Response(
        status=error.status,
        body=orjson.dumps(error.body()),
        content_type="application/json",
        headers={ERROR_HEADER: error.code},
    )


def store_unavailable_response() -> web.Response:
    response = error_response(ApiError(503, STORE_UNAVAILABLE_CODE, STORE_UNAVAILABLE_MESSAGE))
    response.headers["Retry-After"] = str(STORE_UNAVAILABLE_RETRY_AFTER)
    return response


def _summary(issues: list[Issue]) -> str:
    fields = sorted({".".join(item["path"]) or "(body)" for item in issues})
    return f"Invalid fields: {', '.join(fields)}"
