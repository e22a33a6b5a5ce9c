"""Stage 4: credentials that are good now — renewed first when they are due.

A warm request compares one number (`refresh_due_at`) and moves on. A due one waits for
the single refresh of its connection (see `credentials.refresh`) and carries on with the
renewed credentials. The same renewal, forced, is what the forward stage asks for when
the provider answers 401 (`reauthorize`).
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from credentials.database import StoreUnavailable
from credentials.refresh import (
    NeedsReauthorization,
    RefreshBackoff,
    Refresher,
    RefreshError,
    still_valid,
)
from proxy.context import ProxyContext, Target
from proxy.errors import InvalidCredentials, ProxyError, RefreshBackingOff, RefreshFailed
from proxy.pipeline_types import Stage
from proxy.stages.inject import apply_credentials
from proxy.targets import TargetCache

Reauthorize = Callable[[ProxyContext], Awaitable[bool]]


def freshen(refresher: Refresher, targets: TargetCache) -> Stage:
    async def renew(ctx: ProxyContext) -> None:
        ctx.target = await _renewed(ctx, refresher, targets, ctx.resolved, force=False)

    def stage(ctx: ProxyContext) -> Coroutine[Any, Any, None] | None:
        if time.time() >= ctx.resolved.refresh_due_at:
            return renew(ctx)
        return None

    return stage


def reauthorizer(refresher: Refresher, targets: TargetCache) -> Reauthorize:
    """After a provider 401: renew once (forced) and rebuild the outbound headers.

    True when there are new credentials to replay with; False when the credentials
    cannot be renewed, so the provider's 401 stands.
    """

    async def reauthorize(ctx: ProxyContext) -> bool:
        before = ctx.resolved
        after = await _renewed(ctx, refresher, targets, before, force=True)
        if after.connection.version == before.connection.version:
            return False
        ctx.target = after
        apply_credentials(ctx)
        return True

    return reauthorize


async def _renewed(
    ctx: ProxyContext, refresher: Refresher, targets: TargetCache, target: Target, *, force: bool
) -> Target:
    try:
        connection = await refresher.fresh(
            target.connection, target.integration, target.provider, force=force
        )
    except RefreshError as failure:
        ctx.outcome.refresh = failure.reason or "failed"
        raise _as_proxy_error(failure, target) from None
    except StoreUnavailable:
        ctx.outcome.refresh = "store_unavailable"
        # Renewal needs the store (re-read, compare-and-set). Until it is back, a token
        # that is due but not yet expired still works; an expired one cannot.
        if force or not still_valid(target.connection, time.time()):
            raise
        return target
    renewed = connection.version != target.connection.version
    ctx.outcome.refresh = "renewed" if renewed else "unchanged"
    return targets.renewed(target, connection)


def _as_proxy_error(failure: RefreshError, target: Target) -> ProxyError:
    connection_id = target.connection.connection_id
    if isinstance(failure, NeedsReauthorization):
        return InvalidCredentials(f"Connection {connection_id}: {failure}")
    if isinstance(failure, RefreshBackoff):
        return RefreshBackingOff(str(failure))
    return RefreshFailed(f"Connection {connection_id}: {failure}")
