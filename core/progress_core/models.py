"""The job snapshot (docs/design.md §3) and the changes that can be applied to it.

A snapshot is state, not an event: each change yields a complete new snapshot with ``seq`` + 1,
so any reader can recover by asking for the latest snapshot above the ``seq`` it has.
Changes validate their own input on construction, so a bad value is rejected before any store
is touched.
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Literal, TypeAlias

from pydantic import BaseModel, ConfigDict, JsonValue, field_serializer

from progress_core.errors import BadRequest, InvalidJobId, PayloadTooLarge

MAX_STAGE_CHARS = 64
MAX_MESSAGE_CHARS = 1000
MAX_JSON_BYTES = 64 * 1024
# A checkpoint is the worker's resume point (a step number, a cursor), rewritten every few steps:
# small on purpose, so writing it costs no more than a progress update.
MAX_CHECKPOINT_BYTES = 16 * 1024
MAX_OWNER_CHARS = 256
MAX_KIND_CHARS = 64
MAX_EXECUTOR_CHARS = 32
MAX_CALL_ID_CHARS = 256


class JobStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})

ErrorCode: TypeAlias = Literal["worker_error", "worker_lost", "cancelled", "timeout", "spawn_error"]
ERROR_CODES: frozenset[str] = frozenset(ErrorCode.__args__)  # type: ignore[attr-defined]


def format_time(moment: datetime) -> str:
    """ISO 8601, UTC, millisecond precision, ``Z`` suffix: the one timestamp form on the wire."""
    moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"


def time_from_ms(epoch_ms: int) -> datetime:
    return datetime.fromtimestamp(epoch_ms / 1000, tz=UTC)


class JobError(BaseModel):
    model_config = ConfigDict(frozen=True)

    code: ErrorCode
    message: str


class Job(BaseModel):
    """One job's complete snapshot, as stored, published and sent to clients."""

    model_config = ConfigDict(frozen=True)

    id: str
    owner: str
    kind: str
    status: JobStatus
    progress: float
    stage: str | None
    message: str | None
    seq: int
    attempt: int
    created_at: datetime
    updated_at: datetime
    heartbeat_at: datetime
    executor: str | None
    call_id: str | None
    params: dict[str, JsonValue]
    result: JsonValue
    error: JobError | None
    cancel_requested: bool

    @field_serializer("created_at", "updated_at", "heartbeat_at")
    def _serialize_time(self, moment: datetime) -> str:
        return format_time(moment)

    @property
    def terminal(self) -> bool:
        return self.status.terminal


@dataclass(frozen=True, slots=True)
class HistoryEvent:
    """One entry of a job's bounded timeline (``GET /exports/{id}/history``)."""

    seq: int
    at: datetime
    status: JobStatus
    progress: float
    stage: str | None
    message: str | None

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": format_time(self.at),
            "status": self.status.value,
            "progress": self.progress,
            "stage": self.stage,
            "message": self.message,
        }


@dataclass(frozen=True, slots=True)
class OwnerJobs:
    """An owner's non-terminal jobs and recently finished ones, newest first."""

    active: list[Job]
    recent: list[Job]


# -- validation helpers ------------------------------------------------------------------------

_UUID_RE = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_KIND_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")
_EXECUTOR_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*$")
_OWNER_FORBIDDEN = re.compile(r"[\s{}\x00-\x1f\x7f]")


def new_job_id() -> str:
    return str(uuid.uuid4())


def check_job_id(value: object) -> str:
    """Accept only the canonical lowercase 36-char UUID form, so one job has exactly one key."""
    if not isinstance(value, str) or not _UUID_RE.fullmatch(value):
        raise InvalidJobId(f"job id must be a lowercase UUID, got {_preview(value)}")
    return value


def check_owner(value: object) -> str:
    # Braces would break the Redis hash tag of the owner's index keys.
    if not isinstance(value, str) or not value:
        raise BadRequest(f"owner must be a non-empty string, got {_preview(value)}")
    if len(value) > MAX_OWNER_CHARS or _OWNER_FORBIDDEN.search(value):
        raise BadRequest(
            f"owner must be at most {MAX_OWNER_CHARS} characters without whitespace, "
            f"braces or control characters, got {_preview(value)}"
        )
    _check_utf8(value, "owner")
    return value


def check_kind(value: object) -> str:
    if not isinstance(value, str) or len(value) > MAX_KIND_CHARS or not _KIND_RE.fullmatch(value):
        raise BadRequest(
            f"kind must match [a-z0-9][a-z0-9_.-]* (at most {MAX_KIND_CHARS} characters), "
            f"got {_preview(value)}"
        )
    return value


def check_executor(value: object) -> str:
    if (
        not isinstance(value, str)
        or len(value) > MAX_EXECUTOR_CHARS
        or not _EXECUTOR_RE.fullmatch(value)
    ):
        raise BadRequest(f"executor must match [a-z0-9][a-z0-9_-]*, got {_preview(value)}")
    return value


