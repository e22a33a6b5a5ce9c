"""Control-plane settings: read once from the environment, frozen, validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from credentials.config import ConfigError, CoreSettings, read_int, read_str

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3003
CONNECT_UI_URL_VARIABLE = "AUTHGATE_CONNECT_UI_URL"


@dataclass(frozen=True, slots=True)
class ManagementSettings:
    """`public_url` is how callers reach this server; it prefixes logo and callback URLs.
    `connect_ui_url` is where the Connect UI is served; connect links point there."""

    core: CoreSettings = field(default_factory=CoreSettings)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public_url: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"
    connect_ui_url: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}/connect"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ManagementSettings:
        host = read_str(environ, "AUTHGATE_HOST", DEFAULT_HOST) or DEFAULT_HOST
        port = read_int(environ, "AUTHGATE_PORT", DEFAULT_PORT, minimum=0, maximum=65535)
        public_url = read_str(environ, "AUTHGATE_PUBLIC_URL") or f"http://{host}:{port}"
        if not public_url.startswith(("http://", "https://")):
            raise ConfigError("AUTHGATE_PUBLIC_URL", "expected an http:// or https:// URL")
        public_url = public_url.rstrip("/")
        connect_ui_url = read_str(environ, CONNECT_UI_URL_VARIABLE) or f"{public_url}/connect"
        return cls(
            core=CoreSettings.from_env(environ),
            host=host,
            port=port,
            public_url=public_url,
            connect_ui_url=_checked_connect_ui_url(connect_ui_url),
        )


def _checked_connect_ui_url(url: str) -> str:
    """An http(s) URL with a host and no query or fragment: the session token is appended
    as the query (`?session_token=`), so anything already there would garble the link."""
    if not is_http_url(url):
        raise ConfigError(CONNECT_UI_URL_VARIABLE, "expected an http:// or https:// URL")
    if "?" in url or "#" in url:
        raise ConfigError(CONNECT_UI_URL_VARIABLE, "must not carry a query or a fragment")
    return url


def is_http_url(url: str) -> bool:
    """An absolute http(s) URL with a host, a valid port and no whitespace or controls."""
    if any(character.isspace() or ord(character) < 0x20 for character in url):
        return False
    try:
        parts = urlsplit(url)
        _ = parts.port  # raises on a port that is not a number in range
    except ValueError:
        return False
    return parts.scheme in ("http", "https") and bool(parts.hostname)
