"""What every auth-mode module shares: the header shape, the errors, field access.

Errors name the credential type and field, never a value: they may reach a log line or a
400 response.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

Pairs = tuple[tuple[str, str], ...]
DefaultAuth = Callable[[Mapping[str, Any]], Pairs]
# (method, absolute URL as sent) -> headers that sign that one request.
RequestSigner = Callable[[str, str], Pairs]

# Header values travel on one line; these would split or truncate it.
_FORBIDDEN_IN_VALUES = ("\r", "\n", "\0")


class InjectionError(ValueError):
    """Credentials cannot be turned into request headers."""


class UnsupportedAuth(InjectionError):
    """No injector handles this stored credential type (yet)."""

    def __init__(self, credential_type: str, detail: str | None = None) -> None:
        message = f"unsupported auth: credential type {credential_type!r}"
        super().__init__(f"{message}: {detail}" if detail else message)
        self.credential_type = credential_type


class InvalidCredentialValue(InjectionError):
    """A credential field is missing, of the wrong type, or unsafe in a header."""

    def __init__(self, credential_type: str, field: str, problem: str) -> None:
        super().__init__(f"{credential_type} credentials: {field} {problem}")
        self.credential_type = credential_type
        self.field = field


class UnsignableRequest(InjectionError):
    """A request signer cannot sign this particular request (its URL, say)."""

    def __init__(self, credential_type: str, problem: str) -> None:
        super().__init__(f"{credential_type} signature: {problem}")
        self.credential_type = credential_type


def safe_header_value(value: str) -> bool:
    return not any(char in value for char in _FORBIDDEN_IN_VALUES)


def required_text(credentials: Mapping[str, Any], credential_type: str, field: str) -> str:
    """A non-empty string field that can go into a header."""
    value = credentials.get(field)
    if not isinstance(value, str) or not value:
        raise InvalidCredentialValue(credential_type, field, "is missing or not a string")
    if not safe_header_value(value):
        raise InvalidCredentialValue(credential_type, field, "contains a line break")
    return value


def optional_text(credentials: Mapping[str, Any], credential_type: str, field: str) -> str:
    """A string field that may be absent or empty (then "")."""
    value = credentials.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidCredentialValue(credential_type, field, "is not a string")
    return value


def bearer(token: str) -> Pairs:
    return (("authorization", f"Bearer {token}"),)
