"""A local job SIGKILLed mid-run resumes from its checkpoint in the next attempt, on both stores.

The local executor records a killed child as ``worker_lost`` and never re-runs it, so the second
attempt is started here the way every executor's worker side runs a job: another
``python -m progress_workers.local_runner`` for the same job id (what Modal does on a new
container; see ``test_modal_executor.py`` for the preempted Modal input).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

from progress_core.models import Create, Job, JobStatus
from progress_core.store import JobStore, StoreOptions
from progress_workers.runner import run_job
from progress_workers.sync import ProgressClient
from tests.support.contract import eventually
from tests.workers.test_local_executor import child_environment

PARAMS = {"steps": 60, "step_s": 0.05}  # 3 s per uninterrupted run


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
        client.create_job(owner=job.owner, kind=job.kind, params=job.params, job_id=job.id)
        return run_job(client, job.id, job.kind, {**job.params, "step_s": 0})


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
