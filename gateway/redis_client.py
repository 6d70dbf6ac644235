"""redis-py clients that fail fast on a stalled server and whose commands can be cancelled.

Timeouts and retries: Redis answers in well under a millisecond, so a command with no answer
for ``SOCKET_TIMEOUT_S`` (1 s) means a frozen server or a stalled network, and it fails at once
(``StoreUnavailable`` above the store: a 503). Only a broken connection is retried (a restart
closed the pooled socket; a fresh one answers at once), never a timeout: retrying a server that
does not answer multiplied the wait (5 s timeout x 4 attempts held requests ~20 s).

With a ``socket_timeout``, redis-py sends every command under ``asyncio.wait_for``. Before Python
3.12 ``wait_for`` swallows a cancellation that arrives as the send completes (CPython gh-86296):
the cancelled task returns normally and runs on. A worker's heartbeat task lost its cancel that
way, so ``succeed()`` waited for it forever while it kept the job alive: the final result was
never written. Connections made here send under ``asyncio.timeout`` instead, which keeps both the
timeout and the cancellation; everything else is redis-py's.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis
from redis.asyncio.connection import AbstractConnection, Connection, parse_url
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

__all__ = ["SOCKET_TIMEOUT_S", "connection_pool", "redis_client", "retry_policy"]

SOCKET_TIMEOUT_S = 1.0
CONNECT_TIMEOUT_S = 1.0

# 3.12 rebuilt wait_for on asyncio.timeout; there redis-py's own send is safe.
_WAIT_FOR_SWALLOWS_CANCEL = sys.version_info < (3, 12)


class CancellableSend(AbstractConnection):
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
            await self.disconnect(nowait=True)
            raise RedisTimeoutError("Timeout writing to socket") from None


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