def check_call_id(value: object) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_CALL_ID_CHARS:
        raise BadRequest(f"call_id must be 1-{MAX_CALL_ID_CHARS} characters, got {_preview(value)}")
    _check_utf8(value, "call_id")
    return value


def check_progress(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BadRequest(f"progress must be a number, got {_preview(value)}")
    number = float(value)
    if math.isnan(number) or not 0.0 <= number <= 100.0:
        raise BadRequest(f"progress must be within [0, 100], got {value!r}")
    return number


def check_text(value: object, field: str, limit: int) -> str:
    if not isinstance(value, str):
        raise BadRequest(f"{field} must be a string, got {_preview(value)}")
    if len(value) > limit:
        raise BadRequest(f"{field} is {len(value)} characters, the limit is {limit}")
    _check_utf8(value, field)
    return value


def encode_json(value: object, field: str, limit: int = MAX_JSON_BYTES) -> str:
    """Compact JSON of a user value, size-checked: what the store keeps verbatim."""
    try:
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise BadRequest(
            f"{field} must be JSON-serializable without NaN or infinity: {exc}"
        ) from exc
    size = len(_check_utf8(text, field))
    if size > limit:
        raise PayloadTooLarge(f"{field} is {size} bytes of JSON, the limit is {limit}")
    return text


def _check_utf8(value: str, field: str) -> bytes:
    try:
        return value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise BadRequest(f"{field} is not valid UTF-8 text: {exc.reason}") from exc


def _preview(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


# -- changes -----------------------------------------------------------------------------------
# Each change is a small immutable value checked on construction; stores apply them atomically.


@dataclass(frozen=True, slots=True)
class Create:
    job_id: str
    owner: str
    kind: str
    params_json: str
    executor: str | None = None
    call_id: str | None = None

    @classmethod
    def build(
        cls,
        *,
        owner: object,
        kind: object,
        params: object = None,
        job_id: object = None,
        executor: object = None,
        call_id: object = None,
    ) -> Create:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise BadRequest(f"params must be a JSON object, got {_preview(params)}")
        return cls(
            job_id=new_job_id() if job_id is None else check_job_id(job_id),
            owner=check_owner(owner),
            kind=check_kind(kind),
            params_json=encode_json(params, "params"),
            executor=None if executor is None else check_executor(executor),
            call_id=None if call_id is None else check_call_id(call_id),
        )


@dataclass(frozen=True, slots=True)
class Start:
    """queued → running, or a new attempt of a running job (a preempted worker re-running)."""


@dataclass(frozen=True, slots=True)
class Update:
    progress: float | None = None
    stage: str | None = None
    message: str | None = None

    @classmethod
    def build(
        cls, *, progress: object = None, stage: object = None, message: object = None
    ) -> Update:
        if progress is None and stage is None and message is None:
            raise BadRequest("update needs at least one of progress, stage, message")
        return cls(
            progress=None if progress is None else check_progress(progress),
            stage=None if stage is None else check_text(stage, "stage", MAX_STAGE_CHARS),
            message=None if message is None else check_text(message, "message", MAX_MESSAGE_CHARS),
        )


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """Liveness only: refreshes ``heartbeat_at``; no ``seq`` change, nothing published."""


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The worker's resume point, stored beside the job (not in its snapshot): a later attempt
    reads it back. Like a heartbeat it refreshes ``heartbeat_at`` only: no ``seq`` change,
    nothing published, since browsers never see it."""

    data_json: str

    @classmethod
    def build(cls, data: object) -> Checkpoint:
        return cls(data_json=encode_json(data, "checkpoint", MAX_CHECKPOINT_BYTES))


@dataclass(frozen=True, slots=True)
class Succeed:
    result_json: str

    @classmethod
    def build(cls, result: object = None) -> Succeed:
        return cls(result_json=encode_json(result, "result"))


@dataclass(frozen=True, slots=True)
class Fail:
    code: str
    message: str

    @classmethod
    def build(cls, *, code: object, message: object) -> Fail:
        if code not in ERROR_CODES:
            raise BadRequest(
                f"error code must be one of {sorted(ERROR_CODES)}, got {_preview(code)}"
            )
        assert isinstance(code, str)
        return cls(code=code, message=check_text(message, "message", MAX_MESSAGE_CHARS))


@dataclass(frozen=True, slots=True)
class RequestCancel:
    """Ask the worker to stop: a queued job is cancelled at once, a running one is flagged."""


@dataclass(frozen=True, slots=True)
class Cancel:
    """The worker (or executor) confirms it stopped: the job ends ``cancelled``."""

    message: str = "cancelled"

    @classmethod
    def build(cls, message: object = "cancelled") -> Cancel:
        return cls(message=check_text(message, "message", MAX_MESSAGE_CHARS))


@dataclass(frozen=True, slots=True)
class AttachCall:
    executor: str
    call_id: str

    @classmethod
    def build(cls, *, executor: object, call_id: object) -> AttachCall:
        return cls(executor=check_executor(executor), call_id=check_call_id(call_id))


Change: TypeAlias = (
    Start | Update | Heartbeat | Checkpoint | Succeed | Fail | RequestCancel | Cancel | AttachCall
)
