"""``JobStore.seqs``: the resync's cheap probe, on both backends."""

from __future__ import annotations

import uuid

import pytest
import redis.asyncio as aioredis

from progress_core.models import Start, Update
from progress_core.store import JobStore
from tests.support.contract import new_job


async def test_seqs_in_order_with_none_for_missing_jobs(store: JobStore) -> None:
    first, second = await new_job(store), await new_job(store)
    await store.apply(second.id, Start())
    await store.apply(second.id, Update.build(progress=10))
    missing = str(uuid.uuid4())
    assert await store.seqs([second.id, missing, first.id]) == [3, None, 1]
    assert await store.seqs([]) == []


async def test_seqs_of_more_jobs_than_one_batch(store: JobStore) -> None:
    jobs = [await new_job(store) for _ in range(1205)]
    assert await store.seqs([job.id for job in jobs]) == [1] * len(jobs)


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)
async def test_seqs_survive_a_script_cache_flush(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    job = await new_job(store)
    assert await store.seqs([job.id]) == [1]
    await redis_client.script_flush()
    assert await store.seqs([job.id]) == [1]
