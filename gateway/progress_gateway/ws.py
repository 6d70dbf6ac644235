"""``GET /ws``: moves frames between a socket and the sans-I/O protocol, runs timers and commands.

Every connection runs a receive loop (a handler that only sends never notices a vanished client).
Snapshots are written to the socket as they come while it keeps up; when it pushes back, a writer
task drains the connection's conflating outbox, so a slow client never delays anyone else and its
memory stays bounded.

A client that does not read is closed with 1008 "client does not read" at once, without waiting
for its socket: when frames have waited ``GATEWAY_SEND_STALL_S`` with nothing accepted by the
socket, or when more than ``GATEWAY_MAX_PENDING_BYTES`` wait (see ``progress_gateway.outbox``). A
writer that fails for any other reason closes the connection with 1011: a live socket that never
sends again is worse than a reconnect.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from urllib.parse import parse_qs

from starlette.types import Message, Receive, Scope, Send

from progress_core.codes import CloseCode, ErrorCode
from progress_core.errors import GatewayError
from progress_core.models import format_time
from progress_gateway.auth import KeyRefreshNeeded
from progress_gateway.gateway import Gateway
from progress_gateway.hub import Snapshot, WatchResult
from progress_gateway.outbox import Outbox
from progress_gateway.protocol import (
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
from progress_gateway.protocol import Send as SendFrame
from progress_gateway.wsproto import CLOSE_EXTENSION, EXTENSION

logger = logging.getLogger("progress_gateway.ws")

# What an update frame adds to its job's snapshot: '{"op":"update","job":' and '}'.
UPDATE_OVERHEAD = 22
# Closes sent without the server's close extension (another ASGI server), until they finish.
_closing: set[asyncio.Task[None]] = set()


def frame_size(snapshot: Snapshot) -> int:
    """A pending snapshot's share of its outbox's bytes (characters of its frame)."""
    return len(snapshot.raw) + UPDATE_OVERHEAD


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
    extensions = scope.get("extensions", {})
    write_frame, close_now = extensions.get(EXTENSION), extensions.get(CLOSE_EXTENSION)
    del extensions
    await send({"type": "websocket.accept"})
    running = Connection(gateway, receive, send, write_frame, close_now).run(token)
    del token  # this frame lives as long as the connection
    await running


class Connection:
    def __init__(
        self,
        gateway: Gateway,
        receive: Receive,
        send: Send,
        write_frame: Callable[[bytes], bool] | None = None,
        close_now: Callable[[int, str], None] | None = None,
    ) -> None:
        self.gateway = gateway
        self._write_frame = write_frame
        self._close_now = close_now
        self._receive = receive
        self._send = send
        self.protocol = ServerProtocol(gateway.limits, gateway.verify)
        self.outbox: Outbox[Snapshot] = Outbox(
            max_bytes=gateway.settings.max_pending_bytes, size=frame_size
        )
        self.outbox.overflow = self._overflowed
        self.owner: str | None = None
        self._closed = False
        self._counted = False
        self._writer: asyncio.Task[None] | None = None
        self._broken = False
        # Loop time of the writer's last completed send (or of its start), and the timer that
        # closes the connection when the socket accepts nothing for ``send_stall_s``.
        self._progress_at = 0.0
        self._watchdog: asyncio.TimerHandle | None = None
        # Resolved when the writer takes what waits (the receive loop waits on a backlog).
        self._taken: asyncio.Future[None] | None = None
        self.outbox.notify = self._start_writer
        self.outbox.write_now = self._write_now if write_frame is not None else None

    async def run(self, token: str | None) -> None:
        gateway = self.gateway
        gateway.metrics.connections.inc()
        gateway.closers[id(self)] = self.close
        try:
            if token is not None:
                await self._step(self.protocol.authenticate, token)
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
                if self.outbox.backlogged():
                    await self._wait_for_writer()
                    if self._closed:
                        break
                self.outbox.begin_answer()
                try:
                    await self._step(self.protocol.receive, text_of(message))
                except Exception as exc:  # noqa: BLE001 - logged once by _abandon, then closed
                    self._abandon(CloseCode.INTERNAL_ERROR, "internal error", "a frame failed", exc)
                    break
                finally:
                    self.outbox.end_answer()
                del message  # not kept in this frame while the connection waits for the next
        finally:
            self._closed = True
            self.outbox.close()
            if self._watchdog is not None:
                self._watchdog.cancel()
                self._watchdog = None
            writer = self._writer
            if writer is not None:
                writer.cancel()
                await asyncio.gather(writer, return_exceptions=True)
            gateway.hub.drop(self.outbox, self.owner if self.protocol.watching_mine else None)
            gateway.closers.pop(id(self), None)
            gateway.metrics.connections.dec()
            if self._counted and self.owner is not None:
                self._counted = False
                gateway.budget.release(self.owner, "ws")

    async def close(self, code: int, reason: str) -> None:
        """Close in order after what is being sent; at once if the socket stays blocked."""
        if self._closed:
            return
        self._closed = True
        self.gateway.metrics.closes.labels(str(code)).inc()
        stall_s = self.gateway.settings.send_stall_s
        try:
            async with asyncio.timeout(stall_s):
                await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except TimeoutError:
            logger.warning(
                "close %d of owner %s waited %.1fs for the socket: closing it now",
                code,
                self.owner,
                stall_s,
            )
            self._force_close(code, reason)
        except (OSError, RuntimeError) as exc:
            logger.debug("close %d on a connection already gone: %s", code, exc)

    def _abandon(self, code: int, reason: str, why: str, exc: BaseException | None = None) -> None:
        """Close now, without waiting for the socket (it does not read, or cannot be written):
        the receive loop ends and everything the connection holds is freed. Logs once."""
        if self._closed:
            return
        self._closed = True
        self.gateway.metrics.closes.labels(str(code)).inc()
        log = logger.warning if exc is None else logger.error
        log("closing owner %s's connection with %d: %s", self.owner, code, why, exc_info=exc)
        self.outbox.close()
        self._wake_reader()
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        self._force_close(code, reason)

    def _force_close(self, code: int, reason: str) -> None:
        if self._close_now is not None:
            self._close_now(code, reason)
            return
        # Another ASGI server: its close waits for the socket like any other frame.
        message: Message = {"type": "websocket.close", "code": code, "reason": reason}
        task = asyncio.ensure_future(self._send(message))
        _closing.add(task)
        task.add_done_callback(_closed_without_extension)

    def _overflowed(self) -> None:
        self._abandon(
            CloseCode.POLICY,
            "client does not read",
            f"over {self.gateway.settings.max_pending_bytes} bytes of frames wait for it",
        )

    async def _wait_for_writer(self) -> None:
        """Answers to earlier frames are over ``max_pending_bytes``: read no further frame until
        the writer has taken them. The stall watchdog closes a client that never lets it."""
        while not self._closed and self._writer is not None and self.outbox.backlogged():
            waiter = self._taken = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._taken = None

    def _wake_reader(self) -> None:
        taken = self._taken
        if taken is not None and not taken.done():
            taken.set_result(None)

    # -- actions -------------------------------------------------------------------------------

    async def _step(self, step: Callable[[str], list[Action]], text: str) -> None:
        """Run a protocol step and perform its actions. A token naming a signing key the JWKS
        did not hold waits for one (rate-limited) fetch of the set, then the step runs again."""
        try:
            actions = step(text)
        except KeyRefreshNeeded:
            await self.gateway.verifier.refresh_keys()
            actions = step(text)
        await self._perform(actions)

    async def _perform(self, actions: list[Action]) -> None:
        for action in actions:
            if self._closed:
                return
            await self._perform_one(action)

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
        # One budget with SSE and long-polls (``budget.py``); released in ``run``'s finally.
        if not gateway.budget.acquire(owner, "ws"):
            self.protocol.state = State.CLOSED
            await self.close(CloseCode.TOO_MANY_CONNECTIONS, "too many connections")
            return
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
                self.outbox.offer_control(
                    error_frame(exc.code, exc.public_message, job_id, action.ref)
                )
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
            self.outbox.offer_control(error_frame(exc.code, exc.public_message, ref=action.ref))
        else:
            self._report(results, action.ref)
        self.outbox.offer_control(ack_frame(action.ref))

    def _report(self, results: list[WatchResult], ref: str | None) -> None:
        for result in results:
            if result.error is not None:
                self.protocol.forget(result.job_id)
                code = result.error.code
                if code not in (
                    ErrorCode.NOT_FOUND,
                    ErrorCode.FORBIDDEN,
                    ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                ):
                    code = ErrorCode.BAD_REQUEST
                self.outbox.offer_control(
                    error_frame(code, result.error.public_message, result.job_id, ref)
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
        loop = asyncio.get_running_loop()
        self._progress_at = loop.time()
        if self._watchdog is None:
            stall_s = self.gateway.settings.send_stall_s
            self._watchdog = loop.call_at(self._progress_at + stall_s, self._check_stall)
        self._writer = asyncio.create_task(
            self._drain(self.outbox.take_nowait()), name="pgw-ws-writer"
        )

    def _check_stall(self) -> None:
        """While a writer runs, its socket must accept a frame every ``send_stall_s``."""
        self._watchdog = None
        if self._writer is None or self._closed:
            return
        loop = asyncio.get_running_loop()
        stall_s = self.gateway.settings.send_stall_s
        idle = loop.time() - self._progress_at
        if idle < stall_s:
            self._watchdog = loop.call_at(self._progress_at + stall_s, self._check_stall)
            return
        self._abandon(
            CloseCode.POLICY, "client does not read", f"its socket took nothing for {idle:.1f}s"
        )

    async def _drain(self, items: list[Snapshot | str]) -> None:
        outbox = self.outbox
        loop = asyncio.get_running_loop()
        try:
            while items:
                for item in items:
                    frame = item if isinstance(item, str) else item.ws_frame
                    await self._send({"type": "websocket.send", "text": frame})
                    self._progress_at = loop.time()
                items = outbox.take_nowait() if not outbox.closed else []
                self._wake_reader()
        except (OSError, RuntimeError) as exc:
            # The client is gone (uvicorn's ClientDisconnected is an OSError); the receive loop
            # sees the disconnect and cleans up.
            self._broken = True
            logger.debug("send to owner %s failed: %s", self.owner, exc)
        except Exception as exc:  # noqa: BLE001 - logged once by _abandon, then closed
            # Anything else would leave a socket that never sends again: close it instead.
            self._broken = True
            self._abandon(CloseCode.INTERNAL_ERROR, "internal error", "its writer failed", exc)
        finally:
            self._writer = None
            self._wake_reader()
            if not self._broken and not outbox.closed and self._write_frame is not None:
                outbox.write_now = self._write_now


def _closed_without_extension(task: asyncio.Task[None]) -> None:
    _closing.discard(task)
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.debug("close on a connection already gone: %s", exc)
