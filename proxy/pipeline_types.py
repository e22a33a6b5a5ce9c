"""The stage signature, apart from the pipeline so stage modules can import it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from proxy.context import ProxyContext

Next = Callable[[ProxyContext], Awaitable[web.StreamResponse]]
Stage = Callable[[ProxyContext, Next], Awaitable[web.StreamResponse]]
