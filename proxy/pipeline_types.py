from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol

from proxy.context import ProxyContext

# A stage answers by raising a ProxyError or by letting the terminal stage write the
# provider's response to `ctx.reply`; nothing is returned.
Next = Callable[[ProxyContext], Awaitable[None]]


class Stage(Protocol):
    # The name `following` is part of the type: the pipeline binds it by keyword.
    def __call__(self, ctx: ProxyContext, following: Next) -> Awaitable[None]: ...
