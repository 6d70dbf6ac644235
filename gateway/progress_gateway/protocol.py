"""The WebSocket protocol (docs/protocol.md) as a sans-I/O state machine.

``ServerProtocol.receive(text)`` turns one client frame into a list of actions (frames to send,
commands to run, a close) without touching a socket or a clock, so every rule is testable without
asyncio. ``progress_gateway.ws`` moves bytes, runs the commands against the hub and keeps the
timers.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from progress_core.codes import CloseCode, ErrorCode
from progress_core.errors import BadRequest, GatewayError
from progress_core.models import check_job_id
from progress_gateway import jsonlimits
from progress_gateway.auth import Claims


class State(Enum):
    AWAITING_AUTH = "awaiting_auth"
    READY = "ready"
    CLOSED = "closed"


@dataclass(frozen=True, slots=True)
class Limits:
    max_frame_bytes: int = 64 * 1024
    max_subscriptions: int = 1000
    max_bad_frames: int = 10
    heartbeat_s: float = 20.0


@dataclass(frozen=True, slots=True)
class Send:
    frame: str


@dataclass(frozen=True, slots=True)
class Close:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class Authenticated:
    owner: str


@dataclass(frozen=True, slots=True)
class WatchJobs:
    ref: str | None
    jobs: list[tuple[str, int | None]]


@dataclass(frozen=True, slots=True)
class WatchMine:
    ref: str | None


@dataclass(frozen=True, slots=True)
class UnwatchJobs:
    ref: str | None
    job_ids: list[str]


@dataclass(frozen=True, slots=True)
class UnwatchMine:
    ref: str | None


Action = Send | Close | Authenticated | WatchJobs | WatchMine | UnwatchJobs | UnwatchMine

PONG = '{"op":"pong"}'


def encode(message: dict[str, Any]) -> str:
    """ASCII JSON: a client string echoed back (a ``ref``, an id in an error) may hold a lone
    surrogate, which has no UTF-8 form; escaped, every frame can be sent."""
    return json.dumps(message, separators=(",", ":"))


def error_frame(code: str, message: str, job_id: str | None = None, ref: str | None = None) -> str:
    body: dict[str, Any] = {"op": "error", "code": code, "message": message}
    if job_id is not None:
        body["job_id"] = job_id
    if ref is not None:
        body["ref"] = ref
    return encode(body)


def ack_frame(ref: str | None) -> str:
    return encode({"op": "ack", "ref": ref})


def ready_frame(heartbeat_s: float, server_time: str) -> str:
    return encode({"op": "ready", "heartbeat_s": heartbeat_s, "server_time": server_time})


class BadFrame(Exception):
    def __init__(self, message: str, ref: str | None = None) -> None:
        super().__init__(message)
        self.ref = ref


class ServerProtocol:
    """One connection's protocol state: authentication, parsing, limits, bad-frame budget."""

    def __init__(self, limits: Limits, verify: Callable[[str], Claims]) -> None:
        self.limits = limits
        self._verify = verify
        self.state = State.AWAITING_AUTH
        self.owner: str | None = None
        self.bad_frames = 0
        self.subscriptions: set[str] = set()
        self.watching_mine = False

    def authenticate(self, token: str) -> list[Action]:
        """Authenticate with a token from the query string, a header or an auth frame."""
        try:
            claims = self._verify(token)
        except GatewayError as exc:
            self.state = State.CLOSED
            return [Close(CloseCode.UNAUTHORIZED, _reason(exc.message))]
        self.state = State.READY
        self.owner = claims.sub
        return [Authenticated(claims.sub)]

    def auth_timed_out(self) -> list[Action]:
        self.state = State.CLOSED
        return [Close(CloseCode.AUTH_TIMEOUT, "no auth frame in time")]

    def receive(self, text: str) -> list[Action]:
        if self.state is State.CLOSED:
            return []
        limit = self.limits.max_frame_bytes
        if len(text) > limit or (len(text) * 4 > limit and len(text.encode("utf-8")) > limit):
            self.state = State.CLOSED
            return [Close(CloseCode.TOO_LARGE, "frame too large")]
        try:
            return self._dispatch(text)
        except BadFrame as exc:
            return self._bad_frame(str(exc), exc.ref)

    def _dispatch(self, text: str) -> list[Action]:
        try:
            message = jsonlimits.loads(text)
        except BadRequest as exc:
            raise BadFrame(f"bad frame: {exc.message}") from None
        if not isinstance(message, dict):
            raise BadFrame("frame must be a JSON object")
        ref = message.get("ref")
        if ref is not None and (not isinstance(ref, str) or len(ref) > 64):
            raise BadFrame("ref must be a string of at most 64 characters")
        op = message.get("op")
        if self.state is State.AWAITING_AUTH:
            if op != "auth":
                raise BadFrame('authenticate first: send {"op":"auth","token":"…"}', ref)
            token = message.get("token")
            if not isinstance(token, str) or not token:
                self.state = State.CLOSED
                return [Close(CloseCode.UNAUTHORIZED, "auth frame without a token")]
            return self.authenticate(token)
        if op == "ping":
            return [Send(PONG)]
        if op == "subscribe":
            return self._subscribe(message, ref)
        if op == "unsubscribe":
            return self._unsubscribe(message, ref)
        if op == "auth":
            raise BadFrame("already authenticated", ref)
        raise BadFrame(f"unknown op {op!r}", ref)

    def _subscribe(self, message: dict[str, Any], ref: str | None) -> list[Action]:
        if message.get("scope") == "mine":
            self.watching_mine = True
            return [WatchMine(ref)]
        if "scope" in message:
            raise BadFrame('scope must be "mine"', ref)
        jobs = message.get("jobs")
        if not isinstance(jobs, list) or not jobs:
            raise BadFrame('subscribe needs a non-empty list "jobs" or "scope":"mine"', ref)
        actions: list[Action] = []
        wanted: dict[str, int | None] = {}
        for entry in jobs:
            job_id, seq, problem = _job_entry(entry)
            if problem is not None:
                actions.append(Send(error_frame(ErrorCode.BAD_REQUEST, problem, job_id, ref)))
                continue
            assert job_id is not None
            if (
                job_id not in self.subscriptions
                and job_id not in wanted
                and (len(self.subscriptions) + len(wanted) >= self.limits.max_subscriptions)
            ):
                actions.append(
                    Send(
                        error_frame(
                            ErrorCode.TOO_MANY_SUBSCRIPTIONS,
                            f"at most {self.limits.max_subscriptions} jobs per connection",
                            job_id,
                            ref,
                        )
                    )
                )
                continue
            wanted[job_id] = seq
        self.subscriptions.update(wanted)
        if wanted:
            actions.append(WatchJobs(ref, list(wanted.items())))
        else:
            actions.append(Send(ack_frame(ref)))
        return actions

    def _unsubscribe(self, message: dict[str, Any], ref: str | None) -> list[Action]:
        if message.get("scope") == "mine":
            self.watching_mine = False
            return [UnwatchMine(ref)]
        jobs = message.get("jobs")
        if not isinstance(jobs, list) or not all(isinstance(job, str) for job in jobs):
            raise BadFrame('unsubscribe needs a list of job ids "jobs" or "scope":"mine"', ref)
        self.subscriptions.difference_update(jobs)
        return [UnwatchJobs(ref, list(dict.fromkeys(jobs)))]

    def forget(self, job_id: str) -> None:
        """The job cannot be watched (not found, forbidden): it does not count against limits."""
        self.subscriptions.discard(job_id)

    def _bad_frame(self, message: str, ref: str | None) -> list[Action]:
        self.bad_frames += 1
        if self.bad_frames > self.limits.max_bad_frames:
            self.state = State.CLOSED
            return [Close(CloseCode.POLICY, "too many bad frames")]
        return [Send(error_frame(ErrorCode.BAD_REQUEST, message, ref=ref))]


def _job_entry(entry: object) -> tuple[str | None, int | None, str | None]:
    """(job id, seq, problem) of one ``jobs`` entry: ``{"id": …, "seq": …}`` or a bare id."""
    if isinstance(entry, str):
        raw_id: object = entry
        seq: object = None
    elif isinstance(entry, dict):
        raw_id, seq = entry.get("id"), entry.get("seq")
    else:
        return None, None, 'each job must be {"id": "<uuid>", "seq": <int>} or an id'
    job_id = raw_id if isinstance(raw_id, str) else None
    try:
        check_job_id(raw_id)
    except GatewayError as exc:
        return job_id, None, exc.message
    if seq is not None and (isinstance(seq, bool) or not isinstance(seq, int) or seq < 0):
        return job_id, None, "seq must be a non-negative integer"
    return job_id, seq, None


def _reason(text: str) -> str:
    # A close reason is limited to 123 bytes; a lone surrogate has no UTF-8 form.
    encoded = text.encode("utf-8", errors="replace")[:120]
    return encoded.decode("utf-8", errors="ignore")
