"""``stale_jobs``, the reaper's input, on every backend: a scan that pages with a cursor reads
every stale job once, in (heartbeat, id) order, however many share a heartbeat."""

from __future__ import annotations

import time

from progress_core.models import Fail, Heartbeat, Job, Start, Update
from progress_core.store import JobStore, StoreOptions
from progress_core.store.base import StaleCursor
from tests.support.backdate import backdate
from tests.support.contract import new_job


async def scan(store: JobStore, before_ms: float, limit: int) -> list[list[Job]]:
    """Follow the cursor from the start to the end of the stale set; one list per page."""
    pages: list[list[Job]] = []
    cursor: StaleCursor | None = None
    while True:
        page = await store.stale_jobs(before_ms, limit, after=cursor)
        assert len(page.jobs) <= limit
        pages.append(page.jobs)
        if page.next is None:
            return pages
        assert cursor is None or page.next > cursor  # the cursor only moves forward
        cursor = page.next


async def running_jobs(store: JobStore, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        job = await new_job(store)
        await store.apply(job.id, Start())
        ids.append(job.id)
    return ids


async def test_a_scan_reads_every_stale_job_once_in_heartbeat_order_across_ties(
    store: JobStore, store_url: str, store_options: StoreOptions
) -> None:
    older = await running_jobs(store, 10)  # ten share one heartbeat: the page splits the tie
    newer = await running_jobs(store, 13)
    fresh = await running_jobs(store, 2)
    finished = await running_jobs(store, 1)
    await backdate(store_url, store_options, older, heartbeat_s_ago=100)
    await backdate(store_url, store_options, [*newer, *finished], heartbeat_s_ago=50)
    await store.apply(finished[0], Fail.build(code="worker_error", message="done"))

    pages = await scan(store, (time.time() - 10) * 1000, limit=4)

    read = [job.id for page in pages for job in page]
    assert len(read) == len(set(read)) == len(older) + len(newer)
    assert not set(read) & {*fresh, *finished}
    assert sorted(read[: len(older)]) == read[: len(older)] == sorted(older)
    assert sorted(read[len(older) :]) == read[len(older) :] == sorted(newer)
    assert len(pages) == -(-len(read) // 4)


async def test_a_sign_of_life_takes_a_job_out_of_the_scan_even_mid_scan(
    store: JobStore, store_url: str, store_options: StoreOptions
) -> None:
    ids = await running_jobs(store, 6)
    await backdate(store_url, store_options, ids, heartbeat_s_ago=100)
    before_ms = (time.time() - 10) * 1000
    first = await store.stale_jobs(before_ms, 2)
    assert first.next is not None
    rest = sorted(set(ids) - {job.id for job in first.jobs})
    # An update refreshes only the job itself in Redis (the index hint lags): still not stale.
    await store.apply(rest[0], Update.build(progress=10))
    await store.apply(rest[1], Heartbeat())
    tail = await scan_from(store, before_ms, first.next)
    assert sorted(job.id for job in tail) == rest[2:]
    # The next scan starts over and no longer meets the jobs that showed life.
    again = [job.id for page in await scan(store, before_ms, 2) for job in page]
    assert sorted(again) == sorted(set(ids) - set(rest[:2]))


async def scan_from(store: JobStore, before_ms: float, cursor: StaleCursor | None) -> list[Job]:
    jobs: list[Job] = []
    while cursor is not None:
        page = await store.stale_jobs(before_ms, 2, after=cursor)
        jobs.extend(page.jobs)
        cursor = page.next
    return jobs
