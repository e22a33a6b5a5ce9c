"""OAuth 2.0 authorization-code flow (RFC 6749 §4.1) with PKCE (RFC 7636): the URL the
browser is sent to, and the code exchange at the token endpoint.

The authorize URL carries `response_type=code`, `client_id`, `redirect_uri`, `scope`
(the scopes joined by the provider's `scope_separator`, a space by default), `state`,
the PKCE challenge unless the provider sets `disable_pkce`, the catalogue's
`authorization_params` completed from the connection config, Slack's `user_scope`, and
the request's own authorization params on top (the literal `undefined` removes one).
Neither may replace `client_id`, `redirect_uri`, `state` or the PKCE challenge: those
bind the answer to this flow (Nango lets a request parameter override them). The
catalogue's URL options then apply, in Nango's order: `authorization_url_skip_encode`
(`scopes`), `_fragment`, `_replacements`, with `_skip_empty` dropping empty parameters.

The exchange is built and read with the refresh grant's own pieces (credentials/grants):
the same token URL completion, client authentication (`token_request_auth_method` /
`authorization_method`), body format and response parsing, so a provider quirk handled
for refresh is handled here too.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Final

from credentials.authorization.common import (
    AuthorizationError,
    completed_params,
    completed_url,
    provider_text,
    query_string,
    with_query,
)
from credentials.expiry import expiry_from_response, iso_expiry
from credentials.grants.calls import (
    ClientCredentials,
    body_format,
    client_authenticated_call,
    complete_params,
    endpoint_url,
)
from credentials.grants.http import TokenCall, TokenReply
from credentials.grants.oauth2 import metadata, token_source
from credentials.grants.responses import decoded_or_error, missing_token, text_at
from credentials.models import Connection, Integration, JsonDict, Provider
from credentials.providers import token_url
from credentials.templates import template_values

CREDENTIAL_TYPE: Final = "OAUTH2"
CODE_GRANT: Final = "authorization_code"
VERIFIER_BYTES: Final = 32
# Set by this flow alone: a request parameter may not replace them.
BOUND_PARAMETERS: Final = frozenset(
    {"client_id", "redirect_uri", "state", "code_challenge", "code_challenge_method"}
)
# A client sends this literal to remove a parameter the catalogue would add.
REMOVE_MARKER: Final = "undefined"
_JSON_OR_FORM: Final = frozenset({"form", "json"})


# --- PKCE ---------------------------------------------------------------------------


def new_code_verifier() -> str:
    """256 random bits as 43 URL-safe characters (RFC 7636 §4.1 allows 43 to 128)."""
    return secrets.token_urlsafe(VERIFIER_BYTES)


def code_challenge(verifier: str) -> str:
    """The S256 challenge: base64url(SHA-256(verifier)) without padding."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def uses_pkce(provider: Provider) -> bool:
    return not provider.definition.get("disable_pkce")


# --- before the redirect ------------------------------------------------------------


def check_ready(provider: Provider, integration: Integration, draft: Connection) -> None:
    """Everything the flow will need from the catalogue completes from this config, and
    the code exchange asks for the authorization-code grant. Checked before the user
    is sent away, so a missing subdomain is reported now, not after consent."""
    definition = provider.definition
    template = definition.get("authorization_url")
    if not isinstance(template, str) or not template:
        raise AuthorizationError("provider_config_err", "the provider has no authorization_url")
    completed_url(template, draft, skip_encode=_skip_encode(definition), what="authorization_url")
    completed_params(
        definition.get("authorization_params"), draft, integration, what="authorization_params"
    )
    token_params = completed_params(
        definition.get("token_params"), draft, integration, what="token_params"
    )
    grant = token_params.get("grant_type", CODE_GRANT)
    if grant != CODE_GRANT:
        raise AuthorizationError(
            "grant_type_err", f"the grant type {grant!r} is not supported by this OAuth flow"
        )
    raw_token_url = token_url(provider, CREDENTIAL_TYPE)
    if not raw_token_url:
        raise AuthorizationError("provider_config_err", "the provider has no token_url")
    token_skip = definition.get("token_url_skip_encode") or ()
    completed_url(raw_token_url, draft, skip_encode=token_skip, what="token_url")


def token_endpoint(provider: Provider, draft: Connection) -> str:
    """The completed token URL (for an early outbound-policy check)."""
    raw = token_url(provider, CREDENTIAL_TYPE) or ""
    skip = provider.definition.get("token_url_skip_encode") or ()
    return completed_url(raw, draft, skip_encode=skip, what="token_url")


