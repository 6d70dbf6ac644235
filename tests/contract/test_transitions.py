"""The transition rules of docs/design.md §3, held against every store backend.

Each test runs once per backend through the ``store`` fixture; the few Redis-only checks (key TTLs,
index reconciliation) narrow ``store_url`` to Redis explicitly.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
import redis.asyncio as aioredis

from progress_core.errors import JobExists, JobFinished, JobNotFound
from progress_core.models import (
    AttachCall,
    Cancel,
    Change,
    Create,
    Fail,
    Heartbeat,
    Job,
    JobStatus,
    RequestCancel,
    Start,
    Succeed,
    Update,
)
from progress_core.store import JobStore, StoreOptions, open_store
from progress_core.store.redis import RedisJobStore
from tests.support.contract import (
    clock_passes,
    eventually,
    new_job,
    state,
    timeline,
    without_timestamps,
)

REDIS_ONLY = pytest.mark.parametrize("store_url", ["redis"], indirect=True)
WIRE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


# -- create ------------------------------------------------------------------------------------


async def test_create_is_queued_at_seq_1(store: JobStore) -> None:
    job = await store.create(Create.build(owner="alice", kind="multi_clip", params={"clips": 5}))

    assert job.status == JobStatus.QUEUED
    assert (job.seq, job.progress, job.attempt) == (1, 0.0, 0)
    assert (job.owner, job.kind, job.params) == ("alice", "multi_clip", {"clips": 5})
    assert (job.stage, job.message, job.result, job.error) == (None, None, None, None)
    assert (job.executor, job.call_id, job.cancel_requested) == (None, None, False)
    assert uuid.UUID(job.id).version == 4
    assert await store.get(job.id) == job
    assert timeline(await store.history(job.id)) == [(1, "queued", 0.0, None, None)]


async def test_create_with_explicit_id_and_call(store: JobStore) -> None:
    job_id = str(uuid.uuid4())
    job = await store.create(
        Create.build(owner="alice", kind="render", job_id=job_id, executor="modal", call_id="fc-1")
    )
    assert (job.id, job.executor, job.call_id) == (job_id, "modal", "fc-1")
    assert await store.get(job_id) == job


@pytest.mark.parametrize(
    "params",
    [
        {},
        {"clips": [], "opts": {}},
        {"nested": {"a": [1, {"b": [None, True, 2.5]}]}, "ünï": "cødé 🎉", "q": '"\\/\n\t\x00'},
        {"big": 2**70, "neg": -1e-300},
    ],
    ids=["empty", "empty-containers", "nested-unicode", "numbers"],
)
async def test_params_round_trip(store: JobStore, params: dict[str, object]) -> None:
    job = await store.create(Create.build(owner="alice", kind="render", params=params))
    assert job.params == params
    assert (await store.get(job.id)).params == params


async def test_identical_create_is_idempotent(store: JobStore) -> None:
    job_id = str(uuid.uuid4())
    create = Create.build(owner="alice", kind="render", params={"n": 1}, job_id=job_id)
    first = await store.create(create)
    await store.apply(job_id, Update.build(progress=10))

    again = await store.create(
        Create.build(owner="alice", kind="render", params={"n": 1}, job_id=job_id)
    )

    assert again == await store.get(job_id)
    assert (again.seq, again.status, again.created_at) == (2, JobStatus.RUNNING, first.created_at)
    assert len(await store.history(job_id)) == 2


@pytest.mark.parametrize(
    "other",
    [
        {"owner": "bob", "kind": "render", "params": {"n": 1}},
        {"owner": "alice", "kind": "encode", "params": {"n": 1}},
        {"owner": "alice", "kind": "render", "params": {"n": 2}},
        {"owner": "alice", "kind": "render", "params": {}},
    ],
    ids=["owner", "kind", "params", "no-params"],
)
async def test_create_reusing_an_id_differently_raises_job_exists(
    store: JobStore, other: dict[str, object]
) -> None:
    job_id = str(uuid.uuid4())
    first = await store.create(
        Create.build(owner="alice", kind="render", params={"n": 1}, job_id=job_id)
    )
    before = await state(store, job_id)

    with pytest.raises(JobExists) as caught:
        await store.create(Create.build(job_id=job_id, **other))

    assert caught.value.job_id == job_id
    assert await state(store, job_id) == before
    assert before[0] == first
    # Whatever index hint the failed create left, listings still show the job once, as alice's.
    assert (await store.owner_jobs("alice")).active == [first]
    bobs = await store.owner_jobs("bob")
    assert (bobs.active, bobs.recent) == ([], [])


# -- start / update ----------------------------------------------------------------------------


async def test_start_runs_attempt_1(store: JobStore) -> None:
    job = await new_job(store)
    started = await store.apply(job.id, Start())
    assert (started.status, started.attempt, started.seq, started.progress) == (
        JobStatus.RUNNING,
        1,
        2,
        0.0,
    )
    assert await store.get(job.id) == started


async def test_second_start_is_a_new_attempt_keeping_progress(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Start())
    await store.apply(job.id, Update.build(progress=40, stage="encoding"))

    restarted = await store.apply(job.id, Start())

    assert (restarted.status, restarted.attempt, restarted.seq) == (JobStatus.RUNNING, 2, 4)
    assert (restarted.progress, restarted.stage) == (40.0, "encoding")


async def test_update_on_queued_job_makes_it_running(store: JobStore) -> None:
    job = await new_job(store)
    updated = await store.apply(job.id, Update.build(progress=5))
    assert (updated.status, updated.progress, updated.seq, updated.attempt) == (
        JobStatus.RUNNING,
        5.0,
        2,
        0,
    )


async def test_progress_never_decreases_but_every_update_counts(store: JobStore) -> None:
    job = await new_job(store)
    seen = []
    for value in [50, 20, 50, 75.5, 0, 100, 99.9]:
        updated = await store.apply(job.id, Update.build(progress=value))
        seen.append((updated.seq, updated.progress))
    assert seen == [(2, 50.0), (3, 50.0), (4, 50.0), (5, 75.5), (6, 75.5), (7, 100.0), (8, 100.0)]
    assert (await store.get(job.id)).progress == 100.0


async def test_stage_and_message_are_set_independently(store: JobStore) -> None:
    job = await new_job(store)
    steps = [
        (Update.build(stage="download"), ("download", None, 0.0)),
        (Update.build(message="clip 1 of 5"), ("download", "clip 1 of 5", 0.0)),
        (Update.build(progress=30), ("download", "clip 1 of 5", 30.0)),
        (Update.build(stage="encode", progress=60), ("encode", "clip 1 of 5", 60.0)),
        (Update.build(message="clip 2 of 5 ✓"), ("encode", "clip 2 of 5 ✓", 60.0)),
        (Update.build(stage=""), ("", "clip 2 of 5 ✓", 60.0)),
        (Update.build(message=""), ("", "", 60.0)),
    ]
    for change, expected in steps:
        updated = await store.apply(job.id, change)
        assert (updated.stage, updated.message, updated.progress) == expected
    assert await store.get(job.id) == updated


# -- terminal changes --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "result",
    [
        None,
        {"url": "https://cdn.example/out.mp4", "clips": 5},
        [],
        {},
        {"a": [], "b": {}, "c": [[], [{}]]},
        {"deep": {"er": {"est": [1, 2.5, -3, True, False, None, "x"]}}},
        {"ünïcødé": '🎉 \u2028 "quoted" \\ / \x00 \t'},
        "just a string",
        "",
        42,
        3.25,
        2**64,
        True,
    ],
    ids=lambda value: repr(value)[:30],
)
async def test_succeed_sets_progress_100_and_result(store: JobStore, result: object) -> None:
    job = await new_job(store)
    await store.apply(job.id, Update.build(progress=30))

    done = await store.apply(job.id, Succeed.build(result))

    assert (done.status, done.progress, done.seq) == (JobStatus.SUCCEEDED, 100.0, 3)
    assert done.result == result
    assert type(done.result) is type(result)
    assert done.error is None
    assert await store.get(job.id) == done


async def test_succeed_straight_from_queued(store: JobStore) -> None:
    job = await new_job(store)
    done = await store.apply(job.id, Succeed.build({"n": 0}))
    assert (done.status, done.progress, done.attempt) == (JobStatus.SUCCEEDED, 100.0, 0)


async def test_fail_sets_error(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Update.build(progress=30, stage="encode"))

    failed = await store.apply(job.id, Fail.build(code="worker_error", message="ffmpeg: 1 ✗"))

    assert failed.status == JobStatus.FAILED
    assert failed.error is not None
    assert failed.error.model_dump() == {"code": "worker_error", "message": "ffmpeg: 1 ✗"}
    assert (failed.progress, failed.stage, failed.result, failed.seq) == (30.0, "encode", None, 3)
    assert await store.get(job.id) == failed


async def test_cancel_ends_cancelled(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Start())

    cancelled = await store.apply(job.id, Cancel.build("worker stopped"))

    assert cancelled.status == JobStatus.CANCELLED
    assert cancelled.error is not None
    assert cancelled.error.model_dump() == {"code": "cancelled", "message": "worker stopped"}
    assert (cancelled.seq, cancelled.cancel_requested) == (3, False)
    default = await store.apply((await new_job(store)).id, Cancel.build())
    assert default.error is not None
    assert (default.status, default.error.code) == (JobStatus.CANCELLED, "cancelled")


async def finished(store: JobStore, how: str) -> Job:
    """A job driven to a terminal status by one of the usual paths."""
    job = await new_job(store)
    if how == "succeeded":
        await store.apply(job.id, Start())
        return await store.apply(job.id, Succeed.build({"ok": True}))
    if how == "failed":
        return await store.apply(job.id, Fail.build(code="worker_lost", message="gone"))
    if how == "cancelled":
        await store.apply(job.id, Start())
        await store.apply(job.id, RequestCancel())
        return await store.apply(job.id, Cancel.build())
    assert how == "cancelled-before-start"
    return await store.apply(job.id, RequestCancel())


TERMINAL_PATHS = ["succeeded", "failed", "cancelled", "cancelled-before-start"]
LATE_CHANGES: dict[str, Change] = {
    "start": Start(),
    "update": Update.build(progress=99, stage="late", message="late"),
    "heartbeat": Heartbeat(),
    "succeed": Succeed.build({"late": True}),
    "fail": Fail.build(code="worker_error", message="late"),
    "cancel": Cancel.build(),
    "attach_call": AttachCall.build(executor="modal", call_id="fc-late"),
}


@pytest.mark.parametrize("change_name", list(LATE_CHANGES))
@pytest.mark.parametrize("how", TERMINAL_PATHS)
async def test_terminal_job_rejects_every_change(
    store: JobStore, how: str, change_name: str
) -> None:
    job = await finished(store, how)
    assert job.terminal
    before = await state(store, job.id)

    with pytest.raises(JobFinished) as caught:
        await store.apply(job.id, LATE_CHANGES[change_name])

    assert caught.value.status == job.status.value
    assert caught.value.job_id == job.id
    assert caught.value.code == "job_finished"
    assert await state(store, job.id) == before


# -- cancel requests ---------------------------------------------------------------------------


async def test_request_cancel_of_queued_job_cancels_it(store: JobStore) -> None:
    job = await new_job(store)
    cancelled = await store.apply(job.id, RequestCancel())
    assert (cancelled.status, cancelled.cancel_requested, cancelled.seq) == (
        JobStatus.CANCELLED,
        True,
        2,
    )
    assert cancelled.error is not None
    assert cancelled.error.code == "cancelled"
    assert await store.get(job.id) == cancelled


async def test_request_cancel_of_running_job_flags_it_once(store: JobStore) -> None:
    job = await new_job(store)
    await store.apply(job.id, Update.build(progress=10))

    flagged = await store.apply(job.id, RequestCancel())
    assert (flagged.status, flagged.cancel_requested, flagged.seq) == (JobStatus.RUNNING, True, 3)
    after_first = await state(store, job.id)

    repeated = await store.apply(job.id, RequestCancel())
    assert repeated == flagged
    assert await state(store, job.id) == after_first

    # The worker may still report, then confirms the stop.
    await store.apply(job.id, Update.build(progress=20))
    cancelled = await store.apply(job.id, Cancel.build("stopped on request"))
    assert (cancelled.status, cancelled.cancel_requested, cancelled.seq) == (
        JobStatus.CANCELLED,
        True,
        5,
    )


@pytest.mark.parametrize("how", ["cancelled", "cancelled-before-start"])
async def test_request_cancel_of_cancelled_job_is_a_no_op(store: JobStore, how: str) -> None:
    job = await finished(store, how)
    before = await state(store, job.id)

    again = await store.apply(job.id, RequestCancel())

    assert again == job
    assert await state(store, job.id) == before


@pytest.mark.parametrize("how", ["succeeded", "failed"])
async def test_request_cancel_of_finished_job_raises(store: JobStore, how: str) -> None:
    job = await finished(store, how)
    before = await state(store, job.id)

    with pytest.raises(JobFinished) as caught:
        await store.apply(job.id, RequestCancel())

    assert caught.value.status == how
    assert await state(store, job.id) == before


# -- heartbeat / attach_call -------------------------------------------------------------------


@pytest.mark.parametrize("started", [True, False], ids=["running", "queued"])
async def test_heartbeat_only_refreshes_heartbeat_at(store: JobStore, started: bool) -> None:
    job = await new_job(store)
    if started:
        await store.apply(job.id, Update.build(progress=10, stage="s"))
    before, history = await state(store, job.id)

    beat = await store.apply(job.id, Heartbeat())

    assert beat.heartbeat_at >= before.heartbeat_at
    assert beat.updated_at == before.updated_at
    assert beat.seq == before.seq
    assert without_timestamps(beat) == without_timestamps(before)
    assert await state(store, job.id) == (beat, history)


async def test_attach_call_sets_executor_and_call_id(store: JobStore) -> None:
    job = await new_job(store)
    attached = await store.apply(job.id, AttachCall.build(executor="modal", call_id="fc-01JD"))
    assert (attached.executor, attached.call_id, attached.seq, attached.status) == (
        "modal",
        "fc-01JD",
        2,
        JobStatus.QUEUED,
    )
    reattached = await store.apply(job.id, AttachCall.build(executor="local", call_id="pid-7"))
    assert (reattached.executor, reattached.call_id, reattached.seq) == ("local", "pid-7", 3)
    assert await store.get(job.id) == reattached


# -- unknown jobs, bulk reads ------------------------------------------------------------------


@pytest.mark.parametrize("change", [*LATE_CHANGES.values(), RequestCancel()], ids=repr)
async def test_apply_to_unknown_job_raises_not_found(store: JobStore, change: Change) -> None:
    job_id = str(uuid.uuid4())
    with pytest.raises(JobNotFound) as caught:
        await store.apply(job_id, change)
    assert caught.value.job_id == job_id
    with pytest.raises(JobNotFound):
        await store.get(job_id)
    with pytest.raises(JobNotFound):
        await store.history(job_id)


async def test_get_many_keeps_order_and_marks_unknown_ids(store: JobStore) -> None:
    first, second = await new_job(store), await new_job(store, owner="bob")
    second = await store.apply(second.id, Start())
    unknown = str(uuid.uuid4())

    found = await store.get_many([second.id, unknown, first.id, second.id])

    assert found == [second, None, first, second]
    assert await store.get_many([]) == []


# -- seq and history ---------------------------------------------------------------------------


async def test_seq_grows_by_one_per_change(store: JobStore) -> None:
    job = await new_job(store)
    changes: list[Change] = []
    for step in range(60):
        if step % 7 == 0:
            changes.append(Heartbeat())
        elif step % 11 == 0:
            changes.append(Start())
        elif step % 13 == 0:
            changes.append(AttachCall.build(executor="modal", call_id=f"fc-{step}"))
        else:
            changes.append(Update.build(progress=step, message=f"step {step}"))
    expected = 1
    for change in changes:
        updated = await store.apply(job.id, change)
        if not isinstance(change, Heartbeat):
            expected += 1
        assert updated.seq == expected
    done = await store.apply(job.id, Succeed.build())
    assert done.seq == expected + 1
    assert [event.seq for event in await store.history(job.id)] == list(range(1, done.seq + 1))


async def test_history_follows_the_changes_in_order(store: JobStore) -> None:
    job = await new_job(store)
    steps: list[Change] = [
        Start(),
        Update.build(progress=10, stage="download"),
        Heartbeat(),
        Update.build(message="clip 1"),
        Update.build(progress=5),
        AttachCall.build(executor="modal", call_id="fc-2"),
        RequestCancel(),
        RequestCancel(),
        Update.build(progress=55.5, stage="encode", message="clip 2"),
        Cancel.build("stopped"),
    ]
    for change in steps:
        await store.apply(job.id, change)

    events = await store.history(job.id)

    assert timeline(events) == [
        (1, "queued", 0.0, None, None),
        (2, "running", 0.0, None, None),
        (3, "running", 10.0, "download", None),
        (4, "running", 10.0, "download", "clip 1"),
        (5, "running", 10.0, "download", "clip 1"),
        (6, "running", 10.0, "download", "clip 1"),
        (7, "running", 10.0, "download", "clip 1"),
        (8, "running", 55.5, "encode", "clip 2"),
        (9, "cancelled", 55.5, "encode", "clip 2"),
    ]
    moments = [event.at for event in events]
    assert moments == sorted(moments)
    assert moments[0] == job.created_at
    assert moments[-1] == (await store.get(job.id)).updated_at
    for event in events:
        assert WIRE_TIME.match(str(event.to_dict()["at"]))


async def test_concurrent_writers_lose_no_change(
    store: JobStore, store_url: str, store_options: StoreOptions
) -> None:
    job = await new_job(store)
    other = open_store(store_url, store_options)
    try:
        writers = [store, other]
        await asyncio.gather(
            *(
                writers[n % 2].apply(job.id, Update.build(progress=n, message=f"w{n}"))
                for n in range(40)
            )
        )
    finally:
        await other.aclose()

    final = await store.get(job.id)
    assert (final.seq, final.progress) == (41, 39.0)
    assert [event.seq for event in await store.history(job.id)] == list(range(1, 42))


class TestBoundedHistory:
    @pytest.fixture
    def store_options(self, store_options: StoreOptions) -> StoreOptions:
        return replace(store_options, history_maxlen=20)

    async def test_history_is_trimmed_to_about_maxlen(self, store: JobStore, backend: str) -> None:
        job = await new_job(store)
        for n in range(250):
            last = await store.apply(job.id, Update.build(progress=n / 2.5, message=str(n)))

        seqs = [event.seq for event in await store.history(job.id)]

        assert seqs[-1] == last.seq == 251
        assert seqs == list(range(seqs[0], 252)), "history must be the newest entries, contiguous"
        if backend == "sqlite":
            assert len(seqs) == 20
        else:
            # XADD MAXLEN ~ trims whole stream nodes (stream-node-max-entries, default 100), so
            # Redis keeps at least maxlen and at most one node more.
            assert 20 <= len(seqs) <= 20 + 100


# -- owners ------------------------------------------------------------------------------------


async def _create_spaced(store: JobStore, owner: str, count: int) -> list[Job]:
    """Jobs created a few milliseconds apart, so "newest first" has one right answer."""
    jobs: list[Job] = []
    for _ in range(count):
        if jobs:
            await clock_passes(jobs[-1].created_at, 0.005)
        jobs.append(await new_job(store, owner=owner))
    return jobs


async def test_owner_jobs_lists_active_and_recent_newest_first(store: JobStore) -> None:
    a1, a2, a3, a4 = await _create_spaced(store, "alice", 4)
    bob = await new_job(store, owner="bob")
    a3 = await store.apply(a3.id, Start())
    a2 = await store.apply(a2.id, Succeed.build({"n": 2}))
    await clock_passes(a2.updated_at, 0.005)
    a4 = await store.apply(a4.id, Fail.build(code="timeout", message="too slow"))

    listed = await store.owner_jobs("alice")

    assert listed.active == [a3, a1]
    assert listed.recent == [a4, a2]
    assert (await store.owner_jobs("bob")).active == [bob]
    assert (await store.owner_jobs("bob")).recent == []
    nobody = await store.owner_jobs("carol")
    assert (nobody.active, nobody.recent) == ([], [])

    limited = await store.owner_jobs("alice", limit=1)
    assert (limited.active, limited.recent) == ([a3], [a4])


async def test_owner_jobs_recent_window(store: JobStore) -> None:
    running = await store.apply((await new_job(store)).id, Start())
    done = await store.apply((await new_job(store)).id, Succeed.build())
    await clock_passes(done.updated_at, 0.3)

    narrow = await store.owner_jobs("alice", recent_s=0.1)
    wide = await store.owner_jobs("alice", recent_s=3600)

    assert (narrow.active, narrow.recent) == ([running], [])
    assert (wide.active, wide.recent) == ([running], [done])


@pytest.mark.parametrize("owner", ["alice", "ålice@example.com", "org/team:1|x", "🦊"])
async def test_owner_jobs_follow_status_changes(store: JobStore, owner: str) -> None:
    job = await new_job(store, owner=owner)
    assert (await store.owner_jobs(owner)).active == [job]
    running = await store.apply(job.id, Start())
    assert (await store.owner_jobs(owner)).active == [running]
    flagged = await store.apply(job.id, RequestCancel())
    assert (await store.owner_jobs(owner)).active == [flagged]
    cancelled = await store.apply(job.id, Cancel.build())
    listed = await store.owner_jobs(owner)
    assert (listed.active, listed.recent) == ([], [cancelled])


async def members(client: aioredis.Redis, key: str) -> set[str]:
    raws = cast(list[bytes], await client.zrange(key, 0, -1))
    return {raw.decode() for raw in raws}


@REDIS_ONLY
async def test_redis_owner_index_is_reconciled_against_jobs(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    assert isinstance(store, RedisJobStore)
    keys = store.keys
    active_key, done_key = keys.owner_active("alice"), keys.owner_done("alice")
    running = await store.apply((await new_job(store)).id, Start())
    done = await store.apply((await new_job(store)).id, Succeed.build())
    bobs = await new_job(store, owner="bob")
    missing = str(uuid.uuid4())
    now_ms = datetime.now(UTC).timestamp() * 1000
    # Hints a crash, a bug or an operator could leave behind:
    await redis_client.zadd(active_key, {missing: now_ms, bobs.id: now_ms, done.id: now_ms})
    await redis_client.zadd(done_key, {str(uuid.uuid4()): now_ms, running.id: now_ms})

    listed = await store.owner_jobs("alice")

    assert listed.active == [running]
    assert listed.recent == [done]
    assert await members(redis_client, active_key) == {running.id}
    assert await members(redis_client, done_key) == {done.id}
    assert await redis_client.zscore(done_key, done.id) == pytest.approx(
        done.updated_at.timestamp() * 1000
    )
    assert (await store.owner_jobs("bob")).active == [bobs]


@REDIS_ONLY
async def test_redis_retried_create_keeps_the_heartbeat_hint(
    store: JobStore, redis_client: aioredis.Redis
) -> None:
    """``pgw:active`` is scored by last heartbeat (docs/design.md §4): a retried create keeps it."""
    assert isinstance(store, RedisJobStore)
    create = Create.build(owner="alice", kind="render", job_id=str(uuid.uuid4()))
    job = await store.create(create)
    beat = await store.apply(job.id, Heartbeat())
    scores = [
        await redis_client.zscore(key, job.id)
        for key in (store.keys.active, store.keys.owner_active("alice"))
    ]
    await clock_passes(beat.heartbeat_at, 0.01)

    assert await store.create(create) == beat

    assert scores == [
        await redis_client.zscore(key, job.id)
        for key in (store.keys.active, store.keys.owner_active("alice"))
    ]
    assert scores[0] == beat.heartbeat_at.timestamp() * 1000


# -- timestamps and retention ------------------------------------------------------------------


async def test_timestamps_are_utc_milliseconds(store: JobStore) -> None:
    before = datetime.now(UTC)
    job = await new_job(store)
    after = datetime.now(UTC)

    assert job.created_at == job.updated_at == job.heartbeat_at
    slack = timedelta(seconds=2)
    assert before - slack <= job.created_at <= after + slack
    updated = await store.apply(job.id, Update.build(progress=1))
    assert updated.updated_at >= job.updated_at
    assert updated.created_at == job.created_at
    for moment in (job.created_at, updated.updated_at, updated.heartbeat_at):
        assert moment.utcoffset() == timedelta(0)
        assert moment.microsecond % 1000 == 0
    wire = updated.model_dump(mode="json")
    for field in ("created_at", "updated_at", "heartbeat_at"):
        assert WIRE_TIME.match(wire[field]), wire[field]
    assert Job.model_validate_json(updated.model_dump_json()) == updated


@REDIS_ONLY
async def test_redis_terminal_job_keys_expire_after_retention(
    store: JobStore, redis_client: aioredis.Redis, store_options: StoreOptions
) -> None:
    assert isinstance(store, RedisJobStore)
    running = await store.apply((await new_job(store)).id, Start())
    done = await finished(store, "failed")
    retention = store_options.retention_s

    for key in (store.keys.job(running.id), store.keys.history(running.id)):
        assert await redis_client.ttl(key) == -1, key
    for key in (store.keys.job(done.id), store.keys.history(done.id)):
        assert retention - 5 <= await redis_client.ttl(key) <= retention, key


class TestRetention:
    @pytest.fixture
    def store_options(self, store_options: StoreOptions) -> StoreOptions:
        return replace(store_options, retention_s=1)

    async def test_finished_job_expires_after_retention(self, store: JobStore) -> None:
        running = await store.apply((await new_job(store)).id, Start())
        done = await finished(store, "succeeded")

        async def expired() -> bool:
            try:
                await store.get(done.id)
            except JobNotFound:
                return True
            return False

        await eventually(expired, 10.0, "the finished job to expire")

        with pytest.raises(JobNotFound):
            await store.history(done.id)
        with pytest.raises(JobNotFound):
            await store.apply(done.id, Heartbeat())
        assert await store.get_many([done.id, running.id]) == [None, running]
        listed = await store.owner_jobs("alice")
        assert (listed.active, listed.recent) == ([running], [])
        assert await store.get(running.id) == running

        # An expired job's id is free again.
        reborn = await store.create(Create.build(owner="bob", kind="render", job_id=done.id))
        assert (reborn.seq, reborn.owner) == (1, "bob")
        assert timeline(await store.history(done.id)) == [(1, "queued", 0.0, None, None)]
        assert (await store.owner_jobs("bob")).active == [reborn]
        listed = await store.owner_jobs("alice")
        assert (listed.active, listed.recent) == ([running], [])
