"""Another owner's job never reaches a connection, even while its subscribe is being checked.

The attack of issue 11 (finding 1): Alice subscribes in a loop to Bob's job id while Bob's job
updates. The old hub made her a watcher before reading the job and checking its owner, so every
update published in that window went to her.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from progress_core.store import StoreOptions
from progress_gateway.auth import issue_token
from progress_workers import AsyncProgressClient
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.ws_client import WsClient

ROUNDS_S = 4.0
BATCH = 20


@pytest.fixture
def gateway(store_url: str, store_options: StoreOptions, tmp_path: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(store_url, tmp_path / "gateway.log", key_prefix=store_options.prefix)
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def worker(store_url: str, store_options: StoreOptions) -> AsyncIterator[AsyncProgressClient]:
    client = AsyncProgressClient.from_url(store_url, store_options)
    yield client
    await client.aclose()


async def test_subscribing_to_anothers_job_in_a_loop_yields_no_foreign_frame(
    gateway: GatewayServer, worker: AsyncProgressClient
) -> None:
    job = await worker.create_job(owner="bob", kind="demo")
    await worker.start(job.id)
    updates = 0

    async def bob_works() -> None:
        nonlocal updates
        step = 0
        while True:
            step += 1
            await worker.update(job.id, progress=min(99.0, step / 100), message=f"step {step}")
            updates += 1

    alice = await WsClient.connect(gateway.ws_url, issue_token(SECRET, "alice", 600))
    await alice.ready()
    bob_task = asyncio.create_task(bob_works())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ROUNDS_S
    subscribes = forbidden = 0
    try:
        while loop.time() < deadline:
            # Pipelined subscribes keep several owner checks in flight while Bob's job updates.
            for n in range(BATCH):
                await alice.send({"op": "subscribe", "ref": f"r{subscribes + n}", "jobs": [job.id]})
            last = f"r{subscribes + BATCH - 1}"
            subscribes += BATCH
            await alice.recv_until(lambda f, ref=last: f["op"] == "ack" and f["ref"] == ref, 15)
    finally:
        bob_task.cancel()
        await asyncio.gather(bob_task, return_exceptions=True)
    foreign = [frame for frame in alice.frames if frame["op"] == "update"]
    forbidden = sum(
        1 for frame in alice.frames if frame["op"] == "error" and frame["code"] == "forbidden"
    )
    await alice.close()
    # The attack ran: Bob's job changed throughout and every subscribe was checked and refused.
    assert updates > 50, updates
    assert forbidden == subscribes
    assert foreign == [], f"{len(foreign)} of Bob's snapshots reached Alice: {foreign[:2]}"
