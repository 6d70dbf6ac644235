"""Nothing committed is lost when the store process is killed."""

from __future__ import annotations

import asyncio
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

from progress_core.store import StoreOptions, open_store
from progress_workers import JobStatus, ProgressClient
from tests.support.redis_server import RedisServer


async def _history_seqs(url: str, job_id: str) -> list[int]:
    store = open_store(url)
    try:
        return [event.seq for event in await store.history(job_id)]
    finally:
        await store.aclose()


def test_redis_with_aof_keeps_every_job_and_final_state_through_sigkill(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    options = StoreOptions(prefix="durable")
    try:
        with ProgressClient.from_url(server.url, options) as client:
            jobs = [
                client.create_job(owner="alice", kind="demo", params={"n": n}) for n in range(50)
            ]
            expected = {}
            for n, job in enumerate(jobs):
                client.start(job.id)
                client.update(job.id, progress=n, stage="work", message=f"job {n}")
                if n % 2 == 0:
                    expected[job.id] = client.succeed(job.id, result={"n": n})
                else:
                    expected[job.id] = client.get(job.id)
        server.kill()
        server.start()  # same directory: replays the append-only file
        with ProgressClient.from_url(server.url, options) as client:
            for job_id, before in expected.items():
                assert client.get(job_id) == before
            terminal = [job for job in expected.values() if job.status is JobStatus.SUCCEEDED]
            assert len(terminal) == 25
    finally:
        server.stop()


WRITER = textwrap.dedent(
    """
    import sys
    from progress_workers import ProgressClient
    client = ProgressClient.from_url(sys.argv[1])
    job = client.create_job(owner="alice", kind="demo")
    print("job", job.id, flush=True)
    client.start(job.id)
    step = 0
    while True:
        step += 1
        seq = client.update(job.id, progress=min(step / 100, 100), message=f"step {step}").seq
        print("committed", seq, flush=True)  # printed only after the transaction committed
    """
)


def test_sqlite_writer_killed_mid_run_loses_no_committed_change(tmp_path: Path) -> None:
    database = tmp_path / "jobs.db"
    url = f"sqlite:///{database}"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, url],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert writer.stdout is not None
    job_id = writer.stdout.readline().split()[1]
    last_committed = 0
    while last_committed < 300:
        line = writer.stdout.readline()
        assert line, "the writer died before it was killed"
        last_committed = int(line.split()[1])
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait(timeout=10)
    writer.stdout.close()

    with sqlite3.connect(database) as check:
        assert check.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    with ProgressClient.from_url(url) as client:
        job = client.get(job_id)
        assert job.seq >= last_committed
        history = asyncio.run(_history_seqs(url, job_id))
        assert history[-1] == job.seq
        # The store is writable again right away: no lock left behind by the dead writer.
        assert client.update(job_id, message="after the crash").seq == job.seq + 1
