"""Background tasks that are never garbage-collected mid-flight.

The event loop keeps only weak references to tasks; a task nobody holds can vanish
before it finishes. Every background task in authgate starts through `spawn`.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")

_running: set[asyncio.Task[Any]] = set()


def spawn(coroutine: Coroutine[Any, Any, T], *, name: str) -> asyncio.Task[T]:
    task = asyncio.create_task(coroutine, name=name)  # noqa: TID251 - the one sanctioned call
    _running.add(task)
    task.add_done_callback(_forget)
    return task


def _forget(task: asyncio.Task[Any]) -> None:
    _running.discard(task)
    if not task.cancelled():
        # Marks a failure as seen: whoever awaited the task already got it.
        task.exception()
