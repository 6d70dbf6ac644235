"""The local executor with real child processes, through the lifecycle, on both stores."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from progress_core.errors import JobFinished, Unprocessable
from progress_core.models import Job, JobStatus, Update
from progress_core.store import JobStore, StoreOptions
from progress_gateway.executors.base import Running, Unknown
from progress_gateway.executors.local import LocalExecutor, parse_call_id, process_start_ticks
from progress_gateway.lifecycle import Lifecycle
from progress_gateway.metrics import Metrics
from progress_workers.kinds import KINDS
from tests.support.contract import eventually


def child_environment(store_url: str, options: StoreOptions) -> dict[str, str]:
    environment = {"GATEWAY_KEY_PREFIX": options.prefix}
    if store_url.startswith("sqlite:///"):
        environment["GATEWAY_SQLITE_PATH"] = store_url.removeprefix("sqlite:///")
    else:
        environment["GATEWAY_REDIS_URL"] = store_url
    return environment


@pytest.fixture
async def lifecycle(
    store: JobStore, store_url: str, store_options: StoreOptions, tmp_path: Path
) -> AsyncIterator[Lifecycle]:
    holder: list[Lifecycle] = []

    async def on_exit(job_id: str, call_id: str, code: int | None) -> None:
        await holder[0].on_local_exit(job_id, call_id, code)

    executor = LocalExecutor(
        child_environment(store_url, store_options),
        tmp_path / "slots",
        concurrency=2,
        cancel_grace_s=1.0,
        heartbeat_s=0.2,
        on_exit=on_exit,
    )
    await executor.start()
    lifecycle = Lifecycle(store, {"local": executor}, KINDS, Metrics(), cancel_timeout_s=10)
    holder.append(lifecycle)
    yield lifecycle
    await lifecycle.aclose()
    await executor.aclose()


async def finished(store: JobStore, job_id: str, timeout: float = 30) -> Job:
    async def terminal() -> bool:
        return (await store.get(job_id)).terminal

    await eventually(terminal, timeout, f"job {job_id} to finish")
    return await store.get(job_id)


async def test_demo_job_runs_to_success_with_real_progress(
    lifecycle: Lifecycle, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo", {"steps": 5, "step_s": 0})
    assert job.call_id is not None and job.call_id.startswith("local:")
    assert job.executor == "local"
    done = await finished(store, job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.result["steps"] == 5  # type: ignore[index]
    assert done.result["bytes_in"] == 5 * 256 * 1024  # type: ignore[index]
    progress = [event.progress for event in await store.history(job.id)]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert len({p for p in progress if 0 < p < 100}) >= 1  # intermediate progress was reported


async def test_fail_at_step_fails_with_worker_error(lifecycle: Lifecycle, store: JobStore) -> None:
    job = await lifecycle.create("alice", "demo", {"steps": 10, "step_s": 0, "fail_at_step": 3})
    failed = await finished(store, job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "worker_error"
    assert "step 3" in failed.error.message
    assert failed.progress == pytest.approx(20.0)


async def test_bad_params_and_unknown_kind_are_rejected_before_anything_runs(
    lifecycle: Lifecycle, store: JobStore
) -> None:
    with pytest.raises(Unprocessable, match="steps"):
        await lifecycle.create("alice", "demo", {"steps": 0})
    with pytest.raises(Unprocessable, match="unknown kind"):
        await lifecycle.create("alice", "teleport", {})
    with pytest.raises(Unprocessable, match="stepz: Extra inputs"):
        await lifecycle.create("alice", "demo", {"stepz": 3})
    owned = await store.owner_jobs("alice")
    assert owned.active == [] and owned.recent == []


async def test_cooperative_cancel_ends_cancelled(lifecycle: Lifecycle, store: JobStore) -> None:
    job = await lifecycle.create("alice", "demo", {"steps": 1000, "step_s": 0.05})
    await eventually(lambda: _running(store, job.id), 20, "the job to run")
    flagged = await lifecycle.cancel("alice", job.id)
    assert flagged.cancel_requested
    cancelled = await finished(store, job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.progress < 100
    # A worker that reports after the cancellation is rejected and changes nothing.
    with pytest.raises(JobFinished):
        await store.apply(job.id, Update.build(progress=99))
    assert (await store.get(job.id)).seq == cancelled.seq


async def _running(store: JobStore, job_id: str) -> bool:
    job = await store.get(job_id)
    return job.status is JobStatus.RUNNING and job.progress > 0


async def test_killed_worker_is_finalized_as_worker_lost(
    lifecycle: Lifecycle, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo", {"steps": 1000, "step_s": 0.05})
    await eventually(lambda: _running(store, job.id), 20, "the job to run")
    assert job.call_id is not None
    pid, _ = parse_call_id(job.call_id)
    os.kill(pid, signal.SIGKILL)
    lost = await finished(store, job.id)
    assert lost.status is JobStatus.FAILED
    assert lost.error is not None and lost.error.code == "worker_lost"


async def test_poll_knows_a_process_it_did_not_start(lifecycle: Lifecycle) -> None:
    executor = lifecycle.executors["local"]
    sleeper = await asyncio.create_subprocess_exec("sleep", "30")
    ticks = process_start_ticks(sleeper.pid)
    assert ticks is not None
    call_id = f"local:{sleeper.pid}:{ticks}"
    assert isinstance(await executor.poll(call_id), Running)
    # The same pid with another start time is another process: pid reuse is not confused.
    assert isinstance(await executor.poll(f"local:{sleeper.pid}:{ticks + 1}"), Unknown)
    sleeper.kill()
    await sleeper.wait()
    assert isinstance(await executor.poll(call_id), Unknown)


async def test_concurrency_is_bounded_and_queued_jobs_wait(
    lifecycle: Lifecycle, store: JobStore
) -> None:
    jobs = [
        await lifecycle.create("alice", "demo", {"steps": 200, "step_s": 0.05}) for _ in range(3)
    ]

    async def two_running() -> bool:
        statuses = [(await store.get(job.id)).status for job in jobs]
        return statuses.count(JobStatus.RUNNING) == 2

    await eventually(two_running, 20, "two jobs running")
    statuses = [(await store.get(job.id)).status for job in jobs]
    assert statuses.count(JobStatus.QUEUED) == 1  # its process waits for a slot
    for job in jobs:
        await lifecycle.cancel("alice", job.id)
    for job in jobs:
        assert (await finished(store, job.id)).status is JobStatus.CANCELLED
