"""The broker's subscriber connection against real Redis: replies, auth, sockets, failure."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from progress_gateway.broker.subscriber import Subscriber, SubscriberError
from tests.support.redis_server import RedisServer


async def replies(subscriber: Subscriber, count: int) -> list[Any]:
    received: list[Any] = []
    while len(received) < count:
        received += await subscriber.read()
    return received


async def test_confirmations_then_messages_arrive_in_order(redis_server: RedisServer) -> None:
    subscriber = await Subscriber.connect(redis_server.url, within_s=2)
    try:
        subscriber.subscribe([b"pgw-test:a", b"pgw-test:b"])
        await subscriber.drain()
        assert await replies(subscriber, 2) == [
            [b"subscribe", b"pgw-test:a", 1],
            [b"subscribe", b"pgw-test:b", 2],
        ]
        publisher = redis.Redis.from_url(redis_server.url)
        try:
            with publisher.pipeline(transaction=False) as pipe:
                for n in range(100):
                    pipe.publish("pgw-test:a" if n % 2 else "pgw-test:b", f"m{n}")
                pipe.execute()
        finally:
            publisher.close()
        received = await replies(subscriber, 100)
        assert [reply[2] for reply in received] == [f"m{n}".encode() for n in range(100)]
        subscriber.unsubscribe([b"pgw-test:a"])
        await subscriber.drain()
        assert await replies(subscriber, 1) == [[b"unsubscribe", b"pgw-test:a", 1]]
    finally:
        subscriber.close()
        await subscriber.wait_closed()


async def read_until_failure(subscriber: Subscriber) -> None:
    while True:
        await subscriber.read()


@pytest.fixture(scope="module")
def guarded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    directory = tmp_path_factory.mktemp("guarded-redis")
    server = RedisServer(directory, password="s3cret", unix_socket=directory / "redis.sock")
    server.start()
    yield server
    server.stop()


async def test_password_and_unix_socket_urls(guarded_redis: RedisServer) -> None:
    socket_path = guarded_redis.unix_socket
    assert socket_path is not None
    for url in (
        f"redis://:s3cret@127.0.0.1:{guarded_redis.port}/0",
        f"redis://default:s3cret@127.0.0.1:{guarded_redis.port}/0",
        f"unix://:s3cret@{socket_path}",
    ):
        subscriber = await Subscriber.connect(url, within_s=2)
        try:
            subscriber.subscribe([b"pgw-test:guarded"])
            assert await replies(subscriber, 1) == [[b"subscribe", b"pgw-test:guarded", 1]], url
        finally:
            subscriber.close()
            await subscriber.wait_closed()


async def test_a_wrong_password_is_a_clear_error(guarded_redis: RedisServer) -> None:
    with pytest.raises(SubscriberError, match="Redis refused AUTH"):
        await Subscriber.connect(f"redis://:wrong@127.0.0.1:{guarded_redis.port}/0", within_s=2)


async def test_nothing_listening_fails_to_connect(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        await Subscriber.connect(f"unix://{tmp_path / 'absent.sock'}", within_s=2)


async def test_a_failed_connection_raises_its_reason_on_read(redis_server: RedisServer) -> None:
    subscriber = await Subscriber.connect(redis_server.url, within_s=2)
    subscriber.fail(SubscriberError("silent for 15s"))
    with pytest.raises(SubscriberError, match="silent for 15s"):
        await subscriber.read()
    with pytest.raises(SubscriberError):
        subscriber.subscribe([b"pgw-test:late"])
    await subscriber.wait_closed()


async def test_a_killed_server_ends_the_read(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        subscriber = await Subscriber.connect(server.url, within_s=2)
        subscriber.subscribe([b"pgw-test:x"])
        await replies(subscriber, 1)
        server.kill()
        with pytest.raises(SubscriberError, match="closed"):
            await read_until_failure(subscriber)
        subscriber.close()
        await subscriber.wait_closed()
    finally:
        server.stop()


async def test_failing_a_connection_wakes_a_drain_held_by_a_frozen_server(tmp_path: Path) -> None:
    # A resubscribe of many channels to a server that reads nothing fills the socket buffers and
    # blocks in drain(). Failing the connection (the probe found it silent) must wake it: a
    # close would wait for the buffer to flush, which a silent peer never lets happen.
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        subscriber = await Subscriber.connect(server.url, within_s=2)
        with server.frozen():
            subscriber.subscribe([f"pgw-test:{n}:{'x' * 1000}".encode() for n in range(32_000)])
            drain = asyncio.create_task(subscriber.drain())
            done, _ = await asyncio.wait({drain}, timeout=0.5)
            assert not done  # held: ~32 MB cannot reach a server that does not read
            subscriber.fail(SubscriberError("silent"))
            async with asyncio.timeout(5):
                with contextlib.suppress(ConnectionError):
                    await drain
        await subscriber.wait_closed()
    finally:
        server.stop()
