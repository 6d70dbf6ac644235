"""Malformed input is rejected before anything is written, on every backend.

Values are checked when a change is built (``Create.build``, ``Update.build``…), ids and owners
again at the store's door; either way the job's snapshot and history stay exactly as they were.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from progress_core.errors import BadRequest, GatewayError, InvalidJobId, PayloadTooLarge
from progress_core.models import (
    MAX_JSON_BYTES,
    AttachCall,
    Cancel,
    Create,
    Fail,
    Job,
    Succeed,
    Update,
)
from progress_core.store import JobStore
from tests.support.contract import new_job, state

GOOD_ID = str(uuid.uuid4())
BAD_IDS: list[object] = [
    GOOD_ID.upper(),
    GOOD_ID.replace("-", ""),
    "",
    None,
    12345,
    f" {GOOD_ID}",
    f"{GOOD_ID}\n",
    "{" + GOOD_ID + "}",
    GOOD_ID[:-1] + "g",
    GOOD_ID[:-1],
    uuid.UUID(GOOD_ID),
]
LONE_SURROGATE = "half \ud800 a pair"


@pytest.fixture
async def job(store: JobStore) -> Job:
    """A running job with some history, the target every rejected call must leave untouched."""
    job = await new_job(store)
    await store.apply(job.id, Update.build(progress=25, stage="encode", message="clip 1"))
    return await store.get(job.id)


# -- ids ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("bad_id", BAD_IDS, ids=repr)
async def test_malformed_job_id_is_rejected_everywhere(
    store: JobStore, job: Job, bad_id: object
) -> None:
    before = await state(store, job.id)
    if bad_id is not None:  # Create.build(job_id=None) means "pick a fresh id"
        with pytest.raises(InvalidJobId):
            Create.build(owner="alice", kind="render", job_id=bad_id)
    with pytest.raises(InvalidJobId):
        await store.get(bad_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidJobId):
        await store.history(bad_id)  # type: ignore[arg-type]
    with pytest.raises(InvalidJobId):
        await store.get_many([job.id, bad_id])  # type: ignore[list-item]
    with pytest.raises(InvalidJobId):
        await store.apply(bad_id, Update.build(progress=90))  # type: ignore[arg-type]
    assert await state(store, job.id) == before


async def test_one_uuid_is_one_job(store: JobStore, job: Job) -> None:
    with pytest.raises(InvalidJobId):
        await store.create(Create.build(owner="alice", kind="render", job_id=f"{job.id}\n"))
    assert await state(store, job.id) == (job, await store.history(job.id))


def test_invalid_job_id_is_a_bad_request() -> None:
    assert issubclass(InvalidJobId, BadRequest)
    assert (InvalidJobId.code, InvalidJobId.status_code) == ("bad_request", 400)


# -- change values -----------------------------------------------------------------------------

TOO_BIG = "x" * MAX_JSON_BYTES
BUILDERS: dict[str, tuple[Callable[[], object], type[GatewayError]]] = {
    "progress-str": (lambda: Update.build(progress="50"), BadRequest),
    "progress-true": (lambda: Update.build(progress=True), BadRequest),
    "progress-false": (lambda: Update.build(progress=False), BadRequest),
    "progress-list": (lambda: Update.build(progress=[50]), BadRequest),
    "update-nothing": (lambda: Update.build(), BadRequest),
    "update-all-none": (lambda: Update.build(progress=None, stage=None, message=None), BadRequest),
    "progress-nan": (lambda: Update.build(progress=float("nan")), BadRequest),
    "progress-inf": (lambda: Update.build(progress=float("inf")), BadRequest),
    "progress--inf": (lambda: Update.build(progress=float("-inf")), BadRequest),
    "progress--1": (lambda: Update.build(progress=-1), BadRequest),
    "progress--tiny": (lambda: Update.build(progress=-1e-9), BadRequest),
    "progress-100.5": (lambda: Update.build(progress=100.5), BadRequest),
    "progress-101": (lambda: Update.build(progress=101), BadRequest),
    "stage-65": (lambda: Update.build(stage="s" * 65), BadRequest),
    "stage-int": (lambda: Update.build(stage=7), BadRequest),
    "message-1001": (lambda: Update.build(message="m" * 1001), BadRequest),
    "message-bytes": (lambda: Update.build(message=b"clip"), BadRequest),
    "stage-surrogate": (lambda: Update.build(stage=LONE_SURROGATE), BadRequest),
    "message-surrogate": (lambda: Update.build(message=LONE_SURROGATE), BadRequest),
    "result-64k+1": (lambda: Succeed.build(TOO_BIG), PayloadTooLarge),
    "result-utf8-bytes": (lambda: Succeed.build("é" * (MAX_JSON_BYTES // 2)), PayloadTooLarge),
    "result-nested-big": (lambda: Succeed.build({"a": [TOO_BIG]}), PayloadTooLarge),
    "result-set": (lambda: Succeed.build({1, 2}), BadRequest),
    "result-object": (lambda: Succeed.build(object()), BadRequest),
    "result-bytes": (lambda: Succeed.build(b"raw"), BadRequest),
    "result-nan": (lambda: Succeed.build(float("nan")), BadRequest),
    "result-nested-inf": (lambda: Succeed.build({"x": [float("inf")]}), BadRequest),
    "result-surrogate": (lambda: Succeed.build({"k": LONE_SURROGATE}), BadRequest),
    "result-surrogate-key": (lambda: Succeed.build({LONE_SURROGATE: 1}), BadRequest),
    "fail-unknown-code": (lambda: Fail.build(code="oops", message="m"), BadRequest),
    "fail-code-none": (lambda: Fail.build(code=None, message="m"), BadRequest),
    "fail-message-1001": (lambda: Fail.build(code="timeout", message="m" * 1001), BadRequest),
    "fail-message-none": (lambda: Fail.build(code="timeout", message=None), BadRequest),
    "cancel-message-1001": (lambda: Cancel.build("m" * 1001), BadRequest),
    "cancel-message-surrogate": (lambda: Cancel.build(LONE_SURROGATE), BadRequest),
    "executor-upper": (lambda: AttachCall.build(executor="Modal", call_id="fc"), BadRequest),
    "executor-empty": (lambda: AttachCall.build(executor="", call_id="fc"), BadRequest),
    "executor-long": (lambda: AttachCall.build(executor="m" * 33, call_id="fc"), BadRequest),
    "executor-newline": (lambda: AttachCall.build(executor="modal\n", call_id="fc"), BadRequest),
    "call-id-empty": (lambda: AttachCall.build(executor="modal", call_id=""), BadRequest),
    "call-id-long": (lambda: AttachCall.build(executor="modal", call_id="c" * 257), BadRequest),
    "call-id-surrogate": (
        lambda: AttachCall.build(executor="modal", call_id=LONE_SURROGATE),
        BadRequest,
    ),
}


@pytest.mark.parametrize("name", list(BUILDERS))
async def test_bad_change_value_is_rejected_and_nothing_is_written(
    store: JobStore, job: Job, name: str
) -> None:
    build, error = BUILDERS[name]
    before = await state(store, job.id)

    with pytest.raises(error) as caught:
        build()

    assert type(caught.value) is error
    assert await state(store, job.id) == before


def test_payload_too_large_is_its_own_error() -> None:
    assert not issubclass(PayloadTooLarge, BadRequest)
    assert (PayloadTooLarge.code, PayloadTooLarge.status_code) == ("payload_too_large", 413)


@pytest.mark.parametrize("value", [0, 0.0, 100, 100.0, 1e-300, 99.99999])
def test_progress_bounds_are_inclusive(value: float) -> None:
    assert Update.build(progress=value).progress == float(value)


async def test_stage_and_message_at_their_limits_are_kept(store: JobStore, job: Job) -> None:
    stage, message = "é" * 64, "🎉" * 1000
    updated = await store.apply(job.id, Update.build(stage=stage, message=message))
    assert (updated.stage, updated.message) == (stage, message)
    assert await store.get(job.id) == updated


async def test_result_of_exactly_the_limit_is_stored(store: JobStore, job: Job) -> None:
    result = "x" * (MAX_JSON_BYTES - 2)  # the quotes make it exactly MAX_JSON_BYTES of JSON
    done = await store.apply(job.id, Succeed.build(result))
    assert done.result == result
    assert (await store.get(job.id)).result == result


# -- create --------------------------------------------------------------------------------------

CREATES: dict[str, tuple[dict[str, object], type[GatewayError]]] = {
    "owner-empty": ({"owner": ""}, BadRequest),
    "owner-none": ({"owner": None}, BadRequest),
    "owner-int": ({"owner": 7}, BadRequest),
    "owner-braces": ({"owner": "al{ice}"}, BadRequest),
    "owner-open-brace": ({"owner": "al{ice"}, BadRequest),
    "owner-space": ({"owner": "alice smith"}, BadRequest),
    "owner-tab": ({"owner": "alice\t"}, BadRequest),
    "owner-newline": ({"owner": "alice\n"}, BadRequest),
    "owner-nul": ({"owner": "al\x00ice"}, BadRequest),
    "owner-long": ({"owner": "a" * 257}, BadRequest),
    "owner-surrogate": ({"owner": "al\udc00ice"}, BadRequest),
    "kind-empty": ({"kind": ""}, BadRequest),
    "kind-upper": ({"kind": "Render"}, BadRequest),
    "kind-space": ({"kind": "multi clip"}, BadRequest),
    "kind-leading-dash": ({"kind": "-render"}, BadRequest),
    "kind-long": ({"kind": "k" * 65}, BadRequest),
    "kind-none": ({"kind": None}, BadRequest),
    "kind-newline": ({"kind": "render\n"}, BadRequest),
    "params-list": ({"params": [1, 2]}, BadRequest),
    "params-str": ({"params": "{}"}, BadRequest),
    "params-nan": ({"params": {"x": float("nan")}}, BadRequest),
    "params-set": ({"params": {"x": {1}}}, BadRequest),
    "params-surrogate": ({"params": {"x": LONE_SURROGATE}}, BadRequest),
    "params-too-big": ({"params": {"x": TOO_BIG}}, PayloadTooLarge),
    "executor-bad": ({"executor": "Modal!"}, BadRequest),
    "call-id-empty": ({"call_id": ""}, BadRequest),
}


@pytest.mark.parametrize("name", list(CREATES))
async def test_bad_create_is_rejected_and_nothing_is_written(
    store: JobStore, job: Job, name: str
) -> None:
    overrides, error = CREATES[name]
    job_id = str(uuid.uuid4())
    fields: dict[str, object] = {"owner": "alice", "kind": "render", "job_id": job_id}
    fields.update(overrides)

    with pytest.raises(error) as caught:
        Create.build(**fields)

    assert type(caught.value) is error
    assert await store.get_many([job_id]) == [None]
    listed = await store.owner_jobs("alice")
    assert (listed.active, listed.recent) == ([job], [])


@pytest.mark.parametrize("owner", ["", "al{ice}", "alice smith", " ", None, 7])
async def test_owner_jobs_rejects_bad_owner(store: JobStore, owner: object) -> None:
    with pytest.raises(BadRequest):
        await store.owner_jobs(owner)  # type: ignore[arg-type]
