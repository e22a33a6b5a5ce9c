"""A TCP relay a test can cut and restore, to take a real server away and bring it back.

    async with TcpRelay("127.0.0.1", 5432) as relay:
        url = f"postgresql://postgres@127.0.0.1:{relay.port}/test"
        ...
        relay.cut()       # every relayed connection is aborted; new ones are closed at once
        ...
        relay.restore()   # new connections are relayed again

A cut aborts both sides (nothing flushed), which is what a client sees when the server
dies; `reset()` does the same with a TCP reset (RST), as when the network or a restarted
host drops the connection. While cut, the listening socket stays bound, so
the port does not change across a restore; connections are accepted and aborted
immediately, like a server that refuses them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from types import TracebackType

from credentials.tasks import spawn

CHUNK_BYTES = 64 * 1024


class TcpRelay:
    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._server: asyncio.Server | None = None
        self._is_cut = False
        self._links: set[asyncio.StreamWriter] = set()
        self._pumps: set[asyncio.Task[None]] = set()
        self.accepted = 0
        """How many connections were relayed (refused ones during a cut not counted)."""
        self.bytes_to_target = 0
        """Bytes the clients sent on to the target: any query or command shows here."""

    async def __aenter__(self) -> TcpRelay:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.close()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", 0)

    @property
    def port(self) -> int:
        assert self._server is not None, "start the relay first"
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def is_cut(self) -> bool:
        return self._is_cut

    @property
    def open_links(self) -> int:
        """Sockets (client and target side) currently relayed."""
        return len(self._links)

    def cut(self) -> None:
        """Abort every relayed connection, and abort new ones until `restore`."""
        self._is_cut = True
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()

    def reset(self) -> None:
        """`cut`, with an RST to every peer rather than an orderly close."""
        for writer in self._links:
            sock = writer.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.cut()

    def restore(self) -> None:
        self._is_cut = False

    async def close(self) -> None:
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for pump in list(self._pumps):
            pump.cancel()
        for pump in list(self._pumps):
            with contextlib.suppress(asyncio.CancelledError):
                await pump

    async def _relay(
        self, client_reader: asyncio.StreamReader, client: asyncio.StreamWriter
    ) -> None:
        if self._is_cut:
            client.transport.abort()
            return
        try:
            target_reader, target = await asyncio.open_connection(*self._target)
        except OSError:
            client.transport.abort()
            return
        if self._is_cut:  # cut while we were connecting
            client.transport.abort()
            target.transport.abort()
            return
        self.accepted += 1
        self._links.update((client, target))
        self._start_pump(client_reader, target, to_target=True)
        self._start_pump(target_reader, client, to_target=False)

    def _start_pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, *, to_target: bool
    ) -> None:
        pump = spawn(self._pump(source, sink, to_target), name="tcp-relay-pump")
        self._pumps.add(pump)
        pump.add_done_callback(self._pumps.discard)

    async def _pump(
        self, source: asyncio.StreamReader, sink: asyncio.StreamWriter, to_target: bool
    ) -> None:
        try:
            while chunk := await source.read(CHUNK_BYTES):
                if to_target:
                    self.bytes_to_target += len(chunk)
                sink.write(chunk)
                await sink.drain()
        except OSError:
            pass  # the other side was reset, by a cut or by its owner
        finally:
            # One direction ended: end the whole link, as a dead server would.
            self._links.discard(sink)
            sink.transport.abort()
