"""The embedded store's change feed: the SQLite stand-in for pub/sub, across processes."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import AsyncGenerator
from contextlib import aclosing
from pathlib import Path
from typing import cast

import pytest

from progress_core.errors import JobFinished
from progress_core.models import Heartbeat, RequestCancel, Start, Succeed, Update
from progress_core.store import JobStore
from progress_core.store.sqlite import ChangeRecord, SqliteJobStore
from tests.support.contract import new_job

pytestmark = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)

REPO = Path(__file__).resolve().parents[2]
WRITER = """
import asyncio, sys
from progress_core.models import Create, Succeed, Update
from progress_core.store.sqlite import SqliteJobStore

async def main() -> None:
    store = SqliteJobStore(sys.argv[1])
    try:
        for n in range(1, 6):
            await store.apply(sys.argv[2], Update.build(progress=n * 10, message=f"remote {n}"))
        job = await store.create(Create.build(owner="bob", kind="render"))
        await store.apply(job.id, Succeed.build({"from": "subprocess"}))
        print(job.id)
    finally:
        await store.aclose()

asyncio.run(main())
"""


def feed(records: list[ChangeRecord]) -> list[tuple[str, str, int, bool]]:
    return [(r.job_id, r.owner, r.seq, r.created) for r in records]


async def test_changes_after_lists_creates_and_changes_in_order(store: JobStore) -> None:
    assert isinstance(store, SqliteJobStore)
    start = await store.last_cursor()
    first = await new_job(store)
    second = await new_job(store, owner="bob")
    await store.apply(first.id, Start())
    await store.apply(first.id, Heartbeat())  # liveness only: not in the feed
    await store.apply(second.id, Update.build(progress=50))
    await store.apply(first.id, RequestCancel())
    await store.apply(first.id, RequestCancel())  # a repeat changes nothing: not in the feed
    await store.apply(second.id, Succeed.build())
    with pytest.raises(JobFinished):
        await store.apply(second.id, Update.build(progress=1))  # rejected: not in the feed

    records = await store.changes_after(start)

    assert feed(records) == [
        (first.id, "alice", 1, True),
        (second.id, "bob", 1, True),
        (first.id, "alice", 2, False),
        (second.id, "bob", 2, False),
        (first.id, "alice", 3, False),
        (second.id, "bob", 3, False),
    ]
    cursors = [record.cursor for record in records]
    assert cursors == sorted(set(cursors))
    assert cursors[0] > start
    assert await store.last_cursor() == cursors[-1]
    assert await store.changes_after(cursors[-1]) == []
    assert feed(await store.changes_after(cursors[2], limit=2)) == feed(records[3:5])


async def collect(store: SqliteJobStore, cursor: int, count: int) -> list[ChangeRecord]:
    """The next ``count`` records of ``follow()`` after ``cursor``."""
    seen: list[ChangeRecord] = []
    follow = cast(AsyncGenerator[ChangeRecord, None], store.follow(cursor, poll_s=0.01))
    async with aclosing(follow) as changes:
        async for record in changes:
            seen.append(record)
            if len(seen) == count:
                break
    return seen


async def test_follow_sees_this_store_s_own_writes(store: JobStore) -> None:
    assert isinstance(store, SqliteJobStore)
    job = await new_job(store)
    following = asyncio.create_task(collect(store, await store.last_cursor(), 3))

    for n in range(1, 4):
        await store.apply(job.id, Update.build(progress=n))

    async with asyncio.timeout(20):
        seen = await following
    assert feed(seen) == [(job.id, "alice", seq, False) for seq in (2, 3, 4)]


async def test_follow_sees_changes_written_by_another_process(store: JobStore) -> None:
    assert isinstance(store, SqliteJobStore)
    job = await store.apply((await new_job(store)).id, Start())
    following = asyncio.create_task(collect(store, await store.last_cursor(), 7))

    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        WRITER,
        str(store.path),
        job.id,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    async with asyncio.timeout(30):
        stdout, stderr = await process.communicate()
    assert process.returncode == 0, stderr.decode()
    async with asyncio.timeout(20):
        seen = await following

    remote_id = stdout.decode().strip()
    assert feed(seen) == [
        *[(job.id, "alice", seq, False) for seq in range(3, 8)],
        (remote_id, "bob", 1, True),
        (remote_id, "bob", 2, False),
    ]
    latest = await store.get(job.id)
    assert (latest.seq, latest.progress, latest.message) == (7, 50.0, "remote 5")
    assert (await store.get(remote_id)).result == {"from": "subprocess"}
