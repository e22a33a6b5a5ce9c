"""Single-flight: concurrent callers asking for the same key share one execution.

Like Go's `singleflight.Do`, but the shared work runs as its own task, so a caller that
is cancelled (client went away) does not cancel the work the other callers wait for.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

from credentials.tasks import spawn

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class SingleFlight(Generic[K, V]):
    def __init__(self, name: str = "single-flight") -> None:
        self._name = name
        self._inflight: dict[K, asyncio.Task[V]] = {}

    def __len__(self) -> int:
        return len(self._inflight)

    async def do(self, key: K, work: Callable[[], Awaitable[V]]) -> V:
        task = self._inflight.get(key)
        if task is None:
            task = spawn(_run(work), name=f"{self._name}:{key!r}")
            self._inflight[key] = task
            task.add_done_callback(lambda done: self._release(key, done))
        return await asyncio.shield(task)

    def _release(self, key: K, done: asyncio.Task[V]) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]


async def _run(work: Callable[[], Awaitable[V]]) -> V:
    return await work()
