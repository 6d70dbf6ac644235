"""The reaper against real stores: fair sweeps, executor-less jobs whose worker is gone.

Time is simulated by moving heartbeat and creation timestamps back in the real store
(``tests/support/backdate.py``), never by sleeping; the end-to-end tests run a real gateway
process with real WebSocket and HTTP watchers.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from progress_core.models import Create, Heartbeat, Job, JobStatus, RequestCancel, Start, Update
from progress_core.store import JobStore, StoreOptions
from progress_gateway.executors.local import LocalExecutor, process_start_ticks
from progress_gateway.lifecycle import Lifecycle
from progress_gateway.metrics import Metrics
from progress_gateway.reaper import SWEEP_PAGE, FileLeadership, Reaper
from progress_workers.kinds import KINDS
from tests.gateway.conftest import token_for
from tests.support.backdate import backdate
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer
from tests.support.http import bearer, metric
from tests.support.ws_client import WsClient

STALE_AFTER_S = 30.0
ORPHAN_AFTER_S = 300.0
FORTY_MINUTES_S = 40 * 60.0


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
    orphans = [await started(store) for _ in range(SWEEP_PAGE + 100)]
    lost = await started(store, "local", await dead_call_id())
    ids = [job.id for job in orphans]
    await backdate(store_url, store_options, ids, heartbeat_s_ago=STALE_AFTER_S * 4)
    await backdate(store_url, store_options, [lost.id], heartbeat_s_ago=STALE_AFTER_S * 2)
    reaper = reaper_for(lifecycle, tmp_path)
    # The documented bound: ceil(N / 500) + 1 sweeps for N stale jobs.
    for _ in range(-(-(len(orphans) + 1) // SWEEP_PAGE) + 1):
        await reaper.sweep()
    done = await store.get(lost.id)
    assert done.status is JobStatus.FAILED, done
    assert done.error is not None and done.error.code == "worker_lost"
    assert {(await store.get(job.id)).status for job in orphans} == {JobStatus.RUNNING}


async def test_b_silent_sdk_jobs_end_worker_lost_or_cancelled_after_the_orphan_time(
    store: JobStore,
    store_url: str,
    store_options: StoreOptions,
    lifecycle: Lifecycle,
    tmp_path: Path,
) -> None:
    running = await started(store)
    await store.apply(running.id, Update.build(progress=40, stage="encoding"))
    cancelling = await started(store)
    await store.apply(cancelling.id, RequestCancel())
    never_started = await store.create(Create.build(owner="alice", kind="demo"))
    not_yet = await started(store)
    silent = [running.id, cancelling.id, never_started.id]
    await backdate(store_url, store_options, silent, heartbeat_s_ago=ORPHAN_AFTER_S + 5)
    await backdate(store_url, store_options, [not_yet.id], heartbeat_s_ago=ORPHAN_AFTER_S - 5)

    assert await reaper_for(lifecycle, tmp_path).sweep() == 3
    lost = await store.get(running.id)
    assert lost.status is JobStatus.FAILED and lost.progress == 40
    assert lost.error is not None and lost.error.code == "worker_lost"
    assert "stopped reporting" in lost.error.message
    cancelled = await store.get(cancelling.id)
    assert cancelled.status is JobStatus.CANCELLED
    unstarted = await store.get(never_started.id)
    assert unstarted.status is JobStatus.FAILED
    assert unstarted.error is not None and unstarted.error.code == "worker_lost"
    assert "no worker started" in unstarted.error.message
    assert (await store.get(not_yet.id)).status is JobStatus.RUNNING
    counted = lifecycle.metrics.registry.get_sample_value
    assert counted("pgw_jobs_finalized_total", {"reason": "worker_lost"}) == 2
    assert counted("pgw_jobs_finalized_total", {"reason": "cancelled"}) == 1


async def test_c_a_forty_minute_job_with_fresh_heartbeats_is_never_finalized(
    store: JobStore,
    store_url: str,
    store_options: StoreOptions,
    lifecycle: Lifecycle,
    tmp_path: Path,
) -> None:
    # Created 40 minutes ago, 8 times the orphan time; its worker heartbeats all along. Each
    # round its last heartbeat is stale (the reaper looks at it) but younger than the orphan
    # time, then the worker beats again.
    job = await started(store)
    reaper = reaper_for(lifecycle, tmp_path)
    for heartbeat_s_ago in (STALE_AFTER_S + 1, ORPHAN_AFTER_S / 2, ORPHAN_AFTER_S - 5):
        (quiet,) = await backdate(
            store_url,
            store_options,
            [job.id],
            heartbeat_s_ago=heartbeat_s_ago,
            created_s_ago=FORTY_MINUTES_S,
        )
        assert await reaper.sweep() == 0
        assert (await lifecycle.finalize(quiet)).status is JobStatus.RUNNING  # the lazy path
        await store.apply(job.id, Heartbeat())
    alive = await store.get(job.id)
    assert alive.status is JobStatus.RUNNING and alive.error is None


# -- end to end: a real gateway, real watchers ------------------------------------------------


def gateway_for(
    store_url: str, options: StoreOptions, tmp_path: Path, **settings: str
) -> GatewayServer:
    return GatewayServer(
        store_url,
        tmp_path / "gateway.log",
        key_prefix=options.prefix,
        stale_after_s=str(STALE_AFTER_S),
        orphan_after_s=str(ORPHAN_AFTER_S),
        **settings,
    )


async def test_b_watchers_see_an_orphaned_job_end_worker_lost(
    store: JobStore, store_url: str, store_options: StoreOptions, tmp_path: Path
) -> None:
    with gateway_for(store_url, store_options, tmp_path, reap_interval_s="0.25") as gateway:
        job = await started(store)
        job = await store.apply(job.id, Update.build(progress=25))
        ws = await WsClient.connect(gateway.ws_url, token_for("alice"))
        await ws.ready()
        await ws.subscribe("r1", [{"id": job.id}])
        assert ws.latest[job.id]["status"] == "running"
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as http:
            long_poll = asyncio.create_task(
                http.get(
                    f"/exports/{job.id}",
                    params={"wait": "25"},
                    headers={**bearer(token_for("alice")), "If-None-Match": f'"{job.seq}"'},
                )
            )
            await backdate(store_url, store_options, [job.id], heartbeat_s_ago=ORPHAN_AFTER_S + 1)
            seen = await ws.wait_for_job(job.id, lambda j: j["status"] != "running", timeout=20)
            assert seen["status"] == "failed" and seen["error"]["code"] == "worker_lost"
            answer = await long_poll
            assert answer.status_code == 200, answer.text
            assert answer.json()["status"] == "failed"
            assert answer.json()["error"]["code"] == "worker_lost"

            async def counted() -> bool:
                return await metric(http, "pgw_jobs_finalized_total", reason="worker_lost") == 1

            await eventually(counted, 10, "the finalization to be counted as worker_lost")
        await ws.close()


async def test_b_c_lazy_finalization_in_active_judges_sdk_jobs_on_heartbeat(
    store: JobStore, store_url: str, store_options: StoreOptions, tmp_path: Path
) -> None:
    # No reaper sweep after startup for an hour: only GET /exports/active can finalize.
    with gateway_for(store_url, store_options, tmp_path, reap_interval_s="3600") as gateway:
        orphan = await started(store)
        cancelling = await started(store)
        await store.apply(cancelling.id, RequestCancel())
        long_job = await started(store)
        gone = [orphan.id, cancelling.id]
        await backdate(store_url, store_options, gone, heartbeat_s_ago=ORPHAN_AFTER_S + 1)
        await backdate(
            store_url,
            store_options,
            [long_job.id],
            heartbeat_s_ago=STALE_AFTER_S + 1,
            created_s_ago=FORTY_MINUTES_S,
        )
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
            response = await http.get("/exports/active", headers=bearer(token_for("alice")))
        assert response.status_code == 200, response.text
        body = response.json()
        assert [job["id"] for job in body["active"]] == [long_job.id]
        recent = {job["id"]: job for job in body["recent"]}
        assert recent[orphan.id]["status"] == "failed"
        assert recent[orphan.id]["error"]["code"] == "worker_lost"
        assert recent[cancelling.id]["status"] == "cancelled"
