"""OAuth 1.0a three-legged flow (RFC 5849 §2): temporary credentials, the user's consent,
then token credentials. oauthlib signs every request.

1. A signed request to the provider's `request_url` (`request_http_method`, default
   POST, with `request_params`) names the callback and returns a request token and its
   secret.
2. The browser goes to `authorization_url?oauth_token=...` (plus `scope`, the
   catalogue's and the request's `authorization_params`, and `oauth_callback`).
3. The provider sends the browser back with `oauth_token` and `oauth_verifier`; a
   request signed with the request token and its secret (`token_http_method`, default
   POST, with `token_params`) trades them for the token and secret the connection keeps.

The consumer key and secret are the integration's client id and secret; the provider's
`signature_method` picks the algorithm (HMAC-SHA1 by default, HMAC-SHA256, PLAINTEXT).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from oauthlib.oauth1 import Client

from credentials.authorization.common import (
    AuthorizationError,
    completed_params,
    completed_url,
    provider_text,
    query_string,
    with_query,
)
from credentials.grants.base import GrantError
from credentials.grants.calls import (
    FORM_CONTENT_TYPE,
    ClientCredentials,
    complete_params,
    endpoint_url,
    form_encode,
)
from credentials.grants.http import TokenCall, TokenReply
from credentials.grants.responses import decoded_or_error, missing_token, text_at
from credentials.injectors.oauth1 import (
    DEFAULT_SIGNATURE_METHOD,
    SIGNATURE_METHODS,
    signable_url,
)
from credentials.models import Connection, Integration, JsonDict, Provider
from credentials.templates import template_values

CREDENTIAL_TYPE: Final = "OAUTH1"
# Set by this flow alone: a request parameter may not replace them.
BOUND_PARAMETERS: Final = frozenset({"oauth_token", "oauth_callback"})


def signature_method(provider: Provider) -> str:
    method = provider.definition.get("signature_method", DEFAULT_SIGNATURE_METHOD)
    if not isinstance(method, str) or method.upper() not in SIGNATURE_METHODS:
        raise AuthorizationError(
            "provider_config_err", f"the OAuth 1.0a signature method {method!r} is not supported"
        )
    return method.upper()


def check_ready(provider: Provider, integration: Integration, draft: Connection) -> None:
    """The catalogue's URLs and parameters complete from this config."""
    definition = provider.definition
    signature_method(provider)
    for key in ("request_url", "authorization_url"):
        template = definition.get(key)
        if not isinstance(template, str) or not template:
            raise AuthorizationError("provider_config_err", f"the provider has no {key}")
        completed_url(template, draft, what=key)
    for key in ("request_params", "authorization_params", "token_params"):
        completed_params(definition.get(key), draft, integration, what=key)


# --- leg 1: temporary credentials ---------------------------------------------------


def request_token_call(
    provider: Provider,
    integration: Integration,
    draft: Connection,
    *,
    client: ClientCredentials,
    callback: str,
) -> TokenCall:
    definition = provider.definition
    url = completed_url(str(definition.get("request_url") or ""), draft, what="request_url")
    params = completed_params(
        definition.get("request_params"), draft, integration, what="request_params"
    )
    signer = Client(
        client.client_id,
        client_secret=client.secret,
        callback_uri=callback,
        signature_method=signature_method(provider),
    )
    return _signed_call(signer, _method(definition, "request_http_method"), url, params)


def request_token(reply: TokenReply, *, now: float, secrets: Iterable[str] = ()) -> tuple[str, str]:
    """The request token and its secret; raises GrantError on a refusal."""
    body = decoded_or_error(reply, now=now, secrets=secrets)
    token = text_at(body, "oauth_token")
    secret = text_at(body, "oauth_token_secret")
    if token is None or secret is None:
        raise missing_token(reply, "oauth_token and oauth_token_secret")
    return token, secret


# --- leg 2: the user's consent ------------------------------------------------------


def authorization_url(
    provider: Provider,
    integration: Integration,
    draft: Connection,
    *,
    request_token: str,
    scopes: Sequence[str],
    callback: str,
    request_params: Mapping[str, str],
) -> str:
    definition = provider.definition
    base = completed_url(
        str(definition.get("authorization_url") or ""), draft, what="authorization_url"
    )
    extra = completed_params(
        definition.get("authorization_params"), draft, integration, what="authorization_params"
    )
    extra.update(request_params)
    pairs = [("oauth_token", request_token)]
    if scopes:
        separator = provider_text(definition, "scope_separator", " ")
        pairs.append(("scope", separator.join(scopes)))
    pairs.extend((key, value) for key, value in extra.items() if key not in BOUND_PARAMETERS)
    pairs.append(("oauth_callback", callback))
    return with_query(base, query_string(pairs))


# --- leg 3: token credentials -------------------------------------------------------


def access_token_call(
    provider: Provider,
    integration: Integration,
    draft: Connection,
    *,
    client: ClientCredentials,
    request_token: str,
    request_token_secret: str,
    verifier: str,
) -> TokenCall:
    """Raises GrantError (`misconfigured`) when the catalogue's templates do not complete."""
    definition = provider.definition
    params = complete_params(
        definition.get("token_params"), template_values(draft, integration), what="token_params"
    )
    signer = Client(
        client.client_id,
        client_secret=client.secret,
        resource_owner_key=request_token,
        resource_owner_secret=request_token_secret,
        verifier=verifier,
        signature_method=signature_method(provider),
    )
    url = endpoint_url(provider, CREDENTIAL_TYPE, draft)
    text_params = {key: str(value) for key, value in params.items() if value is not None}
    return _signed_call(signer, _method(definition, "token_http_method"), url, text_params)


def access_credentials(reply: TokenReply, *, now: float, secrets: Iterable[str] = ()) -> JsonDict:
    """The OAUTH1 credentials in the access-token answer; raises GrantError otherwise."""
    body = decoded_or_error(reply, now=now, secrets=secrets)
    token = text_at(body, "oauth_token")
    secret = text_at(body, "oauth_token_secret")
    if token is None or secret is None:
        raise missing_token(reply, "oauth_token and oauth_token_secret")
    return {
        "type": CREDENTIAL_TYPE,
        "oauth_token": token,
        "oauth_token_secret": secret,
        "raw": body,
    }


# --- signing ------------------------------------------------------------------------


def _method(definition: JsonDict, key: str) -> str:
    return provider_text(definition, key, "POST").upper()


def _signed_call(signer: Client, method: str, url: str, params: Mapping[str, str]) -> TokenCall:
    """`params` in a form body (POST and the like) or the query (GET), signed over."""
    verb: Any = method  # oauthlib signs any method; its stubs name only the common ones
    try:
        if method == "GET" or not params:
            target = signable_url(with_query(url, form_encode(params)))
            uri, headers, _ = signer.sign(target, http_method=verb)
            return TokenCall(method, uri, dict(headers))
        body = form_encode(params)
        form = {"Content-Type": FORM_CONTENT_TYPE}
        uri, headers, signed_body = signer.sign(url, http_method=verb, body=body, headers=form)
    except ValueError:
        # oauthlib's message quotes the URL and parameters.
        raise GrantError("misconfigured", "the OAuth 1.0a request cannot be signed") from None
    data = signed_body.encode("utf-8") if isinstance(signed_body, str) else signed_body
    return TokenCall(method, uri, dict(headers), data)
