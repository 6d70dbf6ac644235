"""The reaper against real stores: fair sweeps, executor-less jobs whose worker is gone."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gateway.lifecycle import Lifecycle
from gateway.metrics import Metrics
from gateway.models import Create, Job, JobStatus, Start
from gateway.reaper import FileLeadership, Reaper
from gateway.store import JobStore, StoreOptions
from tests.support.backdate import backdate
from workers.executors.local import LocalExecutor, process_start_ticks
from workers.kinds import KINDS

STALE_AFTER_S = 30.0
ORPHAN_AFTER_S = 3600.0
PAGE = 500


@pytest.fixture
async def lifecycle(store: JobStore, tmp_path: Path) -> AsyncIterator[Lifecycle]:
    executor = LocalExecutor({}, tmp_path / "slots")
    await executor.start()
    lifecycle = Lifecycle(
        store, {"local": executor}, KINDS, Metrics(), orphan_after_s=ORPHAN_AFTER_S
    )
    yield lifecycle
    await lifecycle.aclose()
    await executor.aclose()


def reaper_for(lifecycle: Lifecycle, tmp_path: Path) -> Reaper:
    return Reaper(
        lifecycle.store,
        lifecycle,
        FileLeadership(tmp_path / "reaper.lock"),
        stale_after_s=STALE_AFTER_S,
        interval_s=3600,
        metrics=lifecycle.metrics,
    )


async def dead_call_id() -> str:
    """The call id of a local process that has exited: its executor answers "gone"."""
    process = await asyncio.create_subprocess_exec("sleep", "30")
    ticks = process_start_ticks(process.pid)
    process.kill()
    await process.wait()
    return f"local:{process.pid}:{ticks}"


async def started(store: JobStore, executor: str | None = None, call_id: str | None = None) -> Job:
    create = Create.build(
        owner="alice", kind="demo", params={"steps": 5}, executor=executor, call_id=call_id
    )
    job = await store.create(create)
    return await store.apply(job.id, Start())


async def test_a_stale_job_behind_600_unfinalizable_ones_is_reached_within_the_bound(
    store: JobStore,
    store_url: str,
    store_options: StoreOptions,
    lifecycle: Lifecycle,
    tmp_path: Path,
) -> None:
    # 601 stale jobs: 600 whose SDK worker went quiet (not yet orphaned: nothing can end them),
    # and behind them, with the newest heartbeat, one whose executor says its process is gone.
    orphans = [await started(store) for _ in range(PAGE + 100)]
    lost = await started(store, "local", await dead_call_id())
    ids = [job.id for job in orphans]
    await backdate(store_url, store_options, ids, heartbeat_s_ago=STALE_AFTER_S * 4)
    await backdate(store_url, store_options, [lost.id], heartbeat_s_ago=STALE_AFTER_S * 2)
    reaper = reaper_for(lifecycle, tmp_path)
    # The documented bound: ceil(N / 500) + 1 sweeps for N stale jobs.
    for _ in range(-(-(len(orphans) + 1) // PAGE) + 1):
        await reaper.sweep()
    done = await store.get(lost.id)
    assert done.status is JobStatus.FAILED, done
    assert done.error is not None and done.error.code == "worker_lost"
    assert {(await store.get(job.id)).status for job in orphans} == {JobStatus.RUNNING}
