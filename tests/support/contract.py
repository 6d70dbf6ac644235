"""Helpers for the store contract suite (``tests/contract/``): one body, every backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from progress_core.models import Create, HistoryEvent, Job
from progress_core.store import JobStore

TIMESTAMPS = frozenset({"created_at", "updated_at", "heartbeat_at"})


async def eventually(
    condition: Callable[[], Awaitable[bool]], within: float, what: str, interval: float = 0.02
) -> None:
    """Poll the async ``condition()`` until it holds; fail with ``what`` after ``within`` s."""
    deadline = time.monotonic() + within
    while not await condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


async def clock_passes(moment: datetime, seconds: float) -> None:
    """Wait until the wall clock is ``seconds`` past ``moment`` (for time-window assertions)."""

    async def passed() -> bool:
        return (datetime.now(UTC) - moment).total_seconds() > seconds

    await eventually(passed, 10.0 + seconds, f"the clock to pass {moment} + {seconds}s")


async def new_job(store: JobStore, owner: str = "alice", kind: str = "multi_clip") -> Job:
    return await store.create(Create.build(owner=owner, kind=kind, params={"clips": 3}))


async def state(store: JobStore, job_id: str) -> tuple[Job, list[HistoryEvent]]:
    """Everything a change may write: the snapshot and the timeline."""
    return await store.get(job_id), await store.history(job_id)


def without_timestamps(job: Job) -> dict[str, object]:
    return job.model_dump(exclude=set(TIMESTAMPS))


def timeline(events: list[HistoryEvent]) -> list[tuple[int, str, float, str | None, str | None]]:
    return [(e.seq, e.status.value, e.progress, e.stage, e.message) for e in events]
