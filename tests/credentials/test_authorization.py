"""The pure steps of the OAuth 2.0 and OAuth 1.0a flows: the URLs the browser is sent to,
the token requests as they go on the wire, and the answers read back."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, parse_qsl, urlsplit

import orjson
import pytest
from multidict import CIMultiDict, CIMultiDictProxy
from oauthlib.common import Request as SignedRequest
from oauthlib.oauth1.rfc5849 import signature

from credentials.authorization import AuthorizationError, draft_connection, oauth1, oauth2
from credentials.grants import GrantError, TokenCall, TokenReply
from credentials.grants.calls import ClientCredentials
from credentials.models import Connection, Integration, Provider
from credentials.providers import parse_catalogue

CLIENT_SECRET = "client-secret-authorization-tests"
CODE = "code-authorization-tests-0123456789"
VERIFIER = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
REQUEST_TOKEN_SECRET = "request-token-secret-authorization-tests"
CLIENT = ClientCredentials("client-1", CLIENT_SECRET)

CATALOGUE = """
plain:
    display_name: Plain
    docs: https://docs.example.com/plain
    auth_mode: OAUTH2
    authorization_url: https://auth.example.com/authorize?tenant=fixed
    token_url: https://${connectionConfig.subdomain}.example.com/oauth/token
    token_params:
        audience: ${connectionConfig.subdomain}-api
    authorization_params:
        prompt: consent
        access_type: offline
tricky:
    display_name: Tricky
    docs: https://docs.example.com/tricky
    auth_mode: OAUTH2
    authorization_url: https://app.example.com/
    token_url: https://app.example.com/token
    scope_separator: "+"
    authorization_url_skip_encode: [scopes]
    authorization_url_fragment: /oauth/authorize
    authorization_url_replacements:
        client_id: client_key
    authorization_url_skip_empty: true
    token_request_auth_method: basic
    body_format: json
    disable_pkce: true
quickbooks:
    display_name: QuickBooks
    docs: https://docs.example.com/quickbooks
    auth_mode: OAUTH2
    authorization_url: https://qb.example.com/authorize
    token_url: https://qb.example.com/token
    redirect_uri_metadata: [realmId]
    authorization_code_param_in_callback: spapi_oauth_code
slack:
    display_name: Slack
    docs: https://docs.example.com/slack
    auth_mode: OAUTH2
    authorization_url: https://slack.example.com/oauth/v2/authorize
    token_url: https://slack.example.com/api/oauth.v2.access
    scope_separator: ","
    alternate_access_token_response_path: authed_user
    token_response_metadata: [team.id, bot_user_id, incoming_webhook.url, ok]
bad-grant:
    display_name: Bad grant
    docs: https://docs.example.com/bad-grant
    auth_mode: OAUTH2
    authorization_url: https://auth.example.com/authorize
    token_url: https://auth.example.com/token
    token_params:
        grant_type: client_credentials
twitter:
    display_name: Twitter
    docs: https://docs.example.com/twitter
    auth_mode: OAUTH1
    request_url: https://api.example.com/oauth/request_token
    request_params:
        x_auth_access_type: write
    authorization_url: https://api.example.com/oauth/authorize
    token_url: https://api.example.com/oauth/access_token
twitter-get:
    display_name: Twitter by GET
    docs: https://docs.example.com/twitter-get
    auth_mode: OAUTH1
    request_url: https://api.example.com/oauth/request_token
    request_http_method: GET
    request_params:
        x_auth_access_type: read
    authorization_url: https://api.example.com/oauth/authorize
    token_url: https://api.example.com/oauth/access_token
twitter-rsa:
    display_name: Twitter RSA
    docs: https://docs.example.com/twitter-rsa
    auth_mode: OAUTH1
    signature_method: RSA-SHA1
    request_url: https://api.example.com/oauth/request_token
    authorization_url: https://api.example.com/oauth/authorize
    token_url: https://api.example.com/oauth/access_token
