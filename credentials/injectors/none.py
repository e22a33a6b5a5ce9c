"""Connections that add nothing by default.

NONE is the unauthenticated provider. CUSTOM (GitHub App plus user OAuth) and BILL keep
several tokens and rely on the provider's templates to say which one goes where.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from credentials.injectors.base import Pairs

AUTH_TYPES = ("NONE", "CUSTOM", "BILL")


def default_auth(credentials: Mapping[str, Any]) -> Pairs:
    return ()
