"""The hub in process, on the real embedded store and broker: the rules no timing can break."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from progress_core.models import Create
from progress_core.store import StoreOptions
from progress_core.store.sqlite import SqliteJobStore
from progress_gateway.broker.sqlite import SqliteBroker
from progress_gateway.hub import Hub, Snapshot
from progress_gateway.metrics import Metrics
from progress_gateway.outbox import Outbox

JOB_ID = "0b6f7d0e-9c35-4a8e-9d61-5f3c1f0a2b77"


@pytest.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    store = SqliteJobStore(tmp_path / "jobs.db", StoreOptions())
    hub = Hub(store, SqliteBroker(store), Metrics(), resync_s=60, max_subscriptions=2)
    await hub.start()
    yield hub
    await hub.aclose()
    await store.aclose()


async def create(hub: Hub, owner: str, job_id: str = JOB_ID) -> None:
    await hub.store.create(Create.build(job_id=job_id, owner=owner, kind="demo", params={}))


async def test_a_foreign_job_is_refused_and_its_channel_released(hub: Hub) -> None:
    await create(hub, "bob")
    outbox: Outbox[Snapshot] = Outbox()
    (result,) = await hub.watch(outbox, "alice", [(JOB_ID, None)])
    assert result.error is not None and result.error.code == "forbidden"
    assert len(outbox) == 0 and hub.watched_count() == 0


async def test_a_connection_closed_during_the_read_is_not_left_watching(hub: Hub) -> None:
    await create(hub, "alice")
    outbox: Outbox[Snapshot] = Outbox()
    watching = asyncio.create_task(hub.watch(outbox, "alice", [(JOB_ID, None)]))
    await asyncio.sleep(0)  # the watch is now reading the store
    outbox.close()
    hub.drop(outbox, None)
    await watching
    assert hub.watched_count() == 0


async def test_watches_past_the_limit_are_refused(hub: Hub) -> None:
    ids = [f"0b6f7d0e-9c35-4a8e-9d61-5f3c1f0a2b7{n}" for n in range(3)]
    for job_id in ids:
        await create(hub, "alice", job_id)
    outbox: Outbox[Snapshot] = Outbox()
    results = await hub.watch(outbox, "alice", [(job_id, None) for job_id in ids])
    assert [r.error.code if r.error else None for r in results] == [
        None,
        None,
        "too_many_subscriptions",
    ]


async def test_fan_out_drops_a_snapshot_for_a_watcher_of_another_owner(hub: Hub) -> None:
    await create(hub, "alice")
    outbox: Outbox[Snapshot] = Outbox()
    await hub.watch(outbox, "alice", [(JOB_ID, None)])
    outbox.take_nowait()
    outbox.owner = "mallory"  # a bug elsewhere put the wrong connection in the fan-out
    job = await hub.store.get(JOB_ID)
    forged = job.model_copy(update={"seq": job.seq + 1}).model_dump_json()
    hub.on_snapshot(forged)
    assert outbox.take_nowait() == []
