"""What every grant shares: the request it gets, the result it returns, the error it raises.

A grant turns (connection, integration, provider) into new credentials. It never touches
the store; the refresh coordinator decides what to do with a `Grant` or a `GrantError`.

Nothing here may print a secret: the dataclasses hide their credential-bearing fields
from `repr`, and `GrantError` is built from reasons, field names, the provider's OAuth
error code and a short, redacted `error_description`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from credentials.models import Connection, Integration, JsonDict, Provider

if TYPE_CHECKING:
    from credentials.grants.http import TokenHttp

# Only re-authorisation or reconfiguration helps after these; everything else is retried
# later with backoff.
PERMANENT_REASONS: Final = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client", "no_refresh_token", "misconfigured"}
)
REASONS: Final = PERMANENT_REASONS | frozenset(
    {
        "provider_4xx",
        "provider_5xx",
        "rate_limited",
        "network",
        "timeout",
        "bad_response",
    }
)
DESCRIPTION_LIMIT: Final = 200
# Secrets shorter than this are not searched for in provider text: replacing every "ab"
# would mangle the description without protecting anything worth protecting.
_MIN_REDACTED_LENGTH: Final = 4
_REDACTED: Final = "[redacted]"


@dataclass(frozen=True, slots=True)
class GrantRequest:
    """Everything a grant needs; `now` is epoch seconds so tests can fix the clock."""

    connection: Connection = field(repr=False)
    integration: Integration = field(repr=False)
    provider: Provider = field(repr=False)
    http: TokenHttp = field(repr=False)
    now: float


@dataclass(frozen=True, slots=True, repr=False)
class Grant:
    """New credentials to store (wire shape), and the new connection_config if it changed."""

    credentials: JsonDict
    connection_config: JsonDict | None = None

    def __repr__(self) -> str:
        # Field names only: every value here may be a token.
        kind = self.credentials.get("type")
        keys = sorted(self.credentials)
        config = None if self.connection_config is None else sorted(self.connection_config)
        return f"Grant(type={kind!r}, credential_fields={keys}, connection_config={config})"


class GrantError(Exception):
    """New credentials could not be obtained.

    `reason` is machine-readable (see REASONS); `permanent` says whether only a new
    authorisation or configuration can help (default: by reason); `status` is the
    provider's HTTP status when it answered; `retry_after` comes from a Retry-After
    header. `provider_error` is the OAuth `error` code and `description` the provider's
    `error_description`, already truncated and redacted.
    """

    reason: str
    permanent: bool
    status: int | None
    retry_after: float | None
    provider_error: str | None
    description: str | None

    def __init__(
        self,
        reason: str,
        detail: str | None = None,
        *,
        permanent: bool | None = None,
        status: int | None = None,
        retry_after: float | None = None,
        provider_error: str | None = None,
        description: str | None = None,
    ) -> None:
        self.reason = reason
        self.permanent = reason in PERMANENT_REASONS if permanent is None else permanent
        self.status = status
        self.retry_after = retry_after
        self.provider_error = provider_error
        self.description = None if description is None else clip(description)
        super().__init__(self._message(detail))

    def _message(self, detail: str | None) -> str:
        parts = [self.reason]
        if self.status is not None:
            parts.append(f"HTTP {self.status}")
        if detail:
            parts.append(detail)
        if self.provider_error:
            parts.append(f"provider error {self.provider_error!r}")
        if self.description:
            parts.append(f"description {self.description!r}")
        if len(parts) == 1:
            return parts[0]
        return f"{parts[0]} ({'; '.join(parts[1:])})"


def misconfigured(detail: str) -> GrantError:
    """The provider entry, integration or connection lacks what this grant needs."""
    return GrantError("misconfigured", detail)


def clip(text: str, limit: int = DESCRIPTION_LIMIT) -> str:
    """One printable line of at most `limit` characters (no log-line injection)."""
    flat = "".join(char if char.isprintable() else " " for char in text).strip()
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every occurrence of a secret replaced; longest first, so a secret that
    contains another is removed whole."""
    for secret in sorted({s for s in secrets if len(s) >= _MIN_REDACTED_LENGTH}, key=len)[::-1]:
        text = text.replace(secret, _REDACTED)
    return text