"""
PROVIDERS = parse_catalogue(CATALOGUE, "test catalogue")


def provider(name: str) -> Provider:
    return PROVIDERS[name]


def integration(name: str) -> Integration:
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    credentials = {"client_id": CLIENT.client_id, "client_secret": CLIENT_SECRET}
    return Integration(1, 1, f"{name}-key", name, None, True, credentials, None, moment, moment)


def draft(name: str, **config: Any) -> Connection:
    return draft_connection(integration(name), "conn-1", config)


def authorize(name: str, **overrides: Any) -> str:
    arguments: dict[str, Any] = {
        "client_id": CLIENT.client_id,
        "redirect_uri": "https://gate.example.com/oauth/callback",
        "state": "state-1",
        "scopes": ["read", "write all"],
        "code_verifier": VERIFIER,
        "request_params": {},
        **overrides,
    }
    config = arguments.pop("config", {"subdomain": "acme"})
    return oauth2.authorization_url(
        provider(name), integration(name), draft(name, **config), **arguments
    )


def reply(status: int, body: Any, content_type: str = "application/json") -> TokenReply:
    raw = body if isinstance(body, bytes) else orjson.dumps(body)
    headers = CIMultiDictProxy(CIMultiDict({"Content-Type": content_type}))
    return TokenReply(status, headers, raw)


# --- PKCE ----------------------------------------------------------------------------


def test_the_challenge_is_rfc_7636_s256() -> None:
    # RFC 7636 Appendix B.
    assert oauth2.code_challenge(VERIFIER) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_verifiers_are_fresh_and_of_legal_length() -> None:
    verifiers = {oauth2.new_code_verifier() for _ in range(100)}
    assert len(verifiers) == 100
    assert {len(verifier) for verifier in verifiers} == {43}


# --- the authorize URL ---------------------------------------------------------------


def test_the_authorize_url_carries_the_flow() -> None:
    url = authorize("plain")

    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == "https://auth.example.com/authorize"
    pairs = parse_qsl(parts.query)
    assert [key for key, _ in pairs] == [
        "tenant",
        "response_type",
        "client_id",
        "redirect_uri",
        "scope",
        "state",
        "prompt",
        "access_type",
        "code_challenge",
        "code_challenge_method",
    ]
    query = dict(pairs)
    assert query["scope"] == "read write all"
    assert "scope=read%20write%20all" in url
    assert query["code_challenge"] == oauth2.code_challenge(VERIFIER)
    assert query["code_challenge_method"] == "S256"


def test_the_request_cannot_rebind_the_flow() -> None:
    request_params = {
        "state": "attacker",
        "redirect_uri": "https://attacker.example.com/",
        "client_id": "other",
        "code_challenge": "chosen",
        "code_challenge_method": "plain",
        "prompt": "none",
        "access_type": "undefined",
        "login_hint": "a@example.com",
    }

    query = parse_qs(urlsplit(authorize("plain", request_params=request_params)).query)

    assert query["state"] == ["state-1"]
    assert query["redirect_uri"] == ["https://gate.example.com/oauth/callback"]
    assert query["client_id"] == ["client-1"]
    assert query["code_challenge"] == [oauth2.code_challenge(VERIFIER)]
    assert query["code_challenge_method"] == ["S256"]
    assert query["prompt"] == ["none"]
    assert query["login_hint"] == ["a@example.com"]
    assert "access_type" not in query


def test_the_catalogue_url_options_apply() -> None:
    url = authorize("tricky", code_verifier=None, scopes=["a", "b"], request_params={"x": ""})

    base, _, query = url.partition("#/oauth/authorize?")
    assert base == "https://app.example.com/"
    assert query.endswith("&scope=a+b")
    assert "client_key=client-1" in query
    assert "client_id" not in query
    assert "x=" not in query
    assert "code_challenge" not in query


def test_user_scope_goes_to_slack_only() -> None:
    slack = parse_qs(urlsplit(authorize("slack", user_scope="chat:write")).query)
    plain = parse_qs(urlsplit(authorize("plain", user_scope="chat:write")).query)

    assert slack["user_scope"] == ["chat:write"]
    assert slack["scope"] == ["read,write all"]
    assert "user_scope" not in plain


def test_missing_connection_config_is_a_param_error() -> None:
    with pytest.raises(AuthorizationError) as caught:
        oauth2.check_ready(provider("plain"), integration("plain"), draft("plain"))

    assert caught.value.error_type == "url_param_err"
    assert "connectionConfig.subdomain" in caught.value.message


def test_only_the_code_grant_is_accepted() -> None:
    with pytest.raises(AuthorizationError) as caught:
        oauth2.check_ready(provider("bad-grant"), integration("bad-grant"), draft("bad-grant"))

    assert caught.value.error_type == "grant_type_err"


def test_a_complete_config_is_ready() -> None:
    oauth2.check_ready(provider("plain"), integration("plain"), draft("plain", subdomain="acme"))

    url = oauth2.token_endpoint(provider("plain"), draft("plain", subdomain="a b"))
    assert url == "https://a%20b.example.com/oauth/token"


# --- the code exchange ---------------------------------------------------------------


def exchange_call(name: str, verifier: str | None = VERIFIER) -> TokenCall:
    return oauth2.code_exchange_call(
        provider(name),
        integration(name),
        draft(name, subdomain="acme"),
        client=CLIENT,
        code=CODE,
        redirect_uri="https://gate.example.com/oauth/callback",
        code_verifier=verifier,
    )


def test_the_exchange_posts_a_form_with_the_client_in_the_body() -> None:
    call = exchange_call("plain")

    assert (call.method, call.url) == ("POST", "https://acme.example.com/oauth/token")
    assert call.headers["Content-Type"] == "application/x-www-form-urlencoded"
    assert "Authorization" not in call.headers
    assert call.body is not None
    assert dict(parse_qsl(call.body.decode())) == {
        "audience": "acme-api",
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": "https://gate.example.com/oauth/callback",
        "code_verifier": VERIFIER,
        "client_id": "client-1",
        "client_secret": CLIENT_SECRET,
    }


def test_the_exchange_may_use_basic_auth_and_json() -> None:
    call = exchange_call("tricky", verifier=None)

    expected = base64.b64encode(f"client-1:{CLIENT_SECRET}".encode()).decode()
    assert call.headers["Authorization"] == f"Basic {expected}"
    assert call.headers["Content-Type"] == "application/json"
    assert call.body is not None
    assert orjson.loads(call.body) == {
        "grant_type": "authorization_code",
        "code": CODE,
        "redirect_uri": "https://gate.example.com/oauth/callback",
    }


def test_the_answer_becomes_oauth2_credentials_and_metadata() -> None:
    body = {
        "ok": True,
        "access_token": "xoxb-bot-token-for-tests",
        "expires_in": 60,
        "bot_user_id": "U1",
        "team": {"id": "T1"},
        "incoming_webhook": {"url": "https://hooks.example.com/1"},
    }
    override = {"client_id": "c", "client_secret": "s-override-secret"}

    credentials, metadata = oauth2.exchanged_credentials(
        reply(200, body), provider("slack"), now=1_767_225_600.0, config_override=override
    )

    assert credentials == {
        "type": "OAUTH2",
        "access_token": "xoxb-bot-token-for-tests",
        "expires_at": "2026-01-01T00:01:00.000Z",
        "raw": body,
        "config_override": override,
    }
    assert metadata == {
        "team.id": "T1",
        "bot_user_id": "U1",
        "incoming_webhook.url": "https://hooks.example.com/1",
        "ok": True,
    }


def test_the_alternate_path_supplies_the_token() -> None:
    body = {
        "ok": True,
        "authed_user": {
            "access_token": "xoxp-user-token-for-tests",
            "refresh_token": "xoxe-refresh-for-tests",
            "expires_in": 120,
        },
    }

    credentials, _ = oauth2.exchanged_credentials(
        reply(200, body), provider("slack"), now=1_767_225_600.0
    )

    assert credentials == {
        "type": "OAUTH2",
        "access_token": "xoxp-user-token-for-tests",
        "refresh_token": "xoxe-refresh-for-tests",
        "expires_at": "2026-01-01T00:02:00.000Z",
        "raw": body,
    }


def test_a_refusal_is_a_grant_error_without_the_code() -> None:
    refusal = {"error": "invalid_grant", "error_description": f"code {CODE} was used"}

    with pytest.raises(GrantError) as caught:
        oauth2.exchanged_credentials(
            reply(400, refusal), provider("plain"), now=0.0, secrets=[CODE, CLIENT_SECRET]
        )

    assert caught.value.reason == "invalid_grant"
    assert CODE not in str(caught.value)


def test_an_answer_without_a_token_is_refused() -> None:
    with pytest.raises(GrantError) as caught:
        oauth2.exchanged_credentials(
            reply(200, {"token_type": "bearer"}), provider("plain"), now=0.0
        )

    assert caught.value.reason == "bad_response"


# --- OAuth 1.0a ------------------------------------------------------------------------


def verified(call: TokenCall, token_secret: str = "") -> dict[str, str]:
    """The call's oauth_* parameters, after oauthlib's server side checked the signature."""
    header = {"Authorization": call.headers["Authorization"]}
    body = call.body.decode() if call.body else None
    query = urlsplit(call.url).query
    params = signature.collect_parameters(uri_query=query, body=body, headers=header)
    oauth = dict(signature.collect_parameters(headers=header, exclude_oauth_signature=False))
    method: Any = call.method
    request: Any = SignedRequest(call.url, http_method=method, body=body)
    request.params = params
    request.signature = oauth["oauth_signature"]
    assert signature.verify_hmac_sha1(request, CLIENT_SECRET, token_secret)
    return oauth


def test_the_request_token_call_is_signed_with_its_parameters() -> None:
    callback = "https://gate.example.com/oauth/callback?state=s1"
    call = oauth1.request_token_call(
        provider("twitter"),
        integration("twitter"),
        draft("twitter"),
        client=CLIENT,
        callback=callback,
    )

    oauth = verified(call)

    assert (call.method, call.url) == ("POST", "https://api.example.com/oauth/request_token")
    assert call.body == b"x_auth_access_type=write"
    assert oauth["oauth_callback"] == callback
    assert oauth["oauth_consumer_key"] == "client-1"
    assert oauth["oauth_signature_method"] == "HMAC-SHA1"


def test_a_get_request_token_call_signs_its_query() -> None:
    call = oauth1.request_token_call(
        provider("twitter-get"),
        integration("twitter-get"),
        draft("twitter-get"),
        client=CLIENT,
        callback="https://gate.example.com/cb",
    )

    verified(call)
    assert call.method == "GET"
    assert call.url == "https://api.example.com/oauth/request_token?x_auth_access_type=read"
    assert call.body is None


def test_the_access_token_call_carries_token_and_verifier() -> None:
    call = oauth1.access_token_call(
        provider("twitter"),
        integration("twitter"),
        draft("twitter"),
        client=CLIENT,
        request_token="rq-token",
        request_token_secret=REQUEST_TOKEN_SECRET,
        verifier="verifier-1",
    )

    oauth = verified(call, REQUEST_TOKEN_SECRET)

    assert call.url == "https://api.example.com/oauth/access_token"
    assert oauth["oauth_token"] == "rq-token"
    assert oauth["oauth_verifier"] == "verifier-1"


def test_the_consent_url() -> None:
    url = oauth1.authorization_url(
        provider("twitter"),
        integration("twitter"),
        draft("twitter"),
        request_token="rq-token",
        scopes=["read"],
        callback="https://gate.example.com/cb?state=s1",
        request_params={"force_login": "true", "oauth_token": "other"},
    )

    assert parse_qsl(urlsplit(url).query) == [
        ("oauth_token", "rq-token"),
        ("scope", "read"),
        ("force_login", "true"),
        ("oauth_callback", "https://gate.example.com/cb?state=s1"),
    ]


def test_token_answers_are_read_as_forms() -> None:
    form = b"oauth_token=t-1&oauth_token_secret=ts-1-secret&user_id=9"

    credentials = oauth1.access_credentials(reply(200, form, "text/plain"), now=0.0)
    token, secret = oauth1.request_token(reply(200, form, "text/plain"), now=0.0)

    assert credentials == {
        "type": "OAUTH1",
        "oauth_token": "t-1",
        "oauth_token_secret": "ts-1-secret",
        "raw": {"oauth_token": "t-1", "oauth_token_secret": "ts-1-secret", "user_id": "9"},
    }
    assert (token, secret) == ("t-1", "ts-1-secret")
    with pytest.raises(GrantError):
        oauth1.access_credentials(reply(200, b"oauth_token=t-1", "text/plain"), now=0.0)
    with pytest.raises(GrantError):
        oauth1.request_token(reply(401, b"oauth_problem=signature_invalid", "text/plain"), now=0.0)


def test_an_unsupported_signature_method_is_a_config_error() -> None:
    with pytest.raises(AuthorizationError) as caught:
        oauth1.check_ready(
            provider("twitter-rsa"), integration("twitter-rsa"), draft("twitter-rsa")
        )

    assert caught.value.error_type == "provider_config_err"


def test_callback_parameters_the_provider_names() -> None:
    query = {"realmId": "9130", "spapi_oauth_code": "c", "other": "x", "state": "s"}

    assert oauth2.callback_metadata(provider("quickbooks"), query) == {"realmId": "9130"}
    assert oauth2.callback_metadata(provider("plain"), query) == {}
    assert oauth2.code_parameter(provider("quickbooks")) == "spapi_oauth_code"
    assert oauth2.code_parameter(provider("plain")) == "code"
