"""Installing a GitHub App (APP mode, reference §6.4): the popup goes to the app's
installation page; GitHub sends the browser back to the app's Setup URL (authgate's
`/app-auth/connect`) with `installation_id`, `setup_action` and the `state`. The
installation token is then minted like any APP renewal (credentials/grants/github_app.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from credentials.authorization.common import AuthorizationError
from credentials.models import Integration, JsonDict

INSTALL_PATH: Final = "/installations/new"
# GitHub's installation ids are positive integers; anything else did not come from it.
_MAX_ID_DIGITS: Final = 20


def installation_url(integration: Integration) -> str:
    """`<app_link>/installations/new`: where a user picks the account to install on."""
    link = _app_link(integration)
    return link.rstrip("/") + INSTALL_PATH


def installation_id(query: Mapping[str, str]) -> str:
    """The installation GitHub reports; refuses what an installation never needs
    approving for (`setup_action=request`: an organisation owner must approve first)."""
    if query.get("setup_action") == "request":
        raise AuthorizationError(
            "callback_err",
            "The installation is waiting for an organisation owner's approval; "
            "connect again once it is approved",
        )
    value = query.get("installation_id", "")
    if not value.isdigit() or len(value) > _MAX_ID_DIGITS or value.startswith("0"):
        raise AuthorizationError("callback_err", "GitHub sent back no valid installation_id")
    return value


def installation_config(
    requested: Mapping[str, Any], integration: Integration, installation: str
) -> JsonDict:
    """The new connection's config: what the browser asked for, then the installation
    and the app it belongs to (which the token URL and later renewals read)."""
    app_id = (integration.credentials or {}).get("app_id")
    return {
        **requested,
        "installation_id": installation,
        "app_id": str(app_id) if app_id is not None else None,
        "appPublicLink": _app_link(integration),
    }


def _app_link(integration: Integration) -> str:
    link = (integration.credentials or {}).get("app_link")
    parts = urlsplit(link) if isinstance(link, str) else None
    if parts is None or parts.scheme not in ("http", "https") or not parts.netloc:
        raise AuthorizationError(
            "provider_config_err",
            f"The integration {integration.unique_key!r} has no app_link (the app's public page)",
        )
    assert isinstance(link, str)
    return link
