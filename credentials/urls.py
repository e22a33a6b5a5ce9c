"""Composing a provider URL from a base, an endpoint and query parameters, treating
path and query as opaque bytes (the caller's bytes reach the provider unchanged).

Shared by the proxy (every upstream call) and the credential checks that call a
provider as the proxy would (credentials/verification.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import quote, unquote_plus


def join_url(base: str, endpoint: str) -> str:
    """``base`` + ``/`` + ``endpoint``, keeping the endpoint's bytes as they are.

    One trailing ``/`` of the base and every leading ``/`` of the endpoint go. An endpoint
    that repeats the base (a caller passing an absolute URL) loses that copy when it is
    followed by the end, ``/``, ``?`` or ``#``. No slash is added for an empty endpoint.
    Trailing slashes, interior ``//`` and the raw query are kept exactly.
    """
    if base.endswith("/"):
        base = base[:-1]
    endpoint = endpoint.lstrip("/")
    if base and endpoint.startswith(base):
        rest = endpoint[len(base) :]
        if not rest or rest[0] in "/?#":
            endpoint = rest.lstrip("/")
    if not endpoint:
        return base
    return f"{base}/{endpoint}"


def add_query(url: str, params: Sequence[tuple[str, str]]) -> str:
    """``url`` with each ``(name, value)`` set in its query, the rest left byte for byte.

    Set semantics (as URLSearchParams.set): the first existing parameter of that name
    takes the new value in place, later ones of that name are removed, otherwise the
    parameter is appended. Existing names are compared decoded (``api%5Fkey`` is
    ``api_key``); the added name and value are percent-encoded (everything but RFC 3986
    unreserved characters). Unlike Nango, the caller's other parameters are not
    re-serialised.
    """
    if not params:
        return url
    head, hash_mark, fragment = url.partition("#")
    path, _, query = head.partition("?")
    parts = query.split("&") if query else []
    for name, value in params:
        encoded = f"{quote(name, safe='')}={quote(value, safe='')}"
        found = False
        kept: list[str] = []
        for part in parts:
            if _param_name(part) == name:
                if found:
                    continue
                found = True
                kept.append(encoded)
            else:
                kept.append(part)
        if not found:
            kept.append(encoded)
        parts = kept
    return f"{path}?{'&'.join(parts)}{hash_mark}{fragment}"


def _param_name(part: str) -> str:
    name = part.partition("=")[0]
    if "%" in name or "+" in name:
        # application/x-www-form-urlencoded names: '+' is a space (WHATWG URL §5.1).
        return unquote_plus(name)
    return name
