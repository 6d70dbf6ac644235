"""Live updates over a real WebSocket from a real gateway process, on both backends."""

from __future__ import annotations

import asyncio

from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import GatewayServer
from tests.support.ws_client import WsClient


async def test_subscriber_sees_progress_and_the_terminal_snapshot(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    client = await WsClient.connect(gateway.ws_url, token_for("alice"))
    await client.ready()
    frames = await client.subscribe("r1", [{"id": job.id}])
    assert [frame["op"] for frame in frames] == ["update", "ack"]
    assert frames[0]["job"]["seq"] == 1

    def work() -> None:
        worker.start(job.id)
        for step in range(1, 101):
            worker.update(job.id, progress=step * 0.99, message=f"step {step}")
        worker.succeed(job.id, result={"url": "done"})

    await asyncio.to_thread(work)
    final = await client.wait_for_job(job.id, lambda j: j["status"] == "succeeded")
    assert (final["seq"], final["result"]) == (103, {"url": "done"})
    await client.close()


async def test_scope_mine_and_ids_together_deliver_each_snapshot_once(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    worker.create_job(owner="bob", kind="demo")  # never visible to alice
    client = await WsClient.connect(gateway.ws_url, token_for("alice"))
    await client.ready()
    await client.subscribe("r1", [{"id": job.id}])
    await client.send({"op": "subscribe", "ref": "r2", "scope": "mine"})
    await client.recv_until(lambda frame: frame["op"] == "ack" and frame["ref"] == "r2")

    def work() -> None:
        worker.start(job.id)
        worker.update(job.id, progress=50)
        worker.succeed(job.id)

    await asyncio.to_thread(work)
    await client.wait_for_job(job.id, lambda j: j["status"] == "succeeded")
    later = worker.create_job(owner="alice", kind="demo", params={"n": 2})
    adopted = await client.wait_for_job(later.id, lambda j: True)
    assert adopted["params"] == {"n": 2}
    worker.update(later.id, progress=10)
    await client.wait_for_job(later.id, lambda j: j["progress"] == 10)
    owners = {frame["job"]["owner"] for frame in client.frames if frame["op"] == "update"}
    assert owners == {"alice"}
    terminal = [
        frame
        for frame in client.frames
        if frame["op"] == "update" and frame["job"]["id"] == job.id and frame["job"]["seq"] == 4
    ]
    assert len(terminal) == 1
    await client.close()
