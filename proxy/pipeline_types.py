from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from proxy.context import ProxyContext

# A stage does its part of the request and either finishes at once (returns None: the
# warm path, no coroutine made) or returns the coroutine that finishes it (a cache miss,
# a renewal, a rate-limit wait). It answers the caller by raising a ProxyError; the
# terminal stage writes the provider's response to `ctx.reply`.
Stage = Callable[[ProxyContext], Coroutine[Any, Any, None] | None]
Terminal = Callable[[ProxyContext], Awaitable[None]]
