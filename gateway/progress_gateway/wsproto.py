"""uvicorn's sans-I/O WebSocket protocol, leaner per connection, plus one extension.

The extension writes a pre-encoded frame: a snapshot's server frame (unmasked, so identical for
every client) is encoded once by the hub; ``scope["extensions"]["pgw.write_frame"](frame)`` hands
those bytes straight to the transport when the connection is open and not pushing back, and
returns False otherwise (the caller then uses the ordinary ASGI send, which waits for the
transport).

Memory: an idle gateway holds tens of thousands of these, so what each keeps counts. uvicorn gives
every connection an ``asyncio.Queue`` and an ``asyncio.Event`` (four ``deque`` blocks, ~3 KiB);
here they are a list and a flag with lazily made waiters. uvicorn's protocol sets more attributes
than CPython's shared-key instance dicts hold (30), so each instance got a dict of its own
(1.6 KiB); here every attribute is a slot. The handshake's request, response and scope are
emptied once the connection is accepted (websockets' parser generator keeps the request alive;
the query string may hold the token). Server pings start at a random phase.

It overrides and reads uvicorn's private protocol state, which changes between minor releases
(0.52.1 added the close timer and ``disconnected`` it relies on; before 0.45 there were no server
pings). ``TESTED_UVICORN`` is the range it was tested on, pinned by ``pyproject.toml`` too; on any
other uvicorn ``protocol_class`` falls back to uvicorn's own protocol with a warning.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import socket
from typing import Any, Literal, cast

import uvicorn
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

EXTENSION = "pgw.write_frame"
# The same keepalive ping for every connection (a server frame is not masked): encoded once.
PING_PAYLOAD = b"pgw!"
PING_FRAME = bytes((0x89, len(PING_PAYLOAD))) + PING_PAYLOAD
CLOSE_EXTENSION = "pgw.close_now"
# The uvicorn releases FrameWriterProtocol is tested on: lowest included, highest excluded. The
# `server` extra in pyproject.toml pins the same range (a test compares them).
TESTED_UVICORN = ("0.52.1", "0.56")

WsImpl = Literal["lean", "uvicorn"]
logger = logging.getLogger("progress_gateway.wsproto")


def release(version: str) -> tuple[int, ...]:
    """``"0.55.0"`` → ``(0, 55, 0)``; a suffix (``rc1``, ``.dev2``) is ignored."""
    match = re.match(r"\d+(?:\.\d+)*", version)
    if match is None:
        raise ValueError(f"not a version number: {version!r}")
    return tuple(int(part) for part in match.group().split("."))


def uvicorn_tested(version: str) -> bool:
    lowest, above = TESTED_UVICORN
    return release(lowest) <= release(version) < release(above)


def enable_tcp_keepalive(sock: Any, idle_s: float) -> None:
    """Probe after ``idle_s`` of silence, then every quarter of it; four misses close it."""
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    if hasattr(socket, "TCP_KEEPIDLE"):  # Linux; elsewhere the system's defaults apply
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, max(1, int(idle_s)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, max(1, int(idle_s / 4)))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)


class ReceiveQueue:
    """The part of ``asyncio.Queue`` uvicorn uses, for the one task that reads a connection."""

    __slots__ = ("_items", "_waiter")

    def __init__(self) -> None:
        self._items: list[Any] = []
        self._waiter: asyncio.Future[None] | None = None

    def put_nowait(self, item: Any) -> None:
        self._items.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    async def get(self) -> Any:
        while not self._items:
            if self._waiter is not None:
                raise RuntimeError("a WebSocket connection is read by one task at a time")
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._items.pop(0)


class WritableFlag:
    """The part of ``asyncio.Event`` uvicorn uses for flow control; waiters only while paused."""

    __slots__ = ("_set", "_waiters")

    def __init__(self) -> None:
        self._set = True
        self._waiters: list[asyncio.Future[None]] | None = None

    def is_set(self) -> bool:
        return self._set

    def set(self) -> None:
        self._set = True
        waiters, self._waiters = self._waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)

    def clear(self) -> None:
        self._set = False

    async def wait(self) -> None:
        if self._set:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self._waiters is None:
            self._waiters = []
        self._waiters.append(waiter)
        try:
            await waiter
        finally:
            if self._waiters is not None and waiter in self._waiters:
                self._waiters.remove(waiter)


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    # Every attribute uvicorn's protocol sets (tests/gateway/test_wsproto.py checks that none is
    # left in an instance dict): a slot is 8 bytes, a dict entry of a 37-key dict ~40.
    __slots__ = (
        "app",
        "app_state",
        "asgi_version",
        "client",
        "close_sent",
        "close_timeout",
        "close_timer",
        "config",
        "conn",
        "connections",
        "curr_msg_data_type",
        "default_headers",
        "disconnected",
        "frames",
        "handshake_complete",
        "handshake_initiated",
        "heard_at",
        "initial_response",
        "last_ping_rtt",
        "logger",
        "loop",
        "pending_ping_payload",
        "ping_interval",
        "ping_sent_at",
        "ping_timeout",
        "ping_timer",
        "pong_timer",
        "queue",
        "read_paused",
        "request",
        "response",
        "root_path",
        "scheme",
        "scope",
        "server",
        "tasks",
        "transport",
        "writable",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.queue = ReceiveQueue()  # type: ignore[assignment]
        self.writable = WritableFlag()  # type: ignore[assignment]

    def connection_made(self, transport: Any) -> None:
        """Dead peers are found by the kernel: TCP keepalive probes a connection idle for one
        heartbeat and drops it after four unanswered probes, without waking this process.

        A WebSocket ping per connection per interval costs ~60 µs of the gateway's CPU (a
        loopback send and the pong's read and parse): 1.5 % of a core for 5,000 idle
        connections at 20 s. Server pings remain for proxies that close idle connections
        (``GATEWAY_WS_PING_S``); browsers keep theirs alive with ``{"op":"ping"}``.
        """
        super().connection_made(transport)
        enable_tcp_keepalive(transport.get_extra_info("socket"), self.ping_timeout or 20.0)

    def start_keepalive(self) -> None:
        """First check at a random point in the second half of the interval, not at exactly one.

        Connections opened together (a deploy, a reconnect storm) would otherwise ping together
        every interval forever: thousands of pings and pongs in one burst that every delivery
        queues behind. Later checks follow from when the peer was last heard.
        """
        interval = self.ping_interval
        if interval is not None and interval > 0:
            self.heard_at = self.loop.time()
            delay = interval * random.uniform(0.5, 1.0)
            self.ping_timer = self.loop.call_later(delay, self.send_keepalive_ping)

    def data_received(self, data: bytes) -> None:
        self.heard_at = self.loop.time()
        super().data_received(data)

    def send_keepalive_ping(self) -> None:
        """Keepalive with one timer per interval, and no ping to a peer heard from lately.

        uvicorn pings every interval whatever the traffic, with a frame built per ping and three
        timers per round (ping, pong deadline, next ping). Here a peer that sent anything within
        the interval (a browser's own ``{"op":"ping"}``, a subscribe, a pong) is alive and is
        not pinged; a quiet one gets a pre-encoded ping, and the same timer, one
        ``ping_timeout`` later, closes it (1011) unless something arrived meanwhile.
        """
        self.ping_timer = None
        if self.close_sent or self.transport.is_closing() or self.conn.state is not State.OPEN:
            return
        now = self.loop.time()
        interval = cast(float, self.ping_interval)
        if self.pending_ping_payload is not None:
            if self.heard_at < self.ping_sent_at:
                self.keepalive_timeout()
                return
            self.pending_ping_payload = None
        due = self.heard_at + interval
        # Heard a moment after the last check (the pong to its ping): ping now rather than arm
        # one more timer for the round trip's worth of time.
        if now < due - min(1.0, interval / 10):
            self.ping_timer = self.loop.call_at(due, self.send_keepalive_ping)
            return
        self.pending_ping_payload = PING_PAYLOAD
        self.ping_sent_at = now
        self.transport.write(PING_FRAME)
        deadline = now + (self.ping_timeout or interval)
        self.ping_timer = self.loop.call_at(deadline, self.send_keepalive_ping)

    def keepalive_timeout(self) -> None:
        """Nothing heard for a whole timeout: close (1011) and abort after ``close_timeout``.

        uvicorn's plain close would wait for a peer that may never read again to take the bytes.
        """
        self.pending_ping_payload = None
        self.close_now(1011, "keepalive ping timeout")

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self.write_frame
            scope["extensions"][CLOSE_EXTENSION] = self.close_now

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # The handshake is over: keep neither its request and response nor the scope's
            # contents for the lifetime of the connection (uvicorn reads the scope only until
            # then; the endpoint reads what it needs before accepting).
            self.request.headers.clear()
            self.request.path = ""
            self.request = self.response = None  # type: ignore[assignment]
            scope = cast(dict[str, Any], self.scope)
            scope.clear()
            scope["type"] = "websocket"  # what Starlette's error handling still looks at

    def write_frame(self, frame: bytes) -> bool:
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True

    def handle_parser_exception(self) -> None:
        """A frame over the size limit or not UTF-8: close with 1009 / 1007 without a reset.

        uvicorn closes the socket at once, with the rest of the bad frame (and whatever the
        client sent after it) unread; the kernel then resets the connection and the client
        never sees the close frame, only a dropped connection (1006). Instead, as websockets
        does: send the close frame, shut down the writing side, keep reading (websockets
        discards it) until the client closes its side, and abort after ``close_timeout``.
        """
        # The close frame (none if the app had closed already), then the end of the stream.
        output = self.conn.data_to_send()
        if output:
            self.transport.write(b"".join(output))
            if self.conn.eof_sent and self.transport.can_write_eof():
                self.transport.write_eof()
        if self.close_sent:
            return  # the app closed first (its timer runs), or called again for a later read
        assert self.conn.close_sent is not None
        code, reason = self.conn.close_sent.code, self.conn.close_sent.reason
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)

    def close_now(self, code: int, reason: str) -> None:
        """Close without waiting for the socket to take more (uvicorn's close waits for it).

        For a client that does not read: its close frame goes behind what is buffered and the
        app sees the disconnect at once. Reading goes on (frames are dropped) so that closing
        the socket never meets unread input, which would reset the connection and lose the
        close frame; the transport is aborted after ``close_timeout`` unless the client has
        answered the close by then (a plain close would wait for it to read, forever).
        """
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return  # already closing: the app gets its disconnect from that path
        self.queue.put_nowait({"type": "websocket.disconnect", "code": code, "reason": reason})
        self.conn.send_close(code, reason)
        self.transport.write(b"".join(self.conn.data_to_send()))
        self.close_sent = True
        if self.read_paused:
            self.read_paused = False
            self.transport.resume_reading()
        self.close_timer = self.loop.call_later(self.close_timeout, self.transport.abort)


def protocol_class(
    impl: WsImpl, uvicorn_version: str = uvicorn.__version__
) -> type[WebSocketsSansIOProtocol]:
    """The class for uvicorn's ``ws=``: ours (``lean``) or uvicorn's own (``uvicorn``).

    ``lean`` on a uvicorn outside ``TESTED_UVICORN`` (forced past the pin) gets uvicorn's own
    protocol and a warning: that one is correct on every release, only heavier per connection,
    whereas our subclass could misbehave silently where uvicorn's internals changed.
    """
    if impl == "uvicorn":
        return WebSocketsSansIOProtocol
    if uvicorn_tested(uvicorn_version):
        return FrameWriterProtocol
    lowest, above = TESTED_UVICORN
    logger.warning(
        "uvicorn %s is outside the range the lean WebSocket protocol is tested on (>=%s,<%s): "
        "using uvicorn's own protocol instead (as GATEWAY_WS_IMPL=uvicorn would); install a "
        "uvicorn in that range to get the lean one back",
        uvicorn_version,
        lowest,
        above,
    )
    return WebSocketsSansIOProtocol
