"""Wait for the next change of one connection, from this process or, via Redis, any other.

A refresh that found another process holding the lock waits here instead of spinning:
the holder's compare-and-set write emits a change event, which wakes every waiter of
that connection at once. Without Redis no event crosses processes, so a wait always has
a short timeout and the waiter re-reads the store when it runs out (a short poll).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable

from credentials.store import ChangeEvent

ConnectionKey = tuple[int, str, str]


class ChangeWaiters:
    def __init__(self) -> None:
        self._waiting: dict[ConnectionKey, set[asyncio.Event]] = {}

    async def wait(self, key: ConnectionKey, timeout: float) -> bool:  # noqa: ASYNC109
        """True when the connection changed (or caches were reset) within `timeout`."""
        event = asyncio.Event()
        self._waiting.setdefault(key, set()).add(event)
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
            return event.is_set()
        finally:
            events = self._waiting.get(key)
            if events is not None:
                events.discard(event)
                if not events:
                    del self._waiting[key]

    def on_change(self, event: ChangeEvent) -> None:
        if event.kind != "connection" or not event.provider_config_key or not event.connection_id:
            # An integration or environment change may touch any of its connections.
            self._wake(lambda key: key[0] == event.environment_id)
            return
        self._wake(
            lambda key: (
                key == (event.environment_id, event.provider_config_key, event.connection_id)
            )
        )

    def reset(self) -> None:
        """Events may have been lost (Redis reconnected): everyone re-reads."""
        self._wake(lambda _: True)

    def _wake(self, matches: Callable[[ConnectionKey], bool]) -> None:
        for key, events in self._waiting.items():
            if matches(key):
                for event in events:
                    event.set()
