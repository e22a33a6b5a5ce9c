"""Settings every authgate service shares, read once from the environment.

Each reader names the offending variable when a value is invalid, so a misconfigured
deployment stops at start-up with a message an operator can act on.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATA_DIR = Path(".authgate")
DEFAULT_DATABASE_URL = "sqlite:///./.authgate/authgate.db"
DEFAULT_REDIS_PREFIX = "authgate"
# Nango refreshes OAuth tokens 15 minutes before they expire.
DEFAULT_REFRESH_MARGIN = 900.0
ENCRYPTION_KEY_BYTES = 32

_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})


class ConfigError(ValueError):
    """A configuration variable has an invalid value; the message names the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def read_str(environ: Mapping[str, str], name: str, default: str | None = None) -> str | None:
    """The stripped value, or `default` when the variable is unset or blank."""
    value = environ.get(name, "").strip()
    return value or default


def read_bool(environ: Mapping[str, str], name: str, default: bool) -> bool:
    value = read_str(environ, name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ConfigError(name, f"expected true or false, got {value!r}")


def read_int(
    environ: Mapping[str, str],
    name: str,
    default: int,
    *,
    minimum: int = 0,
    maximum: int | None = None,
) -> int:
    value = read_str(environ, name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ConfigError(name, f"expected an integer, got {value!r}") from None
    _check_range(name, number, minimum, maximum)
    return number


def read_float(
    environ: Mapping[str, str],
    name: str,
    default: float,
    *,
    minimum: float = 0.0,
    maximum: float | None = None,
) -> float:
    value = read_str(environ, name)
    if value is None:
        return default
    try:
        number = float(value)
    except ValueError:
        raise ConfigError(name, f"expected a number, got {value!r}") from None
    if number != number:  # NaN never compares equal to itself
        raise ConfigError(name, "expected a number, got NaN")
    _check_range(name, number, minimum, maximum)
    return number


def _check_range(name: str, number: float, minimum: float, maximum: float | None) -> None:
    if number < minimum:
        raise ConfigError(name, f"must be at least {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ConfigError(name, f"must be at most {maximum}, got {number}")


def parse_secret_key(name: str, value: str) -> str:
    """Secret keys are UUID v4 strings, as Nango issues and checks them."""
    try:
        parsed = uuid.UUID(value)
    except ValueError:
        raise ConfigError(name, "must be a UUID v4 (e.g. from `uuidgen -r`)") from None
    if parsed.version != 4 or str(parsed) != value.lower():
        raise ConfigError(name, "must be a UUID v4 in its canonical 8-4-4-4-12 form")
    return value.lower()


def parse_encryption_keys(name: str, value: str) -> tuple[bytes, ...]:
    """A comma-separated list of base64 keys of 32 bytes each; the first one encrypts."""
    keys: list[bytes] = []
    for position, item in enumerate(value.split(","), start=1):
        try:
            key = base64.b64decode(item.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise ConfigError(name, f"key #{position} is not valid base64") from None
        if len(key) != ENCRYPTION_KEY_BYTES:
            raise ConfigError(
                name, f"key #{position} decodes to {len(key)} bytes; AES-256 needs 32"
            )
        keys.append(key)
    return tuple(keys)


def _check_database_url(name: str, value: str) -> str:
    if value.startswith(("sqlite:///", "postgresql://", "postgres://")):
        return value
    raise ConfigError(name, "expected sqlite:///PATH or postgresql://...")


def _check_redis_url(name: str, value: str | None) -> str | None:
    if value is None or value.startswith(("redis://", "rediss://", "unix://")):
        return value
    raise ConfigError(name, "expected redis://, rediss:// or unix://")


def _check_prefix(name: str, value: str) -> str:
    # Deployments sharing one Redis keep apart by prefix; keep it to safe key characters.
    if value.replace("-", "").replace("_", "").replace(":", "").replace(".", "").isalnum():
        return value
    raise ConfigError(name, "use letters, digits, '-', '_', ':' or '.'")


@dataclass(frozen=True, slots=True)
class CoreSettings:
    """Where state lives and how it is protected; shared by proxy, management and serve."""

    database_url: str = DEFAULT_DATABASE_URL
    redis_url: str | None = None
    encryption_keys: tuple[bytes, ...] = ()
    secret_key: str | None = None
    data_dir: Path = DEFAULT_DATA_DIR
    providers_file: Path | None = None
    redis_prefix: str = DEFAULT_REDIS_PREFIX
    allow_private_upstreams: bool = False
    refresh_margin: float = DEFAULT_REFRESH_MARGIN

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite:")

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> CoreSettings:
        keys_value = read_str(environ, "AUTHGATE_ENCRYPTION_KEY")
        secret_value = read_str(environ, "AUTHGATE_SECRET_KEY")
        providers_value = read_str(environ, "AUTHGATE_PROVIDERS_FILE")
        providers_file = Path(providers_value) if providers_value else None
        if providers_file is not None and not providers_file.is_file():
            raise ConfigError("AUTHGATE_PROVIDERS_FILE", f"no such file: {providers_file}")
        data_dir = Path(read_str(environ, "AUTHGATE_DATA_DIR") or DEFAULT_DATA_DIR)
        default_database = f"sqlite:///{data_dir / 'authgate.db'}"
        return cls(
            database_url=_check_database_url(
                "DATABASE_URL", read_str(environ, "DATABASE_URL", default_database) or ""
            ),
            redis_url=_check_redis_url("REDIS_URL", read_str(environ, "REDIS_URL")),
            encryption_keys=(
                parse_encryption_keys("AUTHGATE_ENCRYPTION_KEY", keys_value) if keys_value else ()
            ),
            secret_key=(
                parse_secret_key("AUTHGATE_SECRET_KEY", secret_value) if secret_value else None
            ),
            data_dir=data_dir,
            providers_file=providers_file,
            redis_prefix=_check_prefix(
                "AUTHGATE_REDIS_PREFIX",
                read_str(environ, "AUTHGATE_REDIS_PREFIX") or DEFAULT_REDIS_PREFIX,
            ),
            allow_private_upstreams=read_bool(environ, "AUTHGATE_ALLOW_PRIVATE_UPSTREAMS", False),
            refresh_margin=read_float(
                environ, "AUTHGATE_REFRESH_MARGIN", DEFAULT_REFRESH_MARGIN, maximum=86_400
            ),
        )
