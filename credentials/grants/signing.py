"""Signing JWTs with keys people paste: PEM text in any of its damaged forms.

Keys reach us through forms and environment variables, which lose newlines, escape them
as `\\n`, or base64 the whole PEM. Errors name the key's role, never any of its bytes,
and are raised `from None` so no library message (which might quote input) travels
along.
"""

from __future__ import annotations

import base64
import binascii
import re
import warnings
from collections.abc import Mapping
from typing import Any, Final

import jwt
from jwt.warnings import InsecureKeyLengthWarning

from credentials.grants.base import misconfigured

ASYMMETRIC_ALGORITHMS: Final = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
)
HMAC_ALGORITHMS: Final = frozenset({"HS256", "HS384", "HS512"})
_PEM: Final = re.compile(r"(-----BEGIN [A-Z0-9 ]+-----)(.*?)(-----END [A-Z0-9 ]+-----)", re.DOTALL)
_PEM_LINE: Final = 64


def pem_text(value: str, *, role: str) -> str:
    """A well-formed PEM from PEM text (newlines lost or escaped) or base64 of a PEM."""
    text = value.strip().replace("\\n", "\n")
    if not text.startswith("-----BEGIN"):
        try:
            text = base64.b64decode(text, validate=False).decode("utf-8").strip()
        except (binascii.Error, ValueError):
            raise misconfigured(f"{role} is neither PEM nor base64 of a PEM") from None
    match = _PEM.search(text)
    if match is None:
        raise misconfigured(f"{role} is not a PEM key")
    begin, middle, end = match.groups()
    body = "".join(middle.split())
    lines = [body[i : i + _PEM_LINE] for i in range(0, len(body), _PEM_LINE)]
    return "\n".join([begin, *lines, end]) + "\n"


def sign(
    claims: Mapping[str, Any],
    key: str | bytes,
    *,
    algorithm: str,
    headers: Mapping[str, Any] | None = None,
    role: str,
) -> str:
    """A compact JWT; GrantError misconfigured when the key does not fit the algorithm."""
    if algorithm not in ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS:
        raise misconfigured(f"JWT algorithm {algorithm!r} is not supported")
    try:
        with warnings.catch_warnings():
            # The provider chose the key; a warning per signature would only flood logs.
            # (Synchronous, no await inside: the global filter change cannot leak.)
            warnings.simplefilter("ignore", InsecureKeyLengthWarning)
            return jwt.encode(dict(claims), key, algorithm=algorithm, headers=dict(headers or {}))
    except (ValueError, TypeError, jwt.PyJWTError):
        raise misconfigured(f"{role} cannot sign {algorithm} tokens") from None
