"""Functions run in child processes by the concurrency tests (spawn needs importable targets)."""

from __future__ import annotations

from multiprocessing.synchronize import Barrier

from progress_core.store import StoreOptions
from progress_workers import JobFinished, ProgressClient


def hammer_updates(url: str, prefix: str, job_id: str, worker: int, count: int) -> int:
    """Apply ``count`` updates; returns how many the store accepted."""
    accepted = 0
    with ProgressClient.from_url(url, StoreOptions(prefix=prefix)) as client:
        for step in range(count):
            client.update(
                job_id, progress=step * 100 / count, message=f"worker {worker} step {step}"
            )
            accepted += 1
    return accepted


def race_to_finish(
    url: str, prefix: str, job_ids: list[str], barrier: Barrier, succeed: bool
) -> list[str]:
    """For each job, wait for the rival at the barrier, then try to finish it; report outcomes."""
    outcomes = []
    with ProgressClient.from_url(url, StoreOptions(prefix=prefix)) as client:
        for job_id in job_ids:
            client.get(job_id)  # connect and warm up before the race starts
        for job_id in job_ids:
            barrier.wait(timeout=30)
            try:
                if succeed:
                    client.succeed(job_id, result={"winner": "succeed"})
                else:
                    client.fail(job_id, message="lost the race on purpose")
            except JobFinished:
                outcomes.append("lost")
            else:
                outcomes.append("won")
    return outcomes
