"""A TCP proxy between the gateways and redis-server that injects network faults on demand.

The proxy runs its own event loop in a daemon thread, so the faults it injects do not depend on
how busy the test's loop is, and the test controls it with plain blocking calls:

- ``cut()``: abort every connection (like a reset) and refuse new ones until ``heal()``;
- ``stall()``: keep every socket open but forward no byte either way until ``heal()``
  (a frozen network path: reads hang, kernel buffers fill);
- ``silence()``: keep forwarding client → server, drop server → client on the connections open
  now (by default only pub/sub subscribers, recognised by the ``SUBSCRIBE`` they send), for as
  long as they live: the half-dead subscription that a failover can leave behind.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

logger = logging.getLogger("tests.chaos.fault_proxy")

T = TypeVar("T")
CHUNK = 1 << 16
# A subscriber's command as RESP writes it (redis-py, hiredis): the verb alone on its line.
_SUBSCRIBE = b"\r\nsubscribe\r\n"


class _Link:
    """One client connection and its upstream twin."""

    __slots__ = ("client", "silent", "subscriber", "upstream")

    def __init__(self, client: asyncio.StreamWriter, upstream: asyncio.StreamWriter) -> None:
        self.client = client
        self.upstream = upstream
        self.subscriber = False
        self.silent = False

    def abort(self) -> None:
        self.client.transport.abort()
        self.upstream.transport.abort()


class FaultProxy:
    """Forwards ``127.0.0.1:port`` to ``upstream_port``; see the module docstring for faults."""

    def __init__(self, upstream_port: int, host: str = "127.0.0.1") -> None:
        self.host = host
        self.upstream_port = upstream_port
        self.port = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="fault-proxy", daemon=True
        )
        self._links: set[_Link] = set()
        self._refusing = False
        self._flowing: asyncio.Event | None = None
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"

    def start(self) -> None:
        self._thread.start()
        self._call(self._start())

    def close(self) -> None:
        if not self._thread.is_alive():
            return
        self._call(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def cut(self) -> None:
        self._call(self._cut())

    def stall(self) -> None:
        self._call(self._set_flowing(False))

    def silence(self, *, subscribers_only: bool = True) -> int:
        """Drop server → client bytes on the open (subscriber) connections; returns how many."""
        return self._call(self._silence(subscribers_only))

    def heal(self) -> None:
        """Accept and forward again; connections already silenced stay silent until they close."""
        self._call(self._heal())

    def subscribers(self) -> int:
        return self._call(self._count_subscribers())

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _start(self) -> None:
        self._flowing = asyncio.Event()
        self._flowing.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for link in list(self._links):
            link.abort()
        await self._server.wait_closed()

    async def _cut(self) -> None:
        self._refusing = True
        for link in list(self._links):
            link.abort()

    async def _set_flowing(self, flowing: bool) -> None:
        assert self._flowing is not None
        if flowing:
            self._flowing.set()
        else:
            self._flowing.clear()

    async def _silence(self, subscribers_only: bool) -> int:
        chosen = [link for link in self._links if link.subscriber or not subscribers_only]
        for link in chosen:
            link.silent = True
        return len(chosen)

    async def _heal(self) -> None:
        self._refusing = False
        await self._set_flowing(True)

    async def _count_subscribers(self) -> int:
        return sum(1 for link in self._links if link.subscriber and not link.silent)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.upstream_port)
        except OSError:
            # Upstream down (redis-server killed): the client sees its connection reset.
            writer.transport.abort()
            return
        link = _Link(writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                self._pump(link, reader, up_writer, upstream=True),
                self._pump(link, up_reader, writer, upstream=False),
            )
        finally:
            self._links.discard(link)
            link.abort()

    async def _pump(
        self,
        link: _Link,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        *,
        upstream: bool,
    ) -> None:
        """Copy one direction until either side closes; closing one side closes the link."""
        assert self._flowing is not None
        try:
            while data := await reader.read(CHUNK):
                if upstream and not link.subscriber and _SUBSCRIBE in data.lower():
                    link.subscriber = True
                await self._flowing.wait()
                if link.silent and not upstream:
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError) as exc:
            logger.debug("proxy link to port %d closed: %r", self.upstream_port, exc)
        finally:
            link.abort()
