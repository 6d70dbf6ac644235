"""The transition rules of docs/design.md §3, as one pure function.

The embedded store applies changes with this function inside a transaction; the Redis store runs
the same rules in ``store/lua/apply.lua``. The shared contract suite and a model-based property
test hold the two to each other.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from enum import Enum

from progress_core.errors import Conflict, JobFinished
from progress_core.models import (
    AttachCall,
    Cancel,
    Change,
    Checkpoint,
    Create,
    Fail,
    Heartbeat,
    Job,
    JobError,
    JobStatus,
    RequestCancel,
    Start,
    Succeed,
    Update,
)


class Effect(Enum):
    """What a store must do with the outcome of a change."""

    PUBLISH = "publish"  # seq + 1: write, append history, publish
    WRITE = "write"  # heartbeat, checkpoint: write the snapshot only
    NONE = "none"  # idempotent repeat: nothing to write


@dataclass(frozen=True, slots=True)
class Outcome:
    job: Job
    effect: Effect


def create_job(change: Create, now: datetime) -> Job:
    return Job(
        id=change.job_id,
        owner=change.owner,
        kind=change.kind,
        status=JobStatus.QUEUED,
        progress=0.0,
        stage=None,
        message=None,
        seq=1,
        attempt=0,
        created_at=now,
        updated_at=now,
        heartbeat_at=now,
        executor=change.executor,
        call_id=change.call_id,
        params=json.loads(change.params_json),
        result=None,
        error=None,
        cancel_requested=False,
    )


def apply_change(job: Job, change: Change, now: datetime) -> Outcome:
    """Apply one change; raise ``JobFinished`` (nothing changed) when the job is terminal."""
    if isinstance(change, RequestCancel):
        return _request_cancel(job, now)
    if job.terminal:
        raise JobFinished(
            f"job {job.id} is already {job.status.value}; "
            f"{type(change).__name__.lower()} was rejected",
            job_id=job.id,
            status=job.status.value,
        )
    if isinstance(change, Checkpoint) and job.status is not JobStatus.RUNNING:
        raise Conflict(
            f"job {job.id} is {job.status.value}; only a started job can store a checkpoint",
            job_id=job.id,
        )
    if isinstance(change, Heartbeat | Checkpoint):
        # The store keeps a checkpoint beside the job; the snapshot only records the liveness.
        return Outcome(job.model_copy(update={"heartbeat_at": now}), Effect.WRITE)
    fields: dict[str, object]
    if isinstance(change, Start):
        fields = {"status": JobStatus.RUNNING, "attempt": job.attempt + 1, "heartbeat_at": now}
    elif isinstance(change, Update):
        fields = {"status": JobStatus.RUNNING, "heartbeat_at": now}
        if change.progress is not None:
            fields["progress"] = max(job.progress, change.progress)
        if change.stage is not None:
            fields["stage"] = change.stage
        if change.message is not None:
            fields["message"] = change.message
    elif isinstance(change, Succeed):
        fields = {
            "status": JobStatus.SUCCEEDED,
            "progress": 100.0,
            "result": json.loads(change.result_json),
            "heartbeat_at": now,
        }
    elif isinstance(change, Fail):
        fields = {
            "status": JobStatus.FAILED,
            "error": JobError.model_validate({"code": change.code, "message": change.message}),
            "heartbeat_at": now,
        }
    elif isinstance(change, Cancel):
        fields = _cancelled(change.message)
    elif isinstance(change, AttachCall):
        fields = {"executor": change.executor, "call_id": change.call_id}
    else:  # pragma: no cover - Change is a closed union
        raise TypeError(f"unknown change {change!r}")
    return _published(job, fields, now)


def _request_cancel(job: Job, now: datetime) -> Outcome:
    if job.status is JobStatus.CANCELLED or (job.cancel_requested and not job.terminal):
        return Outcome(job, Effect.NONE)
    if job.terminal:
        raise JobFinished(
            f"job {job.id} is already {job.status.value}; it can no longer be cancelled",
            job_id=job.id,
            status=job.status.value,
        )
    fields: dict[str, object] = {"cancel_requested": True}
    if job.status is JobStatus.QUEUED:
        fields.update(_cancelled("cancelled before it started"))
    return _published(job, fields, now)


def _cancelled(message: str) -> dict[str, object]:
    return {"status": JobStatus.CANCELLED, "error": JobError(code="cancelled", message=message)}


def _published(job: Job, fields: dict[str, object], now: datetime) -> Outcome:
    fields["seq"] = job.seq + 1
    fields["updated_at"] = now
    return Outcome(job.model_copy(update=fields), Effect.PUBLISH)
