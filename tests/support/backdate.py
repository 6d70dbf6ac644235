"""Move a job's clock readings into the past, in the real store, behind the store's back.

The reaper decides on heartbeat age, and the stores stamp every change with their own clock, so a
test cannot wait 40 minutes: it rewrites the job's ``created_at`` and ``heartbeat_at`` (and the
heartbeat index the reaper scans) exactly where each backend keeps them. The next real change
writes its own time over them, as it would on a live system.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from datetime import UTC, datetime

import redis.asyncio as aioredis

from progress_core.models import Job, format_time
from progress_core.store import StoreOptions
from progress_core.store.redis import RedisKeys
from progress_core.store.sqlite import path_from_url


async def backdate(
    store_url: str,
    options: StoreOptions,
    job_ids: Sequence[str],
    *,
    heartbeat_s_ago: float,
    created_s_ago: float | None = None,
) -> list[Job]:
    """Make the jobs' last heartbeat ``heartbeat_s_ago`` old (and their creation, if given)."""
    now = time.time()
    heartbeat_ms = int((now - heartbeat_s_ago) * 1000)
    created_ms = None if created_s_ago is None else int((now - created_s_ago) * 1000)
    if store_url.startswith("sqlite:"):
        return _backdate_sqlite(store_url, job_ids, heartbeat_ms, created_ms)
    return await _backdate_redis(store_url, options, job_ids, heartbeat_ms, created_ms)


def _moved(snapshot: str | bytes, heartbeat_ms: int, created_ms: int | None) -> Job:
    job = Job.model_validate_json(snapshot)
    fields = {"heartbeat_at": _at(heartbeat_ms)}
    if created_ms is not None:
        fields["created_at"] = _at(created_ms)
    return job.model_copy(update=fields)


def _at(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


async def _backdate_redis(
    url: str,
    options: StoreOptions,
    job_ids: Sequence[str],
    heartbeat_ms: int,
    created_ms: int | None,
) -> list[Job]:
    keys = RedisKeys(options.prefix)
    client = aioredis.Redis.from_url(url)
    jobs: list[Job] = []
    try:
        async with client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.hget(keys.job(job_id), "snapshot")
            snapshots = await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for job_id, snapshot in zip(job_ids, snapshots, strict=True):
                assert snapshot is not None, f"no job {job_id} to backdate"
                job = _moved(snapshot, heartbeat_ms, created_ms)
                # apply.lua rebuilds the snapshot from these fields on the next change.
                fields = {
                    "snapshot": job.model_dump_json(),
                    "heartbeat_ms": str(heartbeat_ms),
                    "heartbeat_at": format_time(job.heartbeat_at),
                    "created_at": format_time(job.created_at),
                }
                pipe.hset(keys.job(job_id), mapping=fields)  # type: ignore[arg-type]
                pipe.zadd(keys.active, {job_id: heartbeat_ms})
                jobs.append(job)
            await pipe.execute()
    finally:
        await client.aclose()
    return jobs


def _backdate_sqlite(
    url: str, job_ids: Sequence[str], heartbeat_ms: int, created_ms: int | None
) -> list[Job]:
    conn = sqlite3.connect(path_from_url(url), isolation_level=None)
    jobs: list[Job] = []
    try:
        conn.execute("PRAGMA busy_timeout = 10000")
        conn.execute("BEGIN IMMEDIATE")
        for job_id in job_ids:
            row = conn.execute("SELECT snapshot FROM jobs WHERE id = ?", (job_id,)).fetchone()
            assert row is not None, f"no job {job_id} to backdate"
            job = _moved(row[0], heartbeat_ms, created_ms)
            conn.execute(
                "UPDATE jobs SET heartbeat_ms = ?, created_ms = ?, snapshot = ? WHERE id = ?",
                (heartbeat_ms, _ms(job.created_at), job.model_dump_json(), job_id),
            )
            jobs.append(job)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return jobs


def _ms(moment: datetime) -> int:
    return round(moment.timestamp() * 1000)
