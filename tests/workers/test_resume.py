"""A local job SIGKILLed mid-run resumes from its checkpoint in the next attempt, on both stores.

The local executor records a killed child as ``worker_lost`` and never re-runs it, so the second
attempt is started here the way every executor's worker side runs a job: another
``python -m progress_workers.local_runner`` for the same job id (what Modal does on a new
container; see ``test_modal_executor.py`` for the preempted Modal input).
"""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from progress_core.errors import JobFinished, PayloadTooLarge, StoreUnavailable
from progress_core.models import MAX_CHECKPOINT_BYTES, Create, Job, JobStatus
from progress_core.store import JobStore, StoreOptions
from progress_workers.runner import run_job
from progress_workers.sync import ProgressClient
from tests.support.contract import eventually
from tests.support.redis_server import RedisServer
from tests.workers.test_local_executor import child_environment

PARAMS: dict[str, object] = {"steps": 60, "step_s": 0.05}  # 3 s per uninterrupted run


def start_runner(
    job: Job, store_url: str, options: StoreOptions, slots_dir: Path
) -> subprocess.Popen[bytes]:
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("GATEWAY_", "PGW_")) and name != "REDIS_URL"
    }
    environment.update(child_environment(store_url, options))
    environment.update(
        {
            "PGW_JOB_ID": job.id,
            "PGW_KIND": job.kind,
            "PGW_PARAMS": json.dumps(job.params),
            "PGW_SLOTS_DIR": str(slots_dir),
            "PGW_SLOTS": "2",
            "PGW_HEARTBEAT_S": "0.2",
        }
    )
    return subprocess.Popen(
        [sys.executable, "-m", "progress_workers.local_runner"],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def uninterrupted_result(job: Job, directory: Path) -> object:
    """The same job run once without interruption, in a store of its own."""
    with ProgressClient.from_url(f"sqlite:///{directory / 'reference.db'}") as client:
        client.create_job(owner=job.owner, kind=job.kind, params=PARAMS, job_id=job.id)
        return run_job(client, job.id, job.kind, {**PARAMS, "step_s": 0})


async def test_killed_local_job_resumes_from_its_checkpoint(
    store: JobStore, store_url: str, store_options: StoreOptions, tmp_path: Path
) -> None:
    job = await store.create(Create.build(owner="alice", kind="demo", params=PARAMS))
    first = start_runner(job, store_url, store_options, tmp_path / "slots")
    try:

        async def checkpointed() -> bool:
            data = await store.last_checkpoint(job.id)
            return isinstance(data, dict) and int(str(data["step"])) >= 10

        await eventually(checkpointed, 30, "the first attempt to checkpoint step 10")
    finally:
        os.kill(first.pid, signal.SIGKILL)
        first.wait(timeout=10)
    killed = await store.get(job.id)
    assert (killed.status, killed.attempt) == (JobStatus.RUNNING, 1)
    checkpoint = await store.last_checkpoint(job.id)
    assert isinstance(checkpoint, dict)
    resumed_after = int(str(checkpoint["step"]))

    second = start_runner(job, store_url, store_options, tmp_path / "slots")
    try:

        async def terminal() -> bool:
            return (await store.get(job.id)).terminal

        await eventually(terminal, 60, "the second attempt to finish")
    finally:
        second.wait(timeout=30)
    done = await store.get(job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempt == 2
    history = await store.history(job.id)
    progress = [event.progress for event in history]
    assert progress == sorted(progress) and progress[-1] == 100.0  # the bar never went back
    # Attempt 2 went on after the checkpointed step: no step at or before it ran again.
    messages = [event.message or "" for event in history]
    resume = messages.index(f"attempt 2 resumes after step {resumed_after} of 60")
    later_steps = [
        int(found.group(1))
        for message in messages[resume + 1 :]
        if (found := re.match(r"step (\d+) of 60", message))
    ]
    assert later_steps and min(later_steps) > resumed_after
    # Resuming gives the very result of an uninterrupted run (totals and digest carried over).
    assert done.result == uninterrupted_result(job, tmp_path)


# -- the reporter's side -------------------------------------------------------------------------


def test_reporter_reads_the_last_checkpoint_when_it_starts(
    store_url: str, store_options: StoreOptions
) -> None:
    with ProgressClient.from_url(store_url, store_options) as client:
        job = client.create_job(owner="alice", kind="demo")
        with client.reporter(job.id) as first:
            assert first.last_checkpoint is None  # a first attempt
            first.checkpoint({"clip": 3})
            assert first.last_checkpoint == {"clip": 3}
            client.start(job.id)  # another container took the job over: attempt 2 begins
            with client.reporter(job.id) as second:
                assert second.job is not None and second.job.attempt == 3
                assert second.last_checkpoint == {"clip": 3}
                second.succeed()
        assert client.get(job.id).status is JobStatus.SUCCEEDED


def test_reporter_checkpoint_is_bounded_and_refused_once_the_job_ended(
    store_url: str, store_options: StoreOptions
) -> None:
    with ProgressClient.from_url(store_url, store_options) as client:
        job = client.create_job(owner="alice", kind="demo")
        reporter = client.reporter(job.id).__enter__()
        with pytest.raises(PayloadTooLarge):
            reporter.checkpoint("x" * MAX_CHECKPOINT_BYTES)
        assert client.last_checkpoint(job.id) is None
        client.request_cancel(job.id)
        client.cancel(job.id, "stopped by its owner")
        with pytest.raises(JobFinished):
            reporter.checkpoint({"clip": 4})
        reporter.__exit__(None, None, None)  # the cancellation stands
        assert client.last_checkpoint(job.id) is None
        assert client.get(job.id).status is JobStatus.CANCELLED


def test_a_checkpoint_lost_to_an_outage_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        with ProgressClient.from_url(server.url) as client:
            job = client.create_job(owner="alice", kind="demo")
            reporter = client.reporter(job.id, final_retry_s=0).__enter__()
            reporter.checkpoint({"clip": 1})
            server.kill()
            with caplog.at_level(logging.WARNING, logger="progress_workers.reporter"):
                reporter.checkpoint({"clip": 2})  # the work goes on
            assert reporter.last_checkpoint == {"clip": 1}
            assert any("checkpoint of job" in r.getMessage() for r in caplog.records)
            with pytest.raises(StoreUnavailable):
                reporter.__exit__(None, None, None)
    finally:
        server.stop()
