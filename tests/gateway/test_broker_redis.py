"""The Redis broker against a real Redis: confirmed subscriptions, silent-connection probe."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from progress_core.models import Create, Update
from progress_core.store import StoreOptions
from progress_core.store.redis import RedisJobStore
from progress_gateway.broker.redis import RedisBroker
from progress_gateway.metrics import Metrics
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


async def test_no_watch_waits_on_a_frozen_server_and_each_confirmation_brings_a_resync(
    tmp_path: Path, store_options: StoreOptions
) -> None:
    # SIGSTOP: the subscriber's socket stays open and nothing comes back. A watch must not
    # wait on it (it timed out with store_unavailable after 5 s), and what it returned early
    # for must be repaired by a resync that starts after its channel is confirmed.
    server = RedisServer(tmp_path / "redis")
    server.start()
    store = RedisJobStore.from_url(server.url, store_options)
    broker = RedisBroker(server.url, store.keys, Metrics())  # the default probe period
    received: list[str] = []
    confirmed_at_resync: list[frozenset[bytes]] = []

    async def on_reconnect() -> None:
        confirmed_at_resync.append(frozenset(broker._confirmed))

    try:
        await broker.start(received.append, received.append, on_reconnect)
        await eventually(lambda: _true(broker.connected), 10, "the subscriber to connect")
        before, during, after = [
            await store.create(Create.build(owner="alice", kind="demo")) for _ in range(3)
        ]
        await broker.watch_jobs([before.id])
        with server.frozen():
            frozen_at = time.monotonic()
            await broker.watch_jobs([during.id])  # the connection still looks fine
            during_s = time.monotonic() - frozen_at
            await eventually(lambda: _true(not broker.connected), 10, "the subscriber dropped")
            detected_s = time.monotonic() - frozen_at
            started = time.monotonic()
            await broker.watch_jobs([after.id])  # no connection: at once
            after_s = time.monotonic() - started
        print(
            f"watch on a frozen connection {during_s:.2f}s; silent subscriber abandoned after "
            f"{detected_s:.2f}s; watch without a connection {after_s:.3f}s"
        )
        assert during_s < 4.0  # suspected after 1 probe period, ~2 s at most
        assert detected_s < 6.0  # abandoned after 2 quiet probe periods, ~3 s at most
        assert after_s < 0.5
        channels = {store.keys.channel(job.id).encode() for job in (before, during, after)}

        async def resynced_after_confirmation() -> bool:
            return any(channels <= confirmed for confirmed in confirmed_at_resync)

        await eventually(resynced_after_confirmation, 20, "a resync after the confirmations")
        for job in (before, during, after):
            await store.apply(job.id, Update.build(progress=9))
            await eventually(
                lambda job=job: _true(any(job.id in raw and '"seq":2' in raw for raw in received)),
                5,
                f"the update of {job.id}",
            )
    finally:
        await broker.aclose()
        await store.aclose()
        server.stop()


async def test_a_handler_that_fails_is_logged_and_the_subscriber_starts_over(
    redis_server: RedisServer, store_options: StoreOptions, caplog: pytest.LogCaptureFixture
) -> None:
    # A bug in the hub must not end the subscriber task (the gateway would look ready and
    # deliver nothing): it is logged with its traceback and the connection starts over.
    store = RedisJobStore.from_url(redis_server.url, store_options)
    metrics = Metrics()
    broker = RedisBroker(redis_server.url, store.keys, metrics, probe_s=0.2)
    received: list[str] = []
    bugs = [RuntimeError("bug in the fan-out")]
    resyncs: list[int] = []

    def on_snapshot(raw: str) -> None:
        if bugs:
            raise bugs.pop()
        received.append(raw)

    async def on_reconnect() -> None:
        resyncs.append(1)

    try:
        await broker.start(on_snapshot, received.append, on_reconnect)
        await eventually(lambda: _true(broker.connected), 10, "the subscriber to connect")
        job = await store.create(Create.build(owner="alice", kind="demo"))
        await broker.watch_jobs([job.id])
        await store.apply(job.id, Update.build(progress=5))  # the handler raises on this one

        async def started_over() -> bool:
            return len(resyncs) >= 2 and broker.connected

        await eventually(started_over, 10, "the subscriber to start over")
        await store.apply(job.id, Update.build(progress=6))
        await eventually(lambda: _true(any('"seq":3' in raw for raw in received)), 5, "delivery")
        failures = [r for r in caplog.records if "subscriber loop failed" in r.getMessage()]
        assert len(failures) == 1 and failures[0].exc_info is not None
        assert "bug in the fan-out" in str(failures[0].exc_info[1])
    finally:
        await broker.aclose()
        await store.aclose()


async def test_malformed_messages_are_counted_and_dropped(
    parts: tuple[RedisJobStore, RedisBroker, Metrics, list[str], list[int]],
    redis_server: RedisServer,
) -> None:
    store, broker, metrics, received, resyncs = parts
    job = await store.create(Create.build(owner="alice", kind="demo"))
    await broker.watch_jobs([job.id])
    channel = store.keys.channel(job.id)

    publisher = redis.Redis.from_url(redis_server.url)
    try:
        publisher.publish(channel, b"\xff not UTF-8")  # fails before any handler runs
    finally:
        publisher.close()

    async def counted() -> bool:
        return metrics.malformed_messages._value.get() == 1

    await eventually(counted, 5, "the malformed message to be counted")
    resyncs_before = len(resyncs)
    await store.apply(job.id, Update.build(progress=7))
    await eventually(lambda: _true(any('"seq":2' in raw for raw in received)), 5, "delivery")
    assert len(resyncs) == resyncs_before  # dropped in place: no reconnect
