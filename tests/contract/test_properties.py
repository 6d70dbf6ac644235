"""Model-based test: every backend behaves like ``progress_core.transitions.apply_change``.

Hypothesis draws a sequence of changes; each is applied to a fresh job in the store and to a pure
model (the reference transition function). After every step the store's snapshot must equal the
model's on every field but the timestamps, and ``JobFinished`` must be raised exactly when the
model raises it. The store is opened inside the example's own event loop (``asyncio.run``):
redis.asyncio clients are bound to the loop that created them.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from progress_core.errors import Conflict, JobFinished
from progress_core.models import (
    ERROR_CODES,
    MAX_MESSAGE_CHARS,
    MAX_STAGE_CHARS,
    AttachCall,
    Cancel,
    Change,
    Checkpoint,
    Create,
    Fail,
    Heartbeat,
    Job,
    RequestCancel,
    Start,
    Succeed,
    Update,
)
from progress_core.store import JobStore, StoreOptions, open_store
from progress_core.transitions import Effect, Outcome, apply_change, create_job
from tests.support.contract import timeline, without_timestamps

# Text the validators accept: any code point but lone surrogates (st.text() never draws those).
texts = st.text(max_size=12)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | texts
)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
    max_leaves=8,
)
progress_values = st.floats(min_value=0, max_value=100) | st.integers(min_value=0, max_value=100)


@st.composite
def updates(draw: st.DrawFn) -> Update:
    fields = draw(
        st.fixed_dictionaries(
            {},
            optional={
                "progress": progress_values,
                "stage": st.text(max_size=MAX_STAGE_CHARS) | st.sampled_from(["", "encode"]),
                "message": st.text(max_size=40) | st.just("m" * MAX_MESSAGE_CHARS),
            },
        ).filter(bool)
    )
    return Update.build(**fields)


changes: st.SearchStrategy[Change] = st.one_of(
    st.just(Start()),
    updates(),
    updates(),
    updates(),
    st.just(Heartbeat()),
    st.builds(Checkpoint.build, json_values),
    st.builds(Succeed.build, json_values),
    st.builds(
        lambda code, message: Fail.build(code=code, message=message),
        st.sampled_from(sorted(ERROR_CODES)),
        texts,
    ),
    st.just(RequestCancel()),
    st.just(RequestCancel()),
    st.builds(Cancel.build, texts),
    st.builds(
        lambda executor, call_id: AttachCall.build(executor=executor, call_id=call_id),
        st.from_regex(r"\A[a-z0-9][a-z0-9_-]{0,31}\Z"),
        st.text(min_size=1, max_size=20),
    ),
)


async def run_example(url: str, options: StoreOptions, steps: list[Change]) -> None:
    store = open_store(url, options)
    try:
        create = Create.build(owner="prop", kind="model", params={"n": len(steps)})
        stored = await store.create(create)
        model = create_job(create, datetime.now(UTC))
        assert without_timestamps(stored) == without_timestamps(model)
        model_history = [model]
        model_checkpoint: object = None
        for change in steps:
            before = stored
            outcome, expected = model_step(model, change)
            stored, rejected = await store_step(store, stored, change)
            assert rejected == expected, f"{change!r} on a {model.status} job"
            if outcome is None:
                assert await store.get(stored.id) == before
                continue
            model = outcome.job
            if isinstance(change, Checkpoint):
                model_checkpoint = json.loads(change.data_json)
            assert await store.last_checkpoint(stored.id) == model_checkpoint
            if outcome.effect is Effect.PUBLISH:
                model_history.append(model)
            assert without_timestamps(stored) == without_timestamps(model), change
            assert await store.get(stored.id) == stored
            check_step(before, stored, outcome.effect)
        assert timeline(await store.history(stored.id)) == [
            (job.seq, job.status.value, job.progress, job.stage, job.message)
            for job in model_history
        ]
    finally:
        await store.aclose()


def model_step(model: Job, change: Change) -> tuple[Outcome | None, str | None]:
    """The reference outcome, or the status ``JobFinished`` reports (``conflict`` for a
    checkpoint before the job started)."""
    try:
        return apply_change(model, change, datetime.now(UTC)), None
    except Conflict as exc:
        return None, rejection(exc)


async def store_step(store: JobStore, job: Job, change: Change) -> tuple[Job, str | None]:
    """The store's new snapshot, or the unchanged one and the status ``JobFinished`` reports."""
    try:
        return await store.apply(job.id, change), None
    except Conflict as exc:
        return job, rejection(exc)


def rejection(exc: Conflict) -> str:
    return exc.status if isinstance(exc, JobFinished) else "conflict"


def check_step(before: Job, after: Job, effect: Effect) -> None:
    """Invariants of docs/design.md §3 that hold whatever the model says."""
    assert after.seq == before.seq + (1 if effect is Effect.PUBLISH else 0)
    assert after.progress >= before.progress
    assert not before.terminal or after == before, "nothing leaves a terminal status"
    assert after.created_at == before.created_at
    assert after.heartbeat_at >= before.heartbeat_at
    if effect is Effect.PUBLISH:
        assert after.updated_at >= before.updated_at
    else:
        assert after.updated_at == before.updated_at


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(steps=st.lists(changes, max_size=12))
def test_store_matches_the_transition_model(
    store_url: str, store_options: StoreOptions, steps: list[Change]
) -> None:
    asyncio.run(run_example(store_url, store_options, steps))
