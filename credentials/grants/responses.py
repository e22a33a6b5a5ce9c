"""Reading what a token endpoint answered: the body, and whether it is a refusal.

Classification (the coordinator acts on `reason` and `permanent`):

| answer | reason | permanent |
| --- | --- | --- |
| 400/401 (or 2xx) with `error` invalid_grant, invalid_client, unauthorized_client | it | yes |
| 429 | rate_limited (+ Retry-After) | no |
| 5xx | provider_5xx (+ Retry-After on 503) | no |
| 3xx (a redirect; never followed) | provider_4xx | no |
| any other 4xx, or 2xx with another `error` | provider_4xx | no |
| 2xx that is not a token response | bad_response | no |

Only the OAuth `error` code and a short, redacted description reach the error; a body
that is not an OAuth error object (an HTML page, say) is never quoted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any, Final
from urllib.parse import parse_qsl

import orjson

from credentials.grants.base import GrantError, redact
from credentials.grants.http import TokenReply
from credentials.models import JsonDict

# OAuth error codes after which only a new authorisation or client configuration helps.
PERMANENT_OAUTH_ERRORS: Final = frozenset(
    {"invalid_grant", "invalid_client", "unauthorized_client"}
)
_REFUSAL_STATUSES: Final = frozenset({400, 401})
_RETRY_AFTER_STATUSES: Final = frozenset({429, 503})
_ERROR_CODE: Final = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
_FORM_KEY: Final = re.compile(r"[\w.\-\[\]]+")


def decode_body(body: bytes) -> JsonDict | None:
    """A JSON object, else a urlencoded form (some endpoints answer that way), else None."""
    try:
        decoded = orjson.loads(body)
    except orjson.JSONDecodeError:
        return _decode_form(body)
    return decoded if isinstance(decoded, dict) else None


def _decode_form(body: bytes) -> JsonDict | None:
    try:
        text = body.decode("utf-8").strip()
        pairs = parse_qsl(text, keep_blank_values=True, strict_parsing=True)
    except (UnicodeDecodeError, ValueError):
        return None
    if not pairs or not all(_FORM_KEY.fullmatch(key) for key, _ in pairs):
        return None
    return dict(pairs)


def classify(
    reply: TokenReply,
    body: Mapping[str, Any] | None,
    *,
    now: float,
    secrets: Iterable[str] = (),
) -> GrantError | None:
    """The refusal in `reply`, or None when it is a 2xx without an OAuth `error`.

    `secrets` (what the request carried) are removed from the provider's description.
    """
    status = reply.status
    code, description = provider_error(body, secrets)
    if 200 <= status < 300:
        if code is None and not _has_error(body):
            return None
        return _refusal(status, code, description)
    if status == 429:
        return GrantError(
            "rate_limited",
            status=status,
            retry_after=retry_after(reply, now),
            provider_error=code,
            description=description,
        )
    if status >= 500:
        return GrantError(
            "provider_5xx",
            status=status,
            retry_after=retry_after(reply, now),
            provider_error=code,
            description=description,
        )
    if 300 <= status < 400:
        return GrantError("provider_4xx", "the token endpoint redirected", status=status)
    if status in _REFUSAL_STATUSES:
        return _refusal(status, code, description)
    if 400 <= status < 500:
        return GrantError(
            "provider_4xx", status=status, provider_error=code, description=description
        )
    return GrantError("bad_response", "unexpected HTTP status", status=status)


def _refusal(status: int, code: str | None, description: str | None) -> GrantError:
    reason = code if code in PERMANENT_OAUTH_ERRORS else "provider_4xx"
    return GrantError(reason, status=status, provider_error=code, description=description)


def _has_error(body: Mapping[str, Any] | None) -> bool:
    error = None if body is None else body.get("error")
    return bool(error) and not isinstance(error, bool)


def provider_error(
    body: Mapping[str, Any] | None, secrets: Iterable[str] = ()
) -> tuple[str | None, str | None]:
    """The OAuth `error` code (only when it looks like one) and a redacted description."""
    if body is None:
        return None, None
    error = body.get("error")
    code = error if isinstance(error, str) and _ERROR_CODE.fullmatch(error) else None
    description: str | None = None
    for candidate in (body.get("error_description"), body.get("message"), error):
        if isinstance(candidate, str) and candidate and candidate != code:
            description = redact(candidate, secrets)
            break
    return code, description


def retry_after(reply: TokenReply, now: float) -> float | None:
    """Seconds to wait from a Retry-After header (delta-seconds or HTTP-date)."""
    if reply.status not in _RETRY_AFTER_STATUSES:
        return None
    value = reply.headers.get("Retry-After", "").strip()
    if not value:
        return None
    if value.isdigit():
        return float(value)
    try:
        moment = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, moment.timestamp() - now)


# --- reading values -----------------------------------------------------------------


def at_path(body: Mapping[str, Any], path: str) -> Any:
    """The value at a dot path (`team.id`), or None."""
    node: Any = body
    for part in path.split("."):
        if isinstance(node, Mapping) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return None
    return node


def text_at(body: Mapping[str, Any], path: str) -> str | None:
    """A non-empty string at a dot path, or None."""
    value = at_path(body, path)
    return value if isinstance(value, str) and value else None


def decoded_or_error(reply: TokenReply, *, now: float, secrets: Iterable[str] = ()) -> JsonDict:
    """The decoded body of a successful answer; raises the classified GrantError otherwise."""
    body = decode_body(reply.body)
    refusal = classify(reply, body, now=now, secrets=secrets)
    if refusal is not None:
        raise refusal
    if body is None:
        raise GrantError(
            "bad_response", "the token response is not a JSON object", status=reply.status
        )
    return body


def missing_token(reply: TokenReply, field: str) -> GrantError:
    return GrantError("bad_response", f"the token response has no {field}", status=reply.status)
