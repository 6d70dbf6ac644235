"""Checkpoints: a worker's resume point, stored beside the job on every backend."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from progress_core.errors import Conflict, JobFinished, JobNotFound, PayloadTooLarge
from progress_core.models import (
    MAX_CHECKPOINT_BYTES,
    Cancel,
    Checkpoint,
    Create,
    Fail,
    Job,
    RequestCancel,
    Start,
    Succeed,
    Update,
    new_job_id,
)
from progress_core.store import JobStore, StoreOptions, open_store
from progress_workers import ProgressClient
from tests.support.contract import eventually, new_job, state
from tests.support.redis_server import RedisServer


async def test_no_checkpoint_before_the_first_one(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Start())

    assert await store.last_checkpoint(job.id) is None


async def test_checkpoint_is_stored_beside_the_job_not_in_its_snapshot(store: JobStore) -> None:
    job = await new_job(store)
    started = await store.apply(job.id, Start())
    before_history = await store.history(job.id)

    after = await store.apply(job.id, Checkpoint.build({"step": 7, "cursor": "abc"}))

    assert await store.last_checkpoint(job.id) == {"step": 7, "cursor": "abc"}
    # Like a heartbeat: liveness refreshed, no seq change, nothing in the timeline or snapshot.
    assert after.seq == started.seq
    assert after.heartbeat_at >= started.heartbeat_at
    assert await store.history(job.id) == before_history
    (snapshot,) = await store.snapshots([job.id])
    assert snapshot is not None and "cursor" not in snapshot and "checkpoint" not in snapshot


async def test_a_newer_checkpoint_replaces_the_older(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Start())
    await store.apply(job.id, Checkpoint.build({"step": 1}))
    await store.apply(job.id, Update.build(progress=40))
    await store.apply(job.id, Checkpoint.build([2, "two"]))

    assert await store.last_checkpoint(job.id) == [2, "two"]


async def test_the_next_attempt_reads_the_checkpoint_back(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Start())
    await store.apply(job.id, Checkpoint.build({"step": 12}))

    second = await store.apply(job.id, Start())

    assert second.attempt == 2
    assert await store.last_checkpoint(job.id) == {"step": 12}


def test_checkpoint_is_bounded() -> None:
    at_limit = "x" * (MAX_CHECKPOINT_BYTES - 2)  # two quotes make it exactly the limit
    assert len(Checkpoint.build(at_limit).data_json.encode()) == MAX_CHECKPOINT_BYTES
    with pytest.raises(PayloadTooLarge, match="checkpoint is 16385 bytes"):
        Checkpoint.build(at_limit + "x")


async def test_largest_checkpoint_round_trips(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Start())
    data = {"blob": "é" * ((MAX_CHECKPOINT_BYTES - 20) // 2)}
    await store.apply(job.id, Checkpoint.build(data))

    assert await store.last_checkpoint(job.id) == data


async def test_queued_job_refuses_a_checkpoint(store: JobStore) -> None:
    job = await new_job(store)

    with pytest.raises(Conflict, match="only a started job"):
        await store.apply(job.id, Checkpoint.build({"step": 1}))

    assert await store.last_checkpoint(job.id) is None
    assert (await store.get(job.id)).seq == job.seq


@pytest.mark.parametrize("how", ["succeeded", "failed", "cancelled"])
async def test_finished_job_refuses_a_checkpoint(store: JobStore, how: str) -> None:
    job = await new_job(store)
    await store.apply(job.id, Start())
    await store.apply(job.id, Checkpoint.build({"step": 3}))
    if how == "succeeded":
        await store.apply(job.id, Succeed.build(None))
    elif how == "failed":
        await store.apply(job.id, Fail.build(code="worker_lost", message="gone"))
    else:
        await store.apply(job.id, RequestCancel())
        await store.apply(job.id, Cancel.build())
    before = await state(store, job.id)

    with pytest.raises(JobFinished) as caught:
        await store.apply(job.id, Checkpoint.build({"step": 4}))

    assert caught.value.status == before[0].status.value
    assert await state(store, job.id) == before
    assert await store.last_checkpoint(job.id) == {"step": 3}


async def test_unknown_job_has_no_checkpoint(store: JobStore) -> None:
    with pytest.raises(JobNotFound):
        await store.last_checkpoint(new_job_id())
    with pytest.raises(JobNotFound):
        await store.apply(new_job_id(), Checkpoint.build({"step": 1}))


async def test_checkpoint_expires_with_the_job(store_url: str, store_options: StoreOptions) -> None:
    short = open_store(store_url, StoreOptions(prefix=store_options.prefix, retention_s=1))
    try:
        job = await new_job(short)
        await short.apply(job.id, Start())
        await short.apply(job.id, Checkpoint.build({"step": 5}))
        await short.apply(job.id, Succeed.build(None))

        async def gone() -> bool:
            try:
                await short.last_checkpoint(job.id)
            except JobNotFound:
                return True
            return False

        await eventually(gone, 10.0, "the checkpoint to expire with its job")
        # A job created again under the same id starts without the old checkpoint.
        again = await new_job_with_id(short, job.id)
        await short.apply(again.id, Start())
        assert await short.last_checkpoint(job.id) is None
    finally:
        await short.aclose()


async def new_job_with_id(store: JobStore, job_id: str) -> Job:
    return await store.create(Create.build(owner="alice", kind="multi_clip", job_id=job_id))


# -- durability and migration ------------------------------------------------------------------


def test_checkpoint_survives_a_redis_restart_with_aof(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    options = StoreOptions(prefix="ckpt")
    try:
        with ProgressClient.from_url(server.url, options) as client:
            job = client.create_job(owner="alice", kind="demo")
            client.start(job.id)
            client.checkpoint(job.id, {"step": 9})
        server.kill()
        server.start()  # same directory: replays the append-only file
        with ProgressClient.from_url(server.url, options) as client:
            assert client.last_checkpoint(job.id) == {"step": 9}
    finally:
        server.stop()


# The jobs table as it was before checkpoints: a demo .db made then must still open and work.
OLD_JOBS_TABLE = """
CREATE TABLE jobs (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    params       TEXT NOT NULL,
    status       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    expires_ms   INTEGER,
    snapshot     TEXT NOT NULL
);
"""


def test_sqlite_file_from_before_checkpoints_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path)
    conn.executescript(OLD_JOBS_TABLE)
    conn.close()
    url = f"sqlite:///{path}"
    with ProgressClient.from_url(url) as client:
        job = client.create_job(owner="alice", kind="demo")
        client.start(job.id)
        client.checkpoint(job.id, {"step": 2})
        assert client.last_checkpoint(job.id) == {"step": 2}
    # A second opening (the column exists now) is a no-op.
    with ProgressClient.from_url(url) as client:
        assert client.last_checkpoint(job.id) == {"step": 2}
    columns = [row[1] for row in sqlite3.connect(path).execute("PRAGMA table_info(jobs)")]
    assert columns.count("checkpoint") == 1
