"""redis-py clients that fail fast on a stalled server and whose commands can be cancelled.

Timeouts and retries: Redis answers in well under a millisecond, so a command with no answer
for ``SOCKET_TIMEOUT_S`` (1 s) means a frozen server or a stalled network, and it fails at once
(``StoreUnavailable`` above the store: a 503). Only a broken connection is retried (a restart
closed the pooled socket; a fresh one answers at once), never a timeout: retrying a server that
does not answer multiplied the wait (5 s timeout x 4 attempts held requests ~20 s).

A timeout alone is not enough under load: every caller still waits its own second, and one
waiting for a pooled connection (all 64 stuck on the silent server) a second more per wave, up
to the pool's 5 s patience. ``StallAwarePool`` therefore hands out no connection while the last
outcome of its commands is a timeout (no answer since), for at most ``STALL_MEMORY_S``, after
which the next commands try again: during a stall requests fail at once, and a timeout on a
busy, healthy server is cleared by the next answer.

With a ``socket_timeout``, redis-py sends every command under ``asyncio.wait_for``. Before Python
3.12 ``wait_for`` swallows a cancellation that arrives as the send completes (CPython gh-86296):
the cancelled task returns normally and runs on. A worker's heartbeat task lost its cancel that
way, so ``succeed()`` waited for it forever while it kept the job alive: the final result was
never written. Connections made here send under ``asyncio.timeout`` instead, which keeps both the
timeout and the cancellation; everything else is redis-py's.
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = [
    "SOCKET_TIMEOUT_S",
    "StallAwarePool",
    "connection_pool",
    "redis_client",
    "retry_policy",
]

SOCKET_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 1.0
STALL_MEMORY_S = 2 * SOCKET_TIMEOUT_S

# 3.12 rebuilt wait_for on asyncio.timeout; there redis-py's own send is safe.
_WAIT_FOR_SWALLOWS_CANCEL = sys.version_info < (3, 12)


class ServerWatch:
    """When the connections of one pool last got an answer, and last got none in time."""

    __slots__ = ("answered_at", "timed_out_at")

    def __init__(self) -> None:
        self.answered_at = self.timed_out_at = -math.inf

    def stalled(self) -> bool:
        timed_out_at = self.timed_out_at
        return timed_out_at > self.answered_at and time.monotonic() - timed_out_at < STALL_MEMORY_S


class CancellableSend(AbstractConnection):
    # Set by ``StallAwarePool`` on the connections it makes: their timeouts are recorded there.
    server_watch: ServerWatch | None = None

    async def connect(self) -> None:
        try:
            await super().connect()  # type: ignore[no-untyped-call]
        except RedisTimeoutError:
            self._timed_out()
            raise

    async def read_response(self, *args: Any, **kwargs: Any) -> Any:
        try:
            response = await super().read_response(*args, **kwargs)
        except RedisTimeoutError:
            self._timed_out()
            raise
        watch = self.server_watch
        if watch is not None and watch.timed_out_at > watch.answered_at:
            watch.answered_at = time.monotonic()  # answering again
        return response

    def _timed_out(self) -> None:
        if self.server_watch is not None:
            self.server_watch.timed_out_at = time.monotonic()

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        timeout = self.socket_timeout
        if not timeout or not _WAIT_FOR_SWALLOWS_CANCEL:
            await super().send_packed_command(command, check_health)
            return
        try:
            async with asyncio.timeout(timeout):
                # Without a socket timeout redis-py writes directly instead of via wait_for.
                self.socket_timeout = None
                try:
                    await super().send_packed_command(command, check_health)
                finally:
                    self.socket_timeout = timeout
        except TimeoutError:
            self._timed_out()
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None


class StallAwarePool(aioredis.BlockingConnectionPool):
    """A blocking pool that fails at once while the server does not answer (module docstring)."""

    def __init__(self, **options: Any) -> None:
        super().__init__(**options)
        self.server_watch = ServerWatch()

    async def ensure_connection(self, connection: AbstractConnection) -> None:
        # Also for a caller that waited for this connection while the server went silent.
        self._fail_if_stalled()
        await super().ensure_connection(connection)

    def _fail_if_stalled(self) -> None:
        if self.server_watch.stalled():
            raise RedisConnectionError("Redis stopped answering (a command timed out); retry later")

    def make_connection(self) -> AbstractConnection:
        connection: AbstractConnection = super().make_connection()  # type: ignore[no-untyped-call]
        if isinstance(connection, CancellableSend):
            connection.server_watch = self.server_watch
        return connection

    async def get_connection(self, *args: Any, **options: Any) -> AbstractConnection:
        self._fail_if_stalled()
        connection: AbstractConnection = await super().get_connection(*args, **options)  # type: ignore[no-untyped-call]
        return connection


_CANCELLABLE: dict[type[AbstractConnection], type[AbstractConnection]] = {}


def _cancellable(connection_class: type[AbstractConnection]) -> type[AbstractConnection]:
    """The same connection class (TCP, TLS or unix socket) with the cancellable send."""
    if issubclass(connection_class, CancellableSend):
        return connection_class
    if connection_class not in _CANCELLABLE:
        _CANCELLABLE[connection_class] = type(
            f"Cancellable{connection_class.__name__}", (CancellableSend, connection_class), {}
        )
    return _CANCELLABLE[connection_class]


def retry_policy() -> Retry:
    """Retry broken connections (3 times, jittered, ~0.7 s at most), never timeouts."""
    return Retry(
        ExponentialWithJitterBackoff(base=0.05, cap=1.0),
        retries=3,
        supported_errors=(RedisConnectionError,),
    )


def connection_pool(
    url: str, pool_class: type[aioredis.ConnectionPool] = aioredis.ConnectionPool, **options: Any
) -> aioredis.ConnectionPool:
    """Like ``pool_class.from_url(url, **options)`` (URL options win), cancellable connections,
    with the module's timeouts and retry policy unless ``options`` say otherwise."""
    defaults = {
        "socket_timeout": SOCKET_TIMEOUT_S,
        "socket_connect_timeout": CONNECT_TIMEOUT_S,
        "retry": retry_policy(),
    }
    settings: dict[str, Any] = {**defaults, **options, **parse_url(url)}
    settings["connection_class"] = _cancellable(settings.get("connection_class", Connection))
    return pool_class(**settings)


def redis_client(url: str, **options: Any) -> aioredis.Redis:
    """Like ``redis.asyncio.Redis.from_url``; closing the client closes its pool."""
    return aioredis.Redis.from_pool(connection_pool(url, **options))
