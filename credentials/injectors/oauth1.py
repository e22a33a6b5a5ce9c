"""OAuth 1.0a (RFC 5849): every request carries its own signed `authorization` header.

An OAUTH1 connection stores `{type: "OAUTH1", oauth_token, oauth_token_secret}`; the
consumer key and secret are the integration's `client_id` and `client_secret`. The
provider's `signature_method` (default HMAC-SHA1; HMAC-SHA256 and PLAINTEXT too) picks
the algorithm. A signature covers the method, the URL and a fresh nonce and timestamp,
so it cannot be computed once per cache fill: `request_signer` returns an
`OAuth1Signer`, which the proxy calls for each request with the method and the URL
exactly as it goes on the wire (query included). oauthlib does the signing.

Limitation: RFC 5849 §3.4.1.3 also puts the parameters of an
`application/x-www-form-urlencoded` body into the signature base string. The proxy
streams bodies and never has one in hand when the headers are built, so requests are
signed over method and URL only (no `oauth_body_hash` either). A provider that checks
form parameters rejects form-encoded POSTs sent through the proxy; JSON and other
bodies are outside an RFC 5849 signature anyway, and every query parameter is signed.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote

from oauthlib.oauth1 import Client

from credentials.injectors.base import (
    Pairs,
    UnsignableRequest,
    UnsupportedAuth,
    required_text,
)
from credentials.models import Integration, Provider

AUTH_TYPES = ("OAUTH1",)
DEFAULT_SIGNATURE_METHOD: Final = "HMAC-SHA1"
SIGNATURE_METHODS: Final = frozenset({"HMAC-SHA1", "HMAC-SHA256", "PLAINTEXT"})

# oauthlib logs every signature base string (query values, the oauth_token) at DEBUG.
# Query values and tokens never go into our logs, whatever level the operator picks.
logging.getLogger("oauthlib.oauth1.rfc5849").setLevel(logging.INFO)

# oauthlib refuses a query holding characters outside this set, and '%' not followed by
# two hex digits, although servers accept both. Escaping them does not change what the
# query decodes to, so the signature still matches what the provider reads.
_QUERY_KEEPS = "=&;:%+,*@!()/?'$"
_STRAY_PERCENT = re.compile("%(?![0-9A-Fa-f]{2})")


def default_auth(credentials: Mapping[str, Any]) -> Pairs:
    """Nothing static: the signed header is made per request by the signer."""
    return ()


@dataclass(frozen=True, slots=True, repr=False)
class OAuth1Signer:
    """Signs one request at a time; safe to share between concurrent requests."""

    consumer_key: str
    consumer_secret: str
    token: str
    token_secret: str
    signature_method: str = DEFAULT_SIGNATURE_METHOD

    def __call__(self, method: str, url: str) -> Pairs:
        """The `authorization` header for `method` on `url` (absolute, as sent)."""
        client = Client(
            self.consumer_key,
            client_secret=self.consumer_secret,
            resource_owner_key=self.token,
            resource_owner_secret=self.token_secret,
            signature_method=self.signature_method,
        )
        try:
            # oauthlib signs any method; its type stubs name only the common ones.
            verb: Any = method.upper()
            _, headers, _ = client.sign(signable_url(url), http_method=verb)
        except ValueError:
            # oauthlib's message quotes the URL, whose query may hold secrets.
            raise UnsignableRequest("OAUTH1", "the upstream URL cannot be signed") from None
        return (("authorization", headers["Authorization"]),)

    def __repr__(self) -> str:
        # Keys, tokens and secrets stay out of reprs and therefore out of log lines.
        return f"OAuth1Signer(signature_method={self.signature_method!r})"


def request_signer(
    credentials: Mapping[str, Any], provider: Provider, integration: Integration | None
) -> OAuth1Signer:
    """The connection's signer. Raises InvalidCredentialValue naming a missing field,
    UnsupportedAuth for a signature method we cannot produce (RSA needs a key we lack)."""
    client = (integration.credentials if integration is not None else None) or {}
    return OAuth1Signer(
        consumer_key=required_text(client, "OAUTH1", "client_id"),
        consumer_secret=required_text(client, "OAUTH1", "client_secret"),
        token=required_text(credentials, "OAUTH1", "oauth_token"),
        token_secret=required_text(credentials, "OAUTH1", "oauth_token_secret"),
        signature_method=_signature_method(provider),
    )


def _signature_method(provider: Provider) -> str:
    method = provider.definition.get("signature_method", DEFAULT_SIGNATURE_METHOD)
    if not isinstance(method, str):
        raise UnsupportedAuth("OAUTH1", "the provider's signature_method is not a string")
    if method.upper() not in SIGNATURE_METHODS:
        raise UnsupportedAuth("OAUTH1", f"signature method {method!r} is not supported")
    return method.upper()


def signable_url(url: str) -> str:
    """`url` without its fragment, its query escaped where oauthlib is stricter than HTTP."""
    head = url.partition("#")[0]
    path, question, query = head.partition("?")
    if not question:
        return path
    # A '%' that starts no escape is a literal percent sign to lenient decoders.
    query = _STRAY_PERCENT.sub("%25", query)
    return f"{path}?{quote(query, safe=_QUERY_KEEPS)}"
