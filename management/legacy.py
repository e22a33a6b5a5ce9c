"""Errors of Nango's deprecated endpoints (legacy import, per-id metadata).

Those endpoints answer in the older envelope, `{"error": {"message", "code", "payload"}}`,
and two of its messages end with the payload printed as indented JSON (§3.2).
"""

from __future__ import annotations

import json
from typing import Any

from management.errors import ApiError

UNKNOWN_CONNECTION = (
    "No connection matching the provided params of 'connection_id' and 'provider_config_key'."
    " Please make sure these values exist in the Nango dashboard "
)
UNKNOWN_PROVIDER_CONFIG = (
    "There is no Provider Configuration matching this key."
    " Please make sure this value exists in the Nango dashboard "
)


class LegacyError(ApiError):
    def __init__(
        self, status: int, code: str, message: str, payload: dict[str, Any] | None = None
    ) -> None:
        super().__init__(status, code, message)
        self.payload = payload or {}

    def body(self) -> dict[str, Any]:
        error: dict[str, Any] = {"code": self.code, "payload": self.payload}
        if self.message:
            error = {"message": self.message, **error}
        return {"error": error}


def pretty(payload: dict[str, Any]) -> str:
    """`JSON.stringify(payload, null, 2)`."""
    return json.dumps(payload, indent=2, ensure_ascii=False)


def unknown_connection(
    connection_id: str, provider_config_key: str, environment: str
) -> LegacyError:
    payload = {
        "connectionId": connection_id,
        "providerConfigKey": provider_config_key,
        "environmentName": environment,
    }
    return LegacyError(404, "unknown_connection", UNKNOWN_CONNECTION + pretty(payload), payload)


def unknown_provider_config(provider_config_key: Any, environment: str) -> LegacyError:
    payload = {"providerConfigKey": provider_config_key, "environmentName": environment}
    return LegacyError(
        400, "unknown_provider_config", UNKNOWN_PROVIDER_CONFIG + pretty(payload), payload
    )


def missing(code: str, message: str) -> LegacyError:
    return LegacyError(400, code, message)
