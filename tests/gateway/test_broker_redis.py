"""The Redis broker against a real Redis: confirmed subscriptions, silent-connection probe."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from gateway.broker.redis import RedisBroker
from gateway.metrics import Metrics
from gateway.models import Create, Update
from gateway.store import StoreOptions
from gateway.store.redis import RedisJobStore
from tests.support.contract import eventually
from tests.support.redis_server import RedisServer


@pytest.fixture
async def parts(
    redis_server: RedisServer, store_options: StoreOptions
) -> AsyncIterator[tuple[RedisJobStore, RedisBroker, Metrics, list[str], list[int]]]:
    store = RedisJobStore.from_url(redis_server.url, store_options)
    metrics = Metrics()
    broker = RedisBroker(redis_server.url, store.keys, metrics, probe_s=0.2)
    received: list[str] = []
    resyncs: list[int] = []

    async def on_reconnect() -> None:
        resyncs.append(1)

    await broker.start(received.append, received.append, on_reconnect)
    await eventually(lambda: _true(broker.connected), 10, "the subscriber to connect")
    yield store, broker, metrics, received, resyncs
    await broker.aclose()
    await store.aclose()


async def _true(value: bool) -> bool:
    return value


async def test_watch_returns_once_subscribed_so_the_next_change_arrives(
    parts: tuple[RedisJobStore, RedisBroker, Metrics, list[str], list[int]],
) -> None:
    store, broker, _, received, _ = parts
    job = await store.create(Create.build(owner="alice", kind="demo"))
    await broker.watch_jobs([job.id])
    await store.apply(job.id, Update.build(progress=5))
    await eventually(lambda: _true(any('"seq":2' in raw for raw in received)), 5, "the update")
    broker.unwatch_jobs([job.id])
    await broker.watch_jobs([job.id])  # unsubscribe then subscribe again, in order
    await store.apply(job.id, Update.build(progress=6))
    await eventually(lambda: _true(any('"seq":3' in raw for raw in received)), 5, "seq 3")


async def test_a_connected_but_silent_subscriber_is_replaced(
    parts: tuple[RedisJobStore, RedisBroker, Metrics, list[str], list[int]],
) -> None:
    store, broker, metrics, received, resyncs = parts
    job = await store.create(Create.build(owner="alice", kind="demo"))
    await broker.watch_jobs([job.id])
    resyncs_before = len(resyncs)
    # Make the live connection deaf to its own probes, as after a failover gone wrong: the
    # socket stays up, nothing arrives on it.
    subscriber = broker._subscriber
    assert subscriber is not None
    subscriber.unsubscribe([broker._probe_channel])

    async def replaced() -> bool:
        return metrics.redis_reconnects._value.get() >= 1 and broker.connected

    await eventually(replaced, 10, "the silent subscriber to be replaced")
    assert len(resyncs) > resyncs_before  # a resync follows every resubscription
    await store.apply(job.id, Update.build(progress=50))
    await eventually(lambda: _true(any('"seq":2' in raw for raw in received)), 5, "delivery")


async def test_a_server_that_stops_answering_gets_the_subscriber_replaced(
    tmp_path: Path, store_options: StoreOptions
) -> None:
    # CLIENT PAUSE stands for a partition: sockets stay open, nothing is answered, the probe
    # publish itself times out. The subscriber must not wait on its socket forever.
    server = RedisServer(tmp_path / "redis")
    server.start()
    store = RedisJobStore.from_url(server.url, store_options)
    metrics = Metrics()
    broker = RedisBroker(server.url, store.keys, metrics, probe_s=0.2)
    received: list[str] = []

    async def on_reconnect() -> None:
        return None

    try:
        await broker.start(received.append, received.append, on_reconnect)
        await eventually(lambda: _true(broker.connected), 10, "the subscriber to connect")
        job = await store.create(Create.build(owner="alice", kind="demo"))
        await broker.watch_jobs([job.id])
        admin = redis.Redis.from_url(server.url)
        try:
            admin.execute_command("CLIENT", "PAUSE", "3000", "ALL")
        finally:
            admin.close()

        async def replaced() -> bool:
            return metrics.redis_reconnects._value.get() >= 1 and broker.connected

        await eventually(replaced, 20, "the subscriber to be replaced after the pause")
        await store.apply(job.id, Update.build(progress=50))
        await eventually(lambda: _true(any('"seq":2' in raw for raw in received)), 5, "delivery")
    finally:
        await broker.aclose()
        await store.aclose()
        server.stop()
