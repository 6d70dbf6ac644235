"""Redis only: the client under stress: retries apply once, bursts wait for a connection."""

from __future__ import annotations

import asyncio
import contextlib

import redis.asyncio as aioredis

from progress_core.errors import StoreUnavailable
from progress_core.models import Create, Start, Update
from progress_core.store import StoreOptions
from progress_core.store.redis import CommandBatcher, RedisJobStore
from tests.support.redis_server import RedisServer


async def test_updates_survive_killed_connections_without_double_applying(
    redis_server: RedisServer, store_options: StoreOptions
) -> None:
    store = RedisJobStore.from_url(redis_server.url, store_options)
    killer = aioredis.Redis.from_url(redis_server.url)
    job = await store.create(Create.build(owner="alice", kind="demo"))
    start_seq = (await store.apply(job.id, Start())).seq
    acknowledged = failed = 0
    writing = True

    async def write(worker: int) -> None:
        nonlocal acknowledged, failed
        for step in range(150):
            try:
                await store.apply(job.id, Update.build(progress=step / 2, message=f"{worker}"))
            except StoreUnavailable:
                failed += 1  # may or may not have been applied: the reply is what was lost
            else:
                acknowledged += 1

    async def kill_connections() -> None:
        while writing:
            # Drop every other client connection mid-flight; redis-py reconnects and retries.
            with contextlib.suppress(Exception):
                await killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            await asyncio.sleep(0.005)

    try:
        chaos = asyncio.create_task(kill_connections())
        await asyncio.gather(*(write(worker) for worker in range(8)))
        writing = False
        await chaos
        final = await store.get(job.id)
        applied = final.seq - start_seq
        assert acknowledged > 0
        # Every acknowledged update is there, and nothing was applied twice.
        assert acknowledged <= applied <= acknowledged + failed, (acknowledged, failed, applied)
        history = [event.seq for event in await store.history(job.id)]
        assert history == sorted(set(history))
    finally:
        await killer.aclose()
        await store.aclose()


async def test_a_burst_beyond_the_pool_waits_instead_of_failing(
    redis_server: RedisServer, store_options: StoreOptions
) -> None:
    store = RedisJobStore.from_url(redis_server.url, store_options)
    job = await store.create(Create.build(owner="alice", kind="demo"))
    # A reconnect storm: far more concurrent reads than pooled connections.
    answers = await asyncio.gather(*(store.snapshots([job.id]) for _ in range(500)))
    assert all(raws[0] is not None for raws in answers)
    await store.aclose()


async def test_a_command_issued_as_its_batch_ends_is_not_stranded(
    redis_server: RedisServer,
) -> None:
    # The caller of a batched command runs again before its drain task's done-callbacks do. A
    # command it issues right then must still be sent: here the only drain slot is held by a
    # drain that has already finished.
    client = aioredis.Redis.from_url(redis_server.url)
    batcher = CommandBatcher(client, max_inflight=1)
    try:

        async def batched_then_next() -> list[bytes]:
            first = await batcher.execute("ECHO", "batched")
            second = await batcher.execute("ECHO", "next")
            return [first, second]

        lone, pair = await asyncio.wait_for(
            asyncio.gather(batcher.execute("ECHO", "lone"), batched_then_next()), timeout=5
        )
        assert (lone, pair) == (b"lone", [b"batched", b"next"])
    finally:
        await client.aclose()
