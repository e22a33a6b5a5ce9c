"""Control-plane settings: read once from the environment, frozen, validated at start."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from credentials.config import ConfigError, CoreSettings, read_int, read_str

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 3003


@dataclass(frozen=True, slots=True)
class ManagementSettings:
    """`public_url` is how callers reach this server; it prefixes logo and callback URLs."""

    core: CoreSettings = field(default_factory=CoreSettings)
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    public_url: str = f"http://{DEFAULT_HOST}:{DEFAULT_PORT}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ManagementSettings:
        host = read_str(environ, "AUTHGATE_HOST", DEFAULT_HOST) or DEFAULT_HOST
        port = read_int(environ, "AUTHGATE_PORT", DEFAULT_PORT, minimum=0, maximum=65535)
        public_url = read_str(environ, "AUTHGATE_PUBLIC_URL") or f"http://{host}:{port}"
        if not public_url.startswith(("http://", "https://")):
            raise ConfigError("AUTHGATE_PUBLIC_URL", "expected an http:// or https:// URL")
        return cls(
            core=CoreSettings.from_env(environ),
            host=host,
            port=port,
            public_url=public_url.rstrip("/"),
        )
