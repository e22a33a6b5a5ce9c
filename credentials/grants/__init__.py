"""Token acquisition: turn a connection into new credentials, one module per auth mode.

`renew(GrantRequest)` dispatches on the stored credential type and returns a `Grant`
(the complete new credentials, plus the new connection_config when it changed) or
raises `GrantError`. Locking, single-flight, persistence and failure bookkeeping are the
refresh coordinator's; nothing here touches the store.

| type | module | how |
| --- | --- | --- |
| OAUTH2 | oauth2 | refresh_token grant at the token URL |
| OAUTH2_CC | client_credentials | client credentials grant again |
| APP | github_app | app JWT (RS256) → installation access token |
| JWT | jwt_assertion | signed locally, no network |
| TWO_STEP | two_step | the provider-described token (or refresh) request |

`TokenHttp` (http.py) is the only client for token endpoints; request building and
response classification are pure functions in calls.py and responses.py.
"""

from credentials.grants.base import Grant, GrantError, GrantRequest
from credentials.grants.http import TokenCall, TokenHttp, TokenReply
from credentials.grants.renew import renew, renewable

__all__ = [
    "Grant",
    "GrantError",
    "GrantRequest",
    "TokenCall",
    "TokenHttp",
    "TokenReply",
    "renew",
    "renewable",
]
