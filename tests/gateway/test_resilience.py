"""Nothing is lost when a gateway, Redis or pub/sub fails (Redis backend, private servers)."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from websockets.exceptions import ConnectionClosed

from progress_core.store import StoreOptions
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import GatewayServer
from tests.support.http import metric
from tests.support.redis_server import RedisServer, wait_until
from tests.support.ws_client import WsClient

PREFIX = "res"


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def gateways(durable_redis: RedisServer, tmp_path: Path) -> Iterator[list[GatewayServer]]:
    servers = [
        GatewayServer(
            durable_redis.url,
            tmp_path / f"gateway-{n}.log",
            key_prefix=PREFIX,
            resync_s="1",
            sweep_s="1",
            probe_s="1",
            drain_s="1",
        )
        for n in range(2)
    ]
    for server in servers:
        server.start()
    yield servers
    for server in servers:
        server.stop()


@pytest.fixture
def worker(durable_redis: RedisServer) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(durable_redis.url, StoreOptions(prefix=PREFIX)) as client:
        yield client


async def test_two_gateways_both_deliver_and_a_killed_one_loses_nothing(
    gateways: list[GatewayServer], worker: ProgressClient
) -> None:
    first, second = gateways
    job = worker.create_job(owner="alice", kind="demo")
    on_first = await WsClient.connect(first.ws_url, token_for("alice"))
    on_second = await WsClient.connect(second.ws_url, token_for("alice"))
    for client in (on_first, on_second):
        await client.ready()
        await client.subscribe("r", [job.id])
    worker.update(job.id, progress=25)
    for client in (on_first, on_second):
        await client.wait_for_job(job.id, lambda j: j["progress"] == 25)

    first.kill()
    with pytest.raises(ConnectionClosed):
        await on_first.recv(10)
    seen = on_first.latest[job.id]["seq"]
    # Changes while the client is between gateways.
    worker.update(job.id, progress=50)
    worker.update(job.id, progress=75)
    moved = await WsClient.connect(second.ws_url, token_for("alice"))
    await moved.ready()
    frames = await moved.subscribe("resume", [{"id": job.id, "seq": seen}])
    updates = [frame["job"] for frame in frames if frame["op"] == "update"]
    assert [update["progress"] for update in updates] == [75]
    assert all(update["seq"] > seen for update in updates)
    await on_second.wait_for_job(job.id, lambda j: j["progress"] == 75)
    for client in (on_second, moved):
        await client.close()


async def test_redis_killed_and_restarted_clients_converge_without_reconnecting(
    gateways: list[GatewayServer], durable_redis: RedisServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    worker.start(job.id)
    client = await WsClient.connect(gateways[0].ws_url, token_for("alice"))
    await client.ready()
    await client.subscribe("r", [job.id])
    durable_redis.kill()
    wait_until(lambda: not gateways[0].ready(), 15, "readyz to report the outage")
    durable_redis.start()  # same directory and port: the AOF brings every job back
    worker.update(job.id, progress=80, message="after the restart")
    worker.succeed(job.id, result={"ok": True})
    final = await client.wait_for_job(job.id, lambda j: j["status"] == "succeeded", timeout=30)
    assert final["result"] == {"ok": True}
    wait_until(gateways[0].ready, 15, "readyz to recover")
    await client.close()


async def test_a_change_whose_publish_was_lost_arrives_by_anti_entropy(
    gateways: list[GatewayServer], durable_redis: RedisServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    client = await WsClient.connect(gateways[0].ws_url, token_for("alice"))
    await client.ready()
    await client.subscribe("r", [job.id])
    # Write a newer snapshot straight into the hash, publishing nothing.
    direct = redis.Redis(port=durable_redis.port)
    key = f"{PREFIX}:{{{job.id}}}:job"
    snapshot = json.loads(direct.hget(key, "snapshot"))  # type: ignore[arg-type]
    snapshot.update(seq=2, progress=42.0, message="silently written")
    direct.hset(key, mapping={"snapshot": json.dumps(snapshot), "seq": 2})
    direct.close()
    repaired = await client.wait_for_job(job.id, lambda j: j["seq"] == 2, timeout=10)
    assert repaired["message"] == "silently written"
    await client.close()


async def test_subscriber_connection_killed_is_replaced_and_resynced(
    gateways: list[GatewayServer], durable_redis: RedisServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    client = await WsClient.connect(gateways[0].ws_url, token_for("alice"))
    await client.ready()
    await client.subscribe("r", [job.id])
    direct = redis.Redis(port=durable_redis.port)
    assert direct.client_kill_filter(_type="pubsub") >= 2  # both gateways' subscribers
    direct.close()
    worker.update(job.id, progress=33)
    await client.wait_for_job(job.id, lambda j: j["progress"] == 33, timeout=15)

    def reconnected() -> bool:
        metrics = httpx.get(f"{gateways[0].url}/metrics").text
        return any(
            line.startswith("pgw_redis_reconnects_total") and float(line.split()[-1]) >= 1
            for line in metrics.splitlines()
        )

    wait_until(reconnected, 15, "the reconnect to be counted")
    await client.close()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def test_a_client_that_never_reads_costs_bounded_memory_and_delays_nobody(
    gateways: list[GatewayServer], worker: ProgressClient
) -> None:
    gateway = gateways[0]
    assert gateway.process is not None
    job = worker.create_job(owner="alice", kind="demo")
    slow = await WsClient.connect(gateway.ws_url, token_for("alice"), max_queue=1)
    fast = await WsClient.connect(gateway.ws_url, token_for("alice"))
    for client in (slow, fast):
        await client.ready()
        await client.subscribe("r", [job.id])
    slow.connection.transport.pause_reading()  # the slow client stops reading its socket
    before = rss_kib(gateway.process.pid)

    def hammer() -> None:
        for step in range(10_000):
            worker.update(job.id, progress=step / 100, message="x" * 200)
        worker.succeed(job.id, result={"updates": 10_000})

    await asyncio.to_thread(hammer)
    final = await fast.wait_for_job(job.id, lambda j: j["status"] == "succeeded", timeout=30)
    assert final["seq"] == 10_002
    grown = rss_kib(gateway.process.pid) - before
    assert grown < 16 * 1024, f"gateway grew {grown} KiB for one stalled client"
    slow.connection.transport.resume_reading()
    latest = await slow.wait_for_job(job.id, lambda j: j["status"] == "succeeded", timeout=30)
    assert latest["seq"] == 10_002
    received = sum(1 for frame in slow.frames if frame["op"] == "update")
    assert received < 10_002  # conflated: intermediate snapshots were skipped
    for client in (slow, fast):
        await client.close()


async def test_sigterm_drains_connections_with_1001(
    gateways: list[GatewayServer],
) -> None:
    gateway = gateways[1]
    clients = [await WsClient.connect(gateway.ws_url, token_for(f"u{n}")) for n in range(5)]
    for client in clients:
        await client.ready()
    assert gateway.process is not None
    gateway.process.send_signal(signal.SIGTERM)
    codes = []
    for client in clients:
        with pytest.raises(ConnectionClosed) as closed:
            await client.recv(15)
        assert closed.value.rcvd is not None
        codes.append(closed.value.rcvd.code)
    assert codes == [1001] * 5
    gateway.process.wait(timeout=15)
    gateway.process = None


MALFORMED = [
    b"\xff\xfe not UTF-8",
    b"{not json",
    b"null",
    b"[]",
    b'{"id": "x"}',
    b'{"id": "x", "owner": "alice", "seq": "7", "status": "running", "updated_at": "t"}',
]


async def test_malformed_messages_on_pubsub_are_dropped_and_delivery_goes_on(
    durable_redis: RedisServer, worker: ProgressClient, tmp_path: Path
) -> None:
    # Anti-entropy far away: what arrives within the test came through pub/sub.
    gateway = GatewayServer(
        durable_redis.url, tmp_path / "gateway.log", key_prefix=PREFIX, resync_s="60"
    )
    gateway.start()
    try:
        job = worker.create_job(owner="alice", kind="demo")
        client = await WsClient.connect(gateway.ws_url, token_for("alice"))
        await client.ready()
        await client.subscribe("r", [job.id])
        await client.send({"op": "subscribe", "ref": "m", "scope": "mine"})
        await client.recv_until(lambda frame: frame["op"] == "ack" and frame["ref"] == "m")
        direct = redis.Redis(port=durable_redis.port)
        for message in MALFORMED:
            direct.publish(f"{PREFIX}:{{{job.id}}}", message)
            direct.publish(f"{PREFIX}:owner:{{alice}}", message)
        direct.close()
        worker.update(job.id, progress=55)
        await client.wait_for_job(job.id, lambda j: j["progress"] == 55, timeout=10)
        later = worker.create_job(owner="alice", kind="demo")
        await client.wait_for_job(later.id, lambda j: True, timeout=10)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            assert await metric(http, "pgw_malformed_messages_total") == 2 * len(MALFORMED)
            assert await metric(http, "pgw_redis_reconnects_total") == 0
            assert (await http.get("/readyz")).status_code == 200
        await client.close()
    finally:
        gateway.stop()
    assert "malformed message on" in gateway.log()