def authorization_url(
    provider: Provider,
    integration: Integration,
    draft: Connection,
    *,
    client_id: str,
    redirect_uri: str,
    state: str,
    scopes: Sequence[str],
    code_verifier: str | None,
    request_params: Mapping[str, str],
    user_scope: str | None = None,
) -> str:
    """Where to send the browser."""
    definition = provider.definition
    extra = completed_params(
        definition.get("authorization_params"), draft, integration, what="authorization_params"
    )
    if integration.provider == "slack" and user_scope:
        extra["user_scope"] = user_scope
    for key, value in request_params.items():
        if value == REMOVE_MARKER:
            extra.pop(key, None)
        else:
            extra[key] = value
    separator = provider_text(definition, "scope_separator", " ")
    parameters: dict[str, str] = {
        "response_type": "code",
        "client_id": client_id,
        "redirect_uri": redirect_uri,
        "scope": separator.join(scopes),
        "state": state,
    }
    # A catalogue or request value replaces a default in place (a JavaScript object's
    # key keeps its first position), except the ones that bind the answer to this flow.
    parameters.update({key: value for key, value in extra.items() if key not in BOUND_PARAMETERS})
    if code_verifier is not None:
        parameters.update(
            code_challenge=code_challenge(code_verifier), code_challenge_method="S256"
        )
    base = completed_url(
        str(definition["authorization_url"]),
        draft,
        skip_encode=_skip_encode(definition),
        what="authorization_url",
    )
    return _assemble(base, parameters, definition)


def _assemble(base: str, parameters: dict[str, str], definition: JsonDict) -> str:
    skip_encode = _skip_encode(definition)
    if definition.get("authorization_url_skip_empty"):
        parameters = {key: value for key, value in parameters.items() if value != ""}
    raw_scope = parameters.pop("scope", None) if "scopes" in skip_encode else None
    query = query_string(parameters.items())
    if raw_scope:
        # The provider wants its scope separator as is (a literal `+`, say).
        query = f"{query}&scope={raw_scope}" if query else f"scope={raw_scope}"
    fragment = definition.get("authorization_url_fragment")
    if isinstance(fragment, str) and fragment:
        url = f"{base.partition('?')[0]}#{fragment}?{query}"
    else:
        url = with_query(base, query)
    replacements = definition.get("authorization_url_replacements")
    if isinstance(replacements, Mapping):
        for old, new in replacements.items():
            url = url.replace(str(old), str(new))
    return url


def _skip_encode(definition: JsonDict) -> tuple[str, ...]:
    value = definition.get("authorization_url_skip_encode")
    return tuple(str(item) for item in value) if isinstance(value, list) else ()


# --- the code exchange --------------------------------------------------------------


def code_exchange_call(
    provider: Provider,
    integration: Integration,
    draft: Connection,
    *,
    client: ClientCredentials,
    code: str,
    redirect_uri: str,
    code_verifier: str | None,
) -> TokenCall:
    """The token request that trades `code` for tokens. Raises GrantError
    (`misconfigured`) when the catalogue's templates do not complete."""
    definition = provider.definition
    params = complete_params(
        definition.get("token_params"), template_values(draft, integration), what="token_params"
    )
    params.update(grant_type=CODE_GRANT, code=code, redirect_uri=redirect_uri)
    if code_verifier is not None:
        params["code_verifier"] = code_verifier
    return client_authenticated_call(
        endpoint_url(provider, CREDENTIAL_TYPE, draft),
        params,
        definition,
        client,
        encoding=body_format(definition, allowed=_JSON_OR_FORM),
    )


def exchanged_credentials(
    reply: TokenReply,
    provider: Provider,
    *,
    now: float,
    config_override: Mapping[str, str] | None = None,
    secrets: Iterable[str] = (),
) -> tuple[JsonDict, JsonDict]:
    """The OAUTH2 credentials in the token answer, and its `token_response_metadata`
    for the connection config. Raises GrantError when the answer is a refusal or holds
    no access token; `secrets` are removed from the provider's error text."""
    body = decoded_or_error(reply, now=now, secrets=secrets)
    definition = provider.definition
    source = token_source(body, definition.get("alternate_access_token_response_path"))
    access_token = text_at(source, "access_token")
    if access_token is None:
        raise missing_token(reply, "access_token")
    credentials: JsonDict = {"type": CREDENTIAL_TYPE, "access_token": access_token}
    refresh_token = text_at(source, "refresh_token")
    if refresh_token is not None:
        credentials["refresh_token"] = refresh_token
    expires_at = expiry_from_response(source, now, token=access_token)
    if expires_at is not None:
        credentials["expires_at"] = iso_expiry(expires_at)
    credentials["raw"] = body
    if config_override:
        credentials["config_override"] = dict(config_override)
    return credentials, metadata(body, definition)


def callback_metadata(provider: Provider, query: Mapping[str, Any]) -> JsonDict:
    """The callback parameters the provider lists in `redirect_uri_metadata` (QuickBooks
    `realmId`, ...), for the connection config."""
    names = provider.definition.get("redirect_uri_metadata")
    if not isinstance(names, list):
        return {}
    found: JsonDict = {}
    for name in names:
        value = query.get(str(name))
        if isinstance(value, str) and value:
            found[str(name)] = value
    return found


def code_parameter(provider: Provider) -> str:
    """The callback parameter that carries the code (`code`, or the provider's own)."""
    return provider_text(provider.definition, "authorization_code_param_in_callback", "code")
