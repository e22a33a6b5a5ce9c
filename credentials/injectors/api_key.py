"""API keys: no default header.

Where the key goes differs per provider (`authorization: Bearer ${apiKey}`,
`x-api-key: ${apiKey}`, `?key=${apiKey}`), so the catalogue's templates place it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from credentials.injectors.base import Pairs

AUTH_TYPES = ("API_KEY",)


def default_auth(credentials: Mapping[str, Any]) -> Pairs:
    return ()
