"""Several processes writing one job: no lost update, exactly one terminal winner."""

from __future__ import annotations

import multiprocessing
from concurrent.futures import ProcessPoolExecutor

from progress_core.store import StoreOptions
from progress_workers import JobStatus, ProgressClient
from tests.support.worker_processes import hammer_updates, race_to_finish

PROCESSES = 4
UPDATES_EACH = 200


def test_four_processes_updating_one_job_lose_nothing(
    store_url: str, store_options: StoreOptions
) -> None:
    with ProgressClient.from_url(store_url, store_options) as client:
        job = client.create_job(owner="alice", kind="demo")
        start_seq = client.start(job.id).seq
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(PROCESSES, mp_context=context) as pool:
            futures = [
                pool.submit(
                    hammer_updates, store_url, store_options.prefix, job.id, n, UPDATES_EACH
                )
                for n in range(PROCESSES)
            ]
            accepted = sum(future.result(timeout=120) for future in futures)
        assert accepted == PROCESSES * UPDATES_EACH
        after = client.get(job.id)
        assert after.seq - start_seq == PROCESSES * UPDATES_EACH
        assert after.status is JobStatus.RUNNING
        # Progress never went backwards even though the writers interleaved.
        assert after.progress == max(step * 100 / UPDATES_EACH for step in range(UPDATES_EACH))


def test_racing_succeed_and_fail_exactly_one_wins(
    store_url: str, store_options: StoreOptions
) -> None:
    rounds = 25
    with ProgressClient.from_url(store_url, store_options) as client:
        jobs = [client.create_job(owner="alice", kind="demo") for _ in range(rounds)]
        for job in jobs:
            client.start(job.id)
        ids = [job.id for job in jobs]
        context = multiprocessing.get_context("spawn")
        with context.Manager() as manager, ProcessPoolExecutor(2, mp_context=context) as pool:
            barrier = manager.Barrier(2)
            prefix = store_options.prefix
            winners = pool.submit(race_to_finish, store_url, prefix, ids, barrier, True)
            losers = pool.submit(race_to_finish, store_url, prefix, ids, barrier, False)
            by_succeed, by_fail = winners.result(timeout=120), losers.result(timeout=120)
        for job_id, succeeded, failed in zip(ids, by_succeed, by_fail, strict=True):
            assert sorted([succeeded, failed]) == ["lost", "won"]
            final = client.get(job_id)
            expected = JobStatus.SUCCEEDED if succeeded == "won" else JobStatus.FAILED
            assert final.status is expected
            # The loser changed nothing: the winner's change is the last one.
            assert final.seq == 3
