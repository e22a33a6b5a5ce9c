"""Nango's proxy wire contract: control header names and the error codes clients match on.

Names live here only, so a rename or an audit touches one file.
"""

from __future__ import annotations

from typing import Final

PROXY_PREFIX: Final = "/proxy"

# Control headers (compared lower-case; aiohttp's CIMultiDict lookups are case-insensitive).
AUTHORIZATION: Final = "Authorization"
CONNECTION_ID: Final = "Connection-Id"
PROVIDER_CONFIG_KEY: Final = "Provider-Config-Key"
BASE_URL_OVERRIDE: Final = "Base-Url-Override"
RETRIES: Final = "Retries"
RETRY_ON: Final = "Retry-On"
DECOMPRESS: Final = "Decompress"
ACTIVITY_LOG_ID: Final = "Nango-Activity-Log-Id"
FORWARD_HEADERS_ON_REDIRECT: Final = "Forward-Headers-On-Redirect"

# Headers authgate adds to its own answers.
ERROR_HEADER: Final = "X-Authgate-Error"
REQUEST_ID_HEADER: Final = "X-Authgate-Request-Id"

MAX_HEADER_VALUE: Final = 255
MAX_RETRIES: Final = 10

# Error codes (Nango's where Nango has one; ours otherwise).
MISSING_AUTH_HEADER: Final = "missing_auth_header"
MALFORMED_AUTH_HEADER: Final = "malformed_auth_header"
INVALID_SECRET_KEY_FORMAT: Final = "invalid_secret_key_format"  # noqa: S105 - an error code
UNKNOWN_ACCOUNT: Final = "unknown_account"
INVALID_HEADERS: Final = "invalid_headers"
UNKNOWN_CONNECTION: Final = "unknown_connection"
INVALID_CREDENTIALS: Final = "invalid_credentials"
REFRESH_BACKOFF: Final = "connection_refresh_backoff"
REFRESH_FAILED: Final = "credentials_refresh_failed"
UNKNOWN_PROVIDER: Final = "unknown_provider"
UNSUPPORTED_PROVIDER: Final = "unsupported_provider"
UNSUPPORTED_AUTH: Final = "unsupported_auth"
MISSING_CONNECTION_CONFIG: Final = "missing_connection_config"
OUTBOUND_NOT_ALLOWED: Final = "base_url_override_not_allowed"
PAYLOAD_TOO_LARGE: Final = "payload_too_large"
UPSTREAM_TIMEOUT: Final = "upstream_timeout"
UPSTREAM_UNREACHABLE: Final = "upstream_unreachable"
SERVICE_UNAVAILABLE: Final = "service_unavailable"
SERVER_ERROR: Final = "server_error"
INVALID_REQUEST: Final = "invalid_request"


def unknown_connection_message(connection_id: str, provider_config_key: str) -> str:
    return (
        f"Connection not found for connection_id: {connection_id} "
        f"and provider_config_key: {provider_config_key}"
    )
