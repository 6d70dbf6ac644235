"""The blocking and async clients, against both backends."""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator
from pathlib import Path

import pytest

from progress_core.store import StoreOptions
from progress_workers import (
    AsyncProgressClient,
    BadRequest,
    JobFinished,
    JobNotFound,
    JobStatus,
    ProgressClient,
)


@pytest.fixture
def client(store_url: str, store_options: StoreOptions) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(store_url, store_options) as opened:
        yield opened


def test_sync_lifecycle(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo", params={"steps": 3})
    assert (job.status, job.seq, job.params) == (JobStatus.QUEUED, 1, {"steps": 3})
    assert client.start(job.id).status is JobStatus.RUNNING
    updated = client.update(job.id, progress=40, stage="encode", message="clip 1 of 2")
    assert (updated.progress, updated.stage, updated.message, updated.seq) == (
        40.0,
        "encode",
        "clip 1 of 2",
        3,
    )
    done = client.succeed(job.id, result={"url": "https://example.test/out.mp4"})
    assert (done.status, done.progress, done.result) == (
        JobStatus.SUCCEEDED,
        100.0,
        {"url": "https://example.test/out.mp4"},
    )
    assert client.get(job.id) == done


def test_update_to_finished_job_raises_and_changes_nothing(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    failed = client.fail(job.id, message="disk full")
    assert failed.error is not None and failed.error.code == "worker_error"
    with pytest.raises(JobFinished) as caught:
        client.update(job.id, progress=99)
    assert caught.value.status == "failed"
    with pytest.raises(JobFinished):
        client.succeed(job.id, result={})
    assert client.get(job.id) == failed


def test_bad_input_is_rejected_before_the_store(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    with pytest.raises(BadRequest):
        client.update(job.id, progress=float("nan"))
    with pytest.raises(BadRequest):
        client.update(job.id, message="x" * 1001)
    with pytest.raises(BadRequest):
        client.fail(job.id, code="oops", message="x")
    with pytest.raises(BadRequest):
        client.get("not-a-uuid")
    with pytest.raises(JobNotFound):
        client.get("00000000-0000-4000-8000-000000000000")
    assert client.get(job.id).seq == 1


def test_cancel_request_and_confirmation(client: ProgressClient) -> None:
    queued = client.create_job(owner="alice", kind="demo")
    assert client.request_cancel(queued.id).status is JobStatus.CANCELLED
    running = client.create_job(owner="alice", kind="demo")
    client.start(running.id)
    flagged = client.request_cancel(running.id)
    assert (flagged.status, flagged.cancel_requested) == (JobStatus.RUNNING, True)
    confirmed = client.cancel(running.id, "stopped at step 3")
    assert confirmed.status is JobStatus.CANCELLED
    assert confirmed.error is not None and confirmed.error.message == "stopped at step 3"


def test_attach_call_records_the_executor_call(client: ProgressClient) -> None:
    job = client.create_job(owner="alice", kind="demo")
    attached = client.attach_call(job.id, executor="modal", call_id="fc-01JD")
    assert (attached.executor, attached.call_id, attached.seq) == ("modal", "fc-01JD", 2)


async def test_async_lifecycle(store_url: str, store_options: StoreOptions) -> None:
    async with AsyncProgressClient.from_url(store_url, store_options) as client:
        job = await client.create_job("bob", "report")
        await client.start(job.id)
        await client.update(job.id, progress=10)
        await client.heartbeat(job.id)
        done = await client.succeed(job.id, result=[1, 2, 3])
        assert (done.status, done.result, done.seq) == (JobStatus.SUCCEEDED, [1, 2, 3], 4)
        assert (await client.get(job.id)).result == [1, 2, 3]


def _child_reports(url: str, prefix: str, job_id: str) -> None:
    with ProgressClient.from_url(url, StoreOptions(prefix=prefix)) as child:
        child.update(job_id, progress=77, message="from the child")


def test_forked_child_gets_its_own_loop_and_connections(
    client: ProgressClient, store_url: str, store_options: StoreOptions
) -> None:
    job = client.create_job(owner="alice", kind="demo")
    client.start(job.id)  # the parent's loop thread and connections now exist
    process = multiprocessing.get_context("fork").Process(
        target=_child_reports, args=(store_url, store_options.prefix, job.id)
    )
    process.start()
    process.join(timeout=30)
    assert process.exitcode == 0
    after = client.get(job.id)
    assert (after.progress, after.message) == (77.0, "from the child")


def test_from_env_uses_the_embedded_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    monkeypatch.setenv("GATEWAY_SQLITE_PATH", str(tmp_path / "env.db"))
    with ProgressClient.from_env() as client:
        job = client.create_job(owner="alice", kind="demo")
    assert (tmp_path / "env.db").exists()
    with ProgressClient.from_url(f"sqlite:///{tmp_path / 'env.db'}") as again:
        assert again.get(job.id).id == job.id
