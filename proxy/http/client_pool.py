"""The connections of one (scheme, host, port): idle ones for reuse, and the per-host limit.

Idle connections are reused newest first (LIFO: the one most likely still open on the
server), so expired ones gather at the old end and are pruned from there. A connection
counts against the limit from the moment its slot is reserved until it is dropped.
When the limit is reached, requests queue FIFO; a released connection, or the slot of a
dropped one, goes straight to the first live waiter.
"""

from __future__ import annotations

import asyncio
from collections import deque

from proxy.http.client_connection import Connection
from proxy.http.client_errors import ClientError

IDLE = 1
BUSY = 2
GONE = 3

# What a waiter receives: a connection to use as is, or None (a slot: open a new one).
_Turn = asyncio.Future[Connection | None]


class HostPool:
    __slots__ = (
        "_idle",
        "_keepalive",
        "_limit",
        "_loop",
        "_open",
        "_registry",
        "_waiters",
        "closed",
    )

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        keepalive: float,
        limit: int,
        registry: set[Connection],
    ) -> None:
        self._loop = loop
        self._keepalive = keepalive
        self._limit = limit
        self._registry = registry  # the client's set of every open connection
        self._idle: deque[Connection] = deque()
        self._open = 0
        self._waiters: deque[_Turn] = deque()
        self.closed = False

    @property
    def idle(self) -> int:
        return len(self._idle)

    @property
    def in_use(self) -> int:
        return self._open - len(self._idle)

    def take_idle(self, now: float) -> Connection | None:
        """The newest idle connection still fit for reuse, dropping unfit ones met on the way."""
        idle = self._idle
        fresh_after = now - self._keepalive
        while idle:
            conn = idle.pop()
            conn.pool_state = BUSY
            if conn.idle_since > fresh_after and conn.writable:
                return conn
            self.drop(conn, abort=False)
        return None

    def reserve(self) -> bool:
        """Count a connection about to be opened, if the limit allows it."""
        if self._limit and self._open >= self._limit:
            return False
        self._open += 1
        return True

    async def wait_turn(self, deadline: float | None) -> Connection | None:
        """Queue for a connection or a slot; TimeoutError at the deadline."""
        turn: _Turn = self._loop.create_future()
        self._waiters.append(turn)
        try:
            if deadline is None:
                return await turn
            async with asyncio.timeout_at(deadline):
                return await turn
        except BaseException:
            if turn.done() and not turn.cancelled() and turn.exception() is None:
                self._give_back(turn.result())  # handed over as we were cancelled
            else:
                turn.cancel()
            raise

    def adopt(self, conn: Connection) -> None:
        """A connection opened in a reserved slot is now in use."""
        conn.pool_state = BUSY
        self._registry.add(conn)

    def checkin(self, conn: Connection) -> None:
        """A connection whose response ended cleanly: to a waiter, else to the idle set."""
        if self.closed:
            self.drop(conn, abort=False)
            return
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(conn)
                return
        now = self._loop.time()
        conn.pool_state = IDLE
        conn.idle_since = now
        idle = self._idle
        idle.append(conn)
        fresh_after = now - self._keepalive
        while idle and idle[0].idle_since <= fresh_after:
            stale = idle.popleft()
            stale.pool_state = BUSY
            self.drop(stale, abort=False)

    def drop(self, conn: Connection, *, abort: bool) -> None:
        """Close a connection that is not in the idle set and free its slot (once)."""
        if conn.pool_state == GONE:
            return
        conn.pool_state = GONE
        self._registry.discard(conn)
        conn.close_transport(abort)
        self.release_slot()

    def recycle(self, conn: Connection) -> None:
        """Close a connection but keep its slot for a new one opened in its place."""
        conn.pool_state = GONE
        self._registry.discard(conn)
        conn.close_transport(abort=False)

    def lost(self, conn: Connection) -> None:
        """The transport of ``conn`` is gone; an idle one leaves the pool now."""
        if conn.pool_state == IDLE:
            self._idle.remove(conn)
            conn.pool_state = BUSY
            self.drop(conn, abort=False)

    def release_slot(self) -> None:
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_result(None)  # the slot passes on; the count stays
                return
        self._open -= 1

    def close(self) -> None:
        """No more reuse; queued requests fail with ClientError."""
        self.closed = True
        while self._waiters:
            turn = self._waiters.popleft()
            if not turn.done():
                turn.set_exception(ClientError("the client was closed"))
        while self._idle:
            conn = self._idle.pop()
            conn.pool_state = BUSY
            self.drop(conn, abort=False)

    def _give_back(self, conn: Connection | None) -> None:
        if conn is None:
            self.release_slot()
        else:
            self.checkin(conn)
