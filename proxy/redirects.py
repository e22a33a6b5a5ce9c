"""Following a provider's redirect safely (pure).

Redirects are followed like a browser would (RFC 9110 §15.4): 303, and 301/302 after a
POST, become a body-less GET; 307/308 keep the method and body. Credentials injected for
one origin are never sent to another origin, nor downgraded from https to http, unless
the caller or the provider asked for headers to be forwarded on redirects.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from yarl import URL

REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})
MAX_REDIRECTS = 5
_ALWAYS_SENSITIVE = frozenset({"authorization", "proxy-authorization", "cookie"})
_BODY_HEADERS = frozenset({"content-type", "content-length", "content-encoding"})


@dataclass(frozen=True, slots=True)
class Hop:
    method: str
    url: str
    headers: list[tuple[str, str]]
    keep_body: bool


def next_hop(
    *,
    method: str,
    url: str,
    status: int,
    location: str | None,
    headers: Iterable[tuple[str, str]],
    injected: frozenset[str],
    forward_credentials: bool,
) -> Hop | None:
    """The request to send for a redirect response, or None when it is not a redirect."""
    if status not in REDIRECT_STATUSES or not location:
        return None
    current = URL(url, encoded=True)
    target = current.join(URL(location, encoded=True))
    if target.scheme not in ("http", "https"):
        return None
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        next_method, keep_body = "GET", False
    else:
        next_method, keep_body = method, method not in ("GET", "HEAD")
    dropped: set[str] = set() if keep_body else set(_BODY_HEADERS)
    if not forward_credentials and _leaves_origin(current, target):
        dropped |= _ALWAYS_SENSITIVE | injected
    kept = [(name, value) for name, value in headers if name.lower() not in dropped]
    return Hop(method=next_method, url=str(target), headers=kept, keep_body=keep_body)


def _leaves_origin(current: URL, target: URL) -> bool:
    downgrade = current.scheme == "https" and target.scheme == "http"
    return downgrade or (current.host, current.port) != (target.host, target.port)
