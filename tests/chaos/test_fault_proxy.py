"""The fault proxy does what the campaign and other tests rely on, against a real redis-server."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from tests.chaos.fault_proxy import FaultProxy
from tests.support.redis_server import RedisServer

TIMEOUT_S = 0.5


@pytest.fixture
def proxy(redis_server: RedisServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(redis_server.port)
    proxy.start()
    yield proxy
    proxy.close()


@pytest.fixture
def client(proxy: FaultProxy) -> Iterator[Callable[[], redis.Redis]]:
    """Makes clients through the proxy that fail at once (no retry), closed at the end."""
    made: list[redis.Redis] = []

    def make() -> redis.Redis:
        made.append(
            redis.Redis(
                port=proxy.port,
                socket_timeout=TIMEOUT_S,
                socket_connect_timeout=TIMEOUT_S,
                retry=Retry(NoBackoff(), 0),
            )
        )
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_cut_resets_open_connections_and_refuses_new_ones_until_healed(
    proxy: FaultProxy, client: Callable[[], redis.Redis]
) -> None:
    before = client()
    assert before.ping()
    proxy.cut()
    with pytest.raises(redis.ConnectionError):
        before.ping()
    with pytest.raises(redis.ConnectionError):
        client().ping()
    proxy.heal()
    assert client().ping()


def test_stall_keeps_sockets_open_and_forwards_nothing_until_healed(
    proxy: FaultProxy, client: Callable[[], redis.Redis]
) -> None:
    stalled = client()
    assert stalled.ping()
    proxy.stall()
    with pytest.raises(redis.TimeoutError):
        stalled.ping()
    proxy.heal()
    assert client().ping()


def test_silence_drops_what_redis_sends_subscribers_only(
    proxy: FaultProxy, client: Callable[[], redis.Redis], redis_server: RedisServer
) -> None:
    subscriber = client().pubsub()  # type: ignore[no-untyped-call]
    subscriber.subscribe("chaos-test")
    assert subscriber.get_message(timeout=TIMEOUT_S)["type"] == "subscribe"
    other = client()
    assert other.ping()
    assert proxy.silence() == 1
    publisher = redis.Redis(port=redis_server.port)
    assert publisher.publish("chaos-test", "lost") == 1  # Redis still sees the subscriber
    assert subscriber.get_message(timeout=TIMEOUT_S) is None
    assert other.ping()  # a command connection is not silenced
    subscriber.close()
    publisher.close()
