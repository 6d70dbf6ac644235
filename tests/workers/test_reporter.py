"""The reporter: heartbeat, throttling, how work ends, cancellation, ``@tracked``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from progress_core.store import StoreOptions
from progress_workers import (
    AsyncProgressClient,
    JobFinished,
    JobStatus,
    ProgressClient,
    tracked,
)
from tests.support.redis_server import wait_until


@pytest.fixture
def client(store_url: str, store_options: StoreOptions) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(store_url, store_options) as opened:
        yield opened


def test_reporter_starts_and_succeeds_with_result(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with client.reporter(job.id) as reporter:
        assert client.get(job.id).status is JobStatus.RUNNING
        reporter.update(progress=50, stage="halfway")
        reporter.succeed(result={"rows": 12})
    done = client.get(job.id)
    assert (done.status, done.result, done.attempt) == (JobStatus.SUCCEEDED, {"rows": 12}, 1)


def test_clean_exit_without_succeed_counts_as_success(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with client.reporter(job.id) as reporter:
        reporter.update(progress=30)
    assert client.get(job.id).status is JobStatus.SUCCEEDED


def test_exception_fails_the_job_and_propagates(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with pytest.raises(RuntimeError, match="codec exploded"), client.reporter(job.id):
        raise RuntimeError("codec exploded")
    failed = client.get(job.id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None
    assert (failed.error.code, failed.error.message) == (
        "worker_error",
        "RuntimeError: codec exploded",
    )


def test_cancellation_exception_ends_cancelled_not_failed(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with pytest.raises(KeyboardInterrupt), client.reporter(job.id):
        raise KeyboardInterrupt
    cancelled = client.get(job.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.error is not None and cancelled.error.code == "cancelled"


def test_updates_are_throttled_and_the_last_one_is_always_written(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with client.reporter(job.id, min_interval_s=0.2) as reporter:
        seq_before = client.get(job.id).seq
        began = time.monotonic()
        for step in range(1, 201):
            reporter.update(progress=step / 2, message=f"step {step}")
        elapsed = time.monotonic() - began
        wait_until(
            lambda: client.get(job.id).message == "step 200", 5.0, "the last update to be flushed"
        )
        written = client.get(job.id)
        # At most one write per 0.2 s window, plus the trailing flush.
        assert written.seq - seq_before <= int(elapsed / 0.2) + 2
        assert written.progress == 100.0
        reporter.succeed()


def test_heartbeat_refreshes_liveness_without_publishing(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with client.reporter(job.id, heartbeat_s=0.05) as reporter:
        started = client.get(job.id)
        wait_until(
            lambda: client.get(job.id).heartbeat_at > started.heartbeat_at,
            5.0,
            "a background heartbeat",
        )
        beaten = client.get(job.id)
        assert (beaten.seq, beaten.updated_at) == (started.seq, started.updated_at)
        reporter.succeed()


def test_worker_sees_cancel_request_and_later_updates_are_rejected(
    client: ProgressClient,
) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with client.reporter(job.id, heartbeat_s=0.05) as reporter:
        assert not reporter.cancel_requested
        client.request_cancel(job.id)
        wait_until(lambda: reporter.cancel_requested, 5.0, "the reporter to see the request")
        client.cancel(job.id, "stopped by the gateway")
        with pytest.raises(JobFinished) as caught:
            reporter.update(progress=90)
        assert caught.value.status == "cancelled"
    after = client.get(job.id)
    assert (after.status, after.progress) == (JobStatus.CANCELLED, 0.0)


def test_second_start_is_a_new_attempt(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with client.reporter(job.id) as first:
        first.update(progress=40)
        # A preempted worker re-runs the same input: a new attempt, not an error.
        with client.reporter(job.id) as second:
            assert second.job is not None and second.job.attempt == 2
            second.succeed(result="ok")
    done = client.get(job.id)
    assert (done.status, done.attempt, done.result) == (JobStatus.SUCCEEDED, 2, "ok")


def test_tracked_sync_function(client: ProgressClient) -> None:
    @tracked(client=client)
    def export(reporter: object, clips: int) -> dict[str, int]:
        assert hasattr(reporter, "update")
        for clip in range(clips):
            reporter.update(progress=100 * (clip + 1) / clips)  # type: ignore[attr-defined]
        return {"clips": clips}

    job = client.create_job(owner="alice", kind="demo")
    assert export(job.id, 3) == {"clips": 3}
    done = client.get(job.id)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"clips": 3})

    @tracked(client=client)
    def broken(reporter: object) -> None:
        raise ValueError("bad frame")

    other = client.create_job(owner="alice", kind="demo")
    with pytest.raises(ValueError, match="bad frame"):
        broken(other.id)
    assert client.get(other.id).status is JobStatus.FAILED


async def test_tracked_async_function(store_url: str, store_options: StoreOptions) -> None:
    async with AsyncProgressClient.from_url(store_url, store_options) as client:

        @tracked(client=client)
        async def export(reporter: object, name: str) -> str:
            await reporter.update(progress=50, stage="render")  # type: ignore[attr-defined]
            return f"{name}.mp4"

        job = await client.create_job("alice", "demo")
        assert await export(job.id, "clip") == "clip.mp4"
        done = await client.get(job.id)
        assert (done.status, done.result) == (JobStatus.SUCCEEDED, "clip.mp4")

        @tracked(client=client)
        async def cancelled(reporter: object) -> None:
            raise asyncio.CancelledError

        other = await client.create_job("alice", "demo")
        with pytest.raises(asyncio.CancelledError):
            await cancelled(other.id)
        assert (await client.get(other.id)).status is JobStatus.CANCELLED


def test_tracked_rejects_a_client_of_the_wrong_kind(client: ProgressClient) -> None:
    with pytest.raises(TypeError):

        @tracked(client=client)
        async def export(reporter: object) -> None:
            return None
