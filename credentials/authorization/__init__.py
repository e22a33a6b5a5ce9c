"""The authorisation flows an end user runs in a browser popup, as pure steps and token
calls; the management routes (management/routes/oauth.py) drive them and keep state.

| module | what |
| --- | --- |
| common | `AuthorizationError` (the error types the SDK reports), templates, policy |
| oauth2 | authorize URL with PKCE; the code exchange, built and parsed like a refresh |
| oauth1 | OAuth 1.0a: request token, consent URL, access token, signed by oauthlib |
| github_app | a GitHub App installation: the install URL, what GitHub sends back |

Nothing here touches the store; every network call goes through the SSRF-checked token
client (`credentials.grants.TokenHttp`), which the caller passes the built `TokenCall`.
"""

from credentials.authorization.common import AuthorizationError, draft_connection

__all__ = ["AuthorizationError", "draft_connection"]
