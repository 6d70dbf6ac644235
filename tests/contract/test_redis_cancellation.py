"""Redis only: a cancelled command is cancelled, whenever the cancel lands (CPython gh-86296).

redis-py sends under ``asyncio.wait_for`` when a socket timeout is set; on Python 3.11 a cancel
that lands as the send completes is swallowed and the task runs on. A worker's heartbeat did
exactly that and its ``succeed()`` never returned. ``progress_core.redis_client`` sends under
``asyncio.timeout`` instead.
"""

from __future__ import annotations

import asyncio
import random

import pytest
import redis.asyncio as aioredis
from redis.asyncio.connection import SSLConnection, UnixDomainSocketConnection

from progress_core.models import Create
from progress_core.redis_client import connection_pool, redis_client
from progress_core.store import StoreOptions
from progress_core.store.redis import RedisJobStore
from progress_workers.client import AsyncProgressClient
from progress_workers.reporter import AsyncReporter
from tests.support.redis_server import RedisServer

TICK_OFFSETS = range(40)


async def cancelled_at_each_tick(client: aioredis.Redis) -> list[int]:
    """Offsets (loop iterations after the start) at which a cancelled PING returned anyway."""
    swallowed: list[int] = []
    for offset in TICK_OFFSETS:
        task = asyncio.create_task(client.execute_command("PING"))
        for _ in range(offset):
            await asyncio.sleep(0)
        if task.done():
            await task
            continue
        task.cancel()
        try:
            await task
        except asyncio.CancelledError:
            continue
        swallowed.append(offset)
    return swallowed


async def test_a_command_cancelled_at_any_moment_raises_cancelled(
    redis_server: RedisServer,
) -> None:
    client = redis_client(redis_server.url, socket_timeout=5.0)
    try:
        for _ in range(5):
            assert await cancelled_at_each_tick(client) == []
        assert await client.ping()  # the connections are still usable afterwards
    finally:
        await client.aclose()


async def test_the_store_pool_is_cancellable_too(
    redis_server: RedisServer, store_options: StoreOptions
) -> None:
    store = RedisJobStore.from_url(redis_server.url, store_options)
    try:
        for _ in range(5):
            assert await cancelled_at_each_tick(store._redis) == []
        job = await store.create(Create.build(owner="alice", kind="demo"))
        assert (await store.get(job.id)).id == job.id
    finally:
        await store.aclose()


@pytest.mark.parametrize(
    ("url", "scheme_class"),
    [
        ("rediss://cache:6380/0", SSLConnection),
        ("unix:///run/redis.sock", UnixDomainSocketConnection),
    ],
)
def test_the_url_scheme_keeps_its_connection_class(url: str, scheme_class: type) -> None:
    pool = connection_pool(url, socket_timeout=1.0)
    assert issubclass(pool.connection_class, scheme_class)
    assert pool.connection_kwargs["socket_timeout"] == 1.0


async def test_reporters_finishing_while_heartbeating_all_finish(
    redis_server: RedisServer, store_options: StoreOptions
) -> None:
    # Heartbeats every millisecond keep one in flight when succeed() stops them: the moment
    # whose lost cancel left a job running forever.
    client = AsyncProgressClient.from_url(redis_server.url, store_options)
    rng = random.Random(7)

    async def run(n: int) -> None:
        job = await client.create_job(owner="alice", kind="demo")
        async with AsyncReporter(client, job.id, heartbeat_s=0.001, min_interval_s=0) as reporter:
            for step in range(rng.randint(1, 10)):
                await reporter.update(progress=step)
                await asyncio.sleep(rng.random() * 0.003)
            async with asyncio.timeout(10):
                await reporter.succeed({"n": n})

    try:
        for _ in range(4):
            await asyncio.gather(*(run(n) for n in range(50)))
    finally:
        await client.store.aclose()
