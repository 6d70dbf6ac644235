"""``GET /ws``: moves frames between a socket and the sans-I/O protocol, runs timers and commands.

Every connection runs a receive loop (a handler that only sends never notices a vanished client).
Snapshots are written to the socket as they come while it keeps up; when it pushes back, a writer
task drains the connection's conflating outbox, so a slow client never delays anyone else and its
memory stays bounded.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope, Send

from gateway.codes import CloseCode, ErrorCode
from gateway.errors import GatewayError
from gateway.gateway import Gateway
from gateway.hub import Snapshot, WatchResult
from gateway.models import format_time
from gateway.outbox import Outbox, OutboxOverflow
from gateway.protocol import (
    Action,
    Authenticated,
    Close,
    ServerProtocol,
    State,
    UnwatchJobs,
    UnwatchMine,
    WatchJobs,
    WatchMine,
    ack_frame,
    error_frame,
    ready_frame,
)
from gateway.protocol import Send as SendFrame
from gateway.wsproto import EXTENSION

logger = logging.getLogger("gateway.ws")


def token_from_scope(scope: Scope) -> str | None:
    """``Authorization: Bearer …`` or ``?token=…``: never both required, header preferred."""
    authorization = header(scope, b"authorization")
    if authorization is not None:
        scheme, _, credentials = authorization.partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            return credentials.strip()
    query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
    tokens = query.get("token")
    return tokens[0] if tokens else None


def header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", []):
        if name == wanted:
            decoded: str = value.decode("latin-1")
            return decoded
    return None


def text_of(message: Message) -> str:
    text: str | None = message.get("text")
    if text is None:
        data: bytes = message.get("bytes") or b""
        text = data.decode("utf-8", errors="replace")
    return text


async def websocket_endpoint(scope: Scope, receive: Receive, send: Send) -> None:
    gateway: Gateway = scope["state"]["gateway"]
    if (await receive())["type"] != "websocket.connect":
        return
    origin = header(scope, b"origin")
    if not gateway.origin_allowed(origin, header(scope, b"host")) or gateway.draining:
        # Closing before accepting answers the upgrade with HTTP 403.
        logger.warning("WebSocket refused: origin %r not allowed or draining", origin)
        await send({"type": "websocket.close", "code": CloseCode.POLICY})
        return
    # Read before accepting: the protocol empties the scope once the connection is accepted.
    token = token_from_scope(scope)
    write_frame = scope.get("extensions", {}).get(EXTENSION)
    await send({"type": "websocket.accept"})
    running = Connection(gateway, receive, send, write_frame).run(token)
    del token  # this frame lives as long as the connection
    await running


class Connection:
    def __init__(
        self,
        gateway: Gateway,
        receive: Receive,
        send: Send,
        write_frame: Callable[[bytes], bool] | None = None,
    ) -> None:
        self.gateway = gateway
        self._write_frame = write_frame
        self._receive = receive
        self._send = send
        self.protocol = ServerProtocol(gateway.limits, gateway.verify)
        self.outbox: Outbox[Snapshot] = Outbox()
        self.owner: str | None = None
        self._closed = False
        self._counted = False
        self._writer: asyncio.Task[None] | None = None
        self._broken = False
        self.outbox.notify = self._start_writer
        self.outbox.write_now = self._write_now if write_frame is not None else None

    async def run(self, token: str | None) -> None:
        gateway = self.gateway
        gateway.metrics.connections.inc()
        gateway.closers[id(self)] = self.close
        try:
            if token is not None:
                await self._perform(self.protocol.authenticate(token))
                token = None  # this frame lives as long as the connection
            deadline = time.monotonic() + gateway.settings.auth_timeout_s
            while not self._closed:
                if self.protocol.state is State.AWAITING_AUTH:
                    try:
                        async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                            message = await self._receive()
                    except TimeoutError:
                        await self._perform(self.protocol.auth_timed_out())
                        break
                else:
                    message = await self._receive()
                if message["type"] == "websocket.disconnect":
                    break
                await self._perform(self.protocol.receive(text_of(message)))
                del message  # not kept in this frame while the connection waits for the next
        finally:
            self._closed = True
            self.outbox.close()
            writer = self._writer
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            gateway.hub.drop(self.outbox, self.owner if self.protocol.watching_mine else None)
            gateway.closers.pop(id(self), None)
            gateway.metrics.connections.dec()
            if self._counted and self.owner is not None:
                gateway.connections_by_owner[self.owner] -= 1
                if gateway.connections_by_owner[self.owner] <= 0:
                    del gateway.connections_by_owner[self.owner]

    async def close(self, code: int, reason: str) -> None:
        if self._closed:
            return
        self._closed = True
        self.gateway.metrics.closes.labels(str(code)).inc()
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except (OSError, RuntimeError) as exc:
            logger.debug("close %d on a connection already gone: %s", code, exc)

    # -- actions -------------------------------------------------------------------------------

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if self._closed:
                return
            try:
                await self._perform_one(action)
            except OutboxOverflow as exc:
                logger.warning(
                    "closing a client that does not read (owner %s): %s", self.owner, exc
                )
                await self.close(CloseCode.POLICY, "client does not read")

    async def _perform_one(self, action: Action) -> None:
        if isinstance(action, SendFrame):
            self.outbox.offer_control(action.frame)
        elif isinstance(action, Close):
            await self.close(action.code, action.reason)
        elif isinstance(action, Authenticated):
            await self._admit(action.owner)
        elif isinstance(action, WatchJobs):
            await self._watch(action)
        elif isinstance(action, WatchMine):
            await self._watch_mine(action)
        elif isinstance(action, UnwatchJobs):
            self.gateway.hub.unwatch(self.outbox, action.job_ids)
            self.outbox.offer_control(ack_frame(action.ref))
        elif isinstance(action, UnwatchMine):
            assert self.owner is not None
            self.gateway.hub.unwatch_owner(self.outbox, self.owner)
            self.outbox.offer_control(ack_frame(action.ref))

    async def _admit(self, owner: str) -> None:
        gateway = self.gateway
        limit = gateway.settings.max_connections_per_owner
        if gateway.connections_by_owner[owner] >= limit:
            logger.warning("owner %s is over its %d connections", owner, limit)
            self.protocol.state = State.CLOSED
            await self.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
            return
        gateway.connections_by_owner[owner] += 1
        self._counted = True
        self.owner = owner
        now = format_time(datetime.now(UTC))
        self.outbox.offer_control(ready_frame(gateway.limits.heartbeat_s, now))

    async def _watch(self, action: WatchJobs) -> None:
        assert self.owner is not None
        try:
            results = await self.gateway.hub.watch(self.outbox, self.owner, action.jobs)
        except GatewayError as exc:
            logger.warning(
                "subscribe of %d jobs for %s failed: %s", len(action.jobs), self.owner, exc
            )
            for job_id, _ in action.jobs:
                self.protocol.forget(job_id)
                self.outbox.offer_control(error_frame(exc.code, exc.message, job_id, action.ref))
        else:
            self._report(results, action.ref)
        self.outbox.offer_control(ack_frame(action.ref))

    async def _watch_mine(self, action: WatchMine) -> None:
        assert self.owner is not None
        try:
            results = await self.gateway.hub.watch_owner(self.outbox, self.owner)
        except GatewayError as exc:
            logger.warning("subscribe scope mine for %s failed: %s", self.owner, exc)
            self.protocol.watching_mine = False
            self.outbox.offer_control(error_frame(exc.code, exc.message, ref=action.ref))
        else:
            self._report(results, action.ref)
        self.outbox.offer_control(ack_frame(action.ref))

    def _report(self, results: list[WatchResult], ref: str | None) -> None:
        for result in results:
            if result.error is not None:
                self.protocol.forget(result.job_id)
                code = result.error.code
                if code not in (ErrorCode.NOT_FOUND, ErrorCode.FORBIDDEN):
                    code = ErrorCode.BAD_REQUEST
                self.outbox.offer_control(
                    error_frame(code, result.error.message, result.job_id, ref)
                )

    # -- writer --------------------------------------------------------------------------------
    # Snapshot frames are written eagerly: while nothing is pending and no writer task runs, the
    # outbox hands a snapshot to ``_write_now``, which puts its pre-encoded frame straight on the
    # transport in the hub's fan-out loop. Anything else (a control frame, or a transport that
    # pushes back) starts a writer task, which awaits each send while the outbox conflates;
    # eager writing resumes once the task has drained it.

    def _write_now(self, snapshot: Snapshot) -> bool:
        write_frame = self._write_frame
        return write_frame is not None and write_frame(snapshot.ws_bytes)

    def _start_writer(self) -> None:
        if self._writer is not None or self._broken or self.outbox.closed:
            return
        self.outbox.write_now = None
        self._writer = asyncio.create_task(
            self._drain(self.outbox.take_nowait()), name="pgw-ws-writer"
        )

    async def _drain(self, items: list[Snapshot | str]) -> None:
        outbox = self.outbox
        try:
            while items:
                for item in items:
                    frame = item if isinstance(item, str) else item.ws_frame
                    await self._send({"type": "websocket.send", "text": frame})
                items = outbox.take_nowait() if not outbox.closed else []
        except (OSError, RuntimeError) as exc:
            # The client is gone; the receive loop sees the disconnect and cleans up.
            self._broken = True
            logger.debug("send to owner %s failed: %s", self.owner, exc)
        finally:
            self._writer = None
            if not self._broken and not outbox.closed and self._write_frame is not None:
                outbox.write_now = self._write_now
