"""The one timer of a connection: its idle or header deadline.

A connection moves its deadline on every request; rescheduling a TimerHandle each time
would cost an allocation and a heap operation per request. Instead a deadline that moves
later is only recorded: the pending timer fires early, sees the newer deadline and
re-arms itself once. Only a deadline earlier than the pending timer reschedules.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

NONE, IDLE, HEADER = 0, 1, 2

# A timer may fire this early without being re-armed.
_SLACK = 0.005


class Deadline:
    __slots__ = ("_callback", "_deadline", "_handle", "_handle_when", "_kind", "_loop")

    def __init__(self, loop: asyncio.AbstractEventLoop, callback: Callable[[int], None]) -> None:
        self._loop = loop
        self._callback = callback  # called with the kind whose deadline passed
        self._kind = NONE
        self._deadline = 0.0
        self._handle: asyncio.TimerHandle | None = None
        self._handle_when = 0.0

    def set(self, kind: int, deadline: float) -> None:
        self._kind = kind
        self._deadline = deadline
        handle = self._handle
        if handle is not None:
            if self._handle_when <= deadline:
                return
            handle.cancel()
        self._schedule(deadline)

    def clear(self) -> None:
        """No deadline for now (a handler is running); the pending timer lapses."""
        self._kind = NONE

    def cancel(self) -> None:
        self._kind = NONE
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _schedule(self, when: float) -> None:
        self._handle_when = when
        self._handle = self._loop.call_at(when, self._fire)

    def _fire(self) -> None:
        self._handle = None
        kind = self._kind
        if kind == NONE:
            return
        if self._deadline - self._loop.time() > _SLACK:
            self._schedule(self._deadline)
            return
        self._kind = NONE
        self._callback(kind)
