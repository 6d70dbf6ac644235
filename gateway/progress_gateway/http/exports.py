"""``/exports``: create, read, watch, cancel (docs/design.md §6).

Every job route checks in the same order: token (401), id (400), then the store: no such job
(404), someone else's job (403), store down (503 with ``Retry-After``, never 404). Snapshots go
out as the stored JSON text, never re-encoded. Watching routes (long-poll and SSE) subscribe
through the hub like a WebSocket does, so they answer as soon as a change is published, and they
always leave the hub when they end: by answer, client disconnect or server drain. While open they
hold one unit of the owner's connection budget, shared with WebSockets (429 past it).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from progress_core.errors import (
    BadRequest,
    Forbidden,
    GatewayError,
    JobNotFound,
    TooManyConnections,
)
from progress_core.models import Job, check_job_id
from progress_gateway import jsonlimits
from progress_gateway.gateway import Gateway
from progress_gateway.http.authn import authenticate
from progress_gateway.hub import Snapshot
from progress_gateway.outbox import Outbox

logger = logging.getLogger("progress_gateway.http")

JSON = "application/json"
MAX_RECENT_S = 30 * 86400
KEEPALIVE = b": keep-alive\n\n"
# Owner-specific and changing under the client: no cache may keep or serve a copy.
NO_STORE = {"Cache-Control": "no-store"}
# Proxies (nginx) must pass events through at once; caches must not keep them.
EVENT_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_SEQ_RE = re.compile(r"[0-9]{1,18}")


# -- routes --------------------------------------------------------------------------------------


async def read_export(request: Request) -> Response:
    """The snapshot; 304 when ``If-None-Match`` has its seq; ``?wait=`` long-polls for a change."""
    gateway, owner, job_id = await _job_request(request)
    wait_s = _wait_param(request, gateway.settings.max_wait_s)
    tags = _entity_tags(request.headers.get("if-none-match"))
    snapshot = await _owned_snapshot(gateway, owner, job_id)
    if (
        wait_s is None
        or snapshot.terminal
        or (tags is not None and not _matches(tags, snapshot.seq))
    ):
        # Nothing to wait for: no wait asked, nothing follows a terminal snapshot, or the
        # client is already behind.
        return _not_modified(snapshot) if _matches(tags, snapshot.seq) else _snapshot(snapshot)
    # The client has the current seq (without If-None-Match: it asks for the next change).
    watch = JobWatch(gateway, owner, job_id, request.receive, "long_poll")
    current = await watch.open(snapshot.seq)
    try:
        if current.seq != snapshot.seq:  # changed between the read and the subscribe
            return _snapshot(current)
        newer = await watch.next_after(snapshot.seq, wait_s)
        return _not_modified(snapshot) if newer is None else _snapshot(newer)
    finally:
        await watch.aclose()


async def export_events(request: Request) -> Response:
    """Server-Sent Events of one job, from what ``Last-Event-ID`` says the client has."""
    gateway, owner, job_id = await _job_request(request)
    last_seq = _last_event_id(request)
    await _owned_snapshot(gateway, owner, job_id)
    watch = JobWatch(gateway, owner, job_id, request.receive, "sse")
    current = await watch.open(last_seq)
    if current.terminal and last_seq is not None and last_seq >= current.seq:
        # 204 tells an EventSource to stop reconnecting: the client already has the end.
        await watch.aclose()
        return Response(status_code=204, headers=NO_STORE)
    if request.method == "HEAD":
        await watch.aclose()
        return Response(headers=EVENT_STREAM_HEADERS, media_type=EventStream.media_type)
    logger.info("SSE open job=%s owner=%s last_event_id=%s", job_id, owner, last_seq)
    return EventStream(watch, gateway.settings.sse_keepalive_s)


async def export_history(request: Request) -> Response:
    gateway, owner, job_id = await _job_request(request)
    await _owned_snapshot(gateway, owner, job_id)
    events = await gateway.store.history(job_id)
    return JSONResponse({"events": [event.to_dict() for event in events]}, headers=NO_STORE)


async def active_exports(request: Request) -> Response:
    """The caller's non-terminal jobs and those finished within ``recent_s``, newest first.

    Stale jobs are checked with their executors first (lazy finalization): a user who comes back
    sees the true final state even if no gateway was running when the job ended.
    """
    owner = await authenticate(request)
    gateway: Gateway = request.state.gateway
    recent_s = _recent_param(request, gateway.settings.recent_s)
    owned = await gateway.store.owner_jobs(owner, recent_s=recent_s)
    active, finished = await _finalize_stale(gateway, owned.active)
    recent = sorted(
        {job.id: job for job in [*finished, *owned.recent]}.values(),
        key=lambda job: job.updated_at,
        reverse=True,
    )
    body = (
        '{"active":['
        + ",".join(job.model_dump_json() for job in active)
        + '],"recent":['
        + ",".join(job.model_dump_json() for job in recent)
        + "]}"
    )
    return Response(body, media_type=JSON, headers=NO_STORE)


async def _finalize_stale(gateway: Gateway, jobs: list[Job]) -> tuple[list[Job], list[Job]]:
    """Split into (still active, just finalized), asking executors about stale jobs only."""
    cutoff = time.time() - gateway.settings.stale_after_s
    stale = [job for job in jobs if job.heartbeat_at.timestamp() < cutoff]
    if not stale:
        return jobs, []
    checked = await asyncio.gather(*(gateway.lifecycle.finalize(job) for job in stale))
    now = {job.id: job for job in checked}
    current = [now.get(job.id, job) for job in jobs]
    return [job for job in current if not job.terminal], [job for job in current if job.terminal]


async def create_export(request: Request) -> Response:
    """Validate, create, spawn on the kind's executor, store the call id, then answer 201."""
    owner = await authenticate(request)
    gateway: Gateway = request.state.gateway
    try:
        payload = jsonlimits.loads(await request.body())
    except BadRequest as exc:
        raise BadRequest(f"body must be a JSON object: {exc.message}") from None
    if not isinstance(payload, dict) or set(payload) - {"kind", "params"}:
        raise BadRequest('body must be a JSON object {"kind": "...", "params": {...}}')
    params = payload.get("params", {})
    if not isinstance(params, dict):
        raise BadRequest("params must be a JSON object")
    job = await gateway.lifecycle.create(owner, payload.get("kind"), params)
    logger.info("created job=%s owner=%s kind=%s call=%s", job.id, owner, job.kind, job.call_id)
    # root_path: the prefix this app is mounted under (docs/mounting.md), empty on its own.
    location = f"{request.scope.get('root_path', '')}/exports/{job.id}"
    headers = {**NO_STORE, "ETag": _etag(job.seq), "Location": location}
    return Response(job.model_dump_json(), status_code=201, media_type=JSON, headers=headers)


async def cancel_export(request: Request) -> Response:
    """Cancel: queued → cancelled at once; running → ``cancel_requested`` and the executor call
    is cancelled, the job ending ``cancelled``; idempotent; 409 once succeeded or failed."""
    gateway, owner, job_id = await _job_request(request)
    # No body is needed, but read any that was sent: an oversized one is a 413 before any write.
    await request.body()
    await _owned_snapshot(gateway, owner, job_id)
    # A job that already succeeded or failed raises JobFinished: 409, logged by the handler.
    job = await gateway.lifecycle.cancel(owner, job_id)
    logger.info(
        "cancel requested job=%s owner=%s status=%s seq=%d", job_id, owner, job.status, job.seq
    )
    headers = {**NO_STORE, "ETag": _etag(job.seq)}
    return Response(job.model_dump_json(), media_type=JSON, headers=headers)


routes = [
    # Before /exports/{id}, which would otherwise take "active" for an id.
    Route("/exports", create_export, methods=["POST"]),
    Route("/exports/active", active_exports, methods=["GET"]),
    Route("/exports/{id}", read_export, methods=["GET"]),
    Route("/exports/{id}/events", export_events, methods=["GET"]),
    Route("/exports/{id}/history", export_history, methods=["GET"]),
    Route("/exports/{id}/cancel", cancel_export, methods=["POST"]),
]


# -- watching --------------------------------------------------------------------------------------


class JobWatch:
    """One HTTP request watching one job through the hub, like a one-job WebSocket.

    Call ``aclose()`` when done, whatever happened: until then the hub holds the outbox. The
    watch also ends early (``wait`` returns ``None``) when the client disconnects or the gateway
    drains, so a replica shutting down hands its long-polls and streams to the others. It holds
    one unit of the owner's connection budget (``transport`` names it) from ``open`` to ``aclose``.
    """

    def __init__(
        self, gateway: Gateway, owner: str, job_id: str, receive: Receive, transport: str
    ) -> None:
        self.gateway = gateway
        self.owner = owner
        self.job_id = job_id
        self.transport = transport
        self._leased = False
        self.outbox: Outbox[Snapshot] = Outbox()
        self._receive = receive
        self._ended = asyncio.Event()
        self._take: asyncio.Task[list[Snapshot | str]] | None = None
        self._gone: asyncio.Task[None] | None = None
        self._end: asyncio.Task[bool] | None = None

    async def open(self, known_seq: int | None) -> Snapshot:
        """Watch the job; queue its snapshot if newer than ``known_seq``; return the current one.

        Raises ``TooManyConnections`` (the owner's budget is spent), ``JobNotFound``,
        ``Forbidden`` or ``StoreUnavailable`` with nothing left watched or held.
        """
        if not self.gateway.budget.acquire(self.owner, self.transport):
            limit = self.gateway.budget.limit
            raise TooManyConnections(
                f"{limit} connections (WebSocket, SSE, long-poll) are open for this owner",
                job_id=self.job_id,
            )
        self._leased = True
        self.gateway.closers[id(self)] = self._drain
        if self.gateway.draining:
            self._ended.set()
        try:
            (result,) = await self.gateway.hub.watch(
                self.outbox, self.owner, [(self.job_id, known_seq)]
            )
        except BaseException:
            await self.aclose()
            raise
        if result.error is not None:
            await self.aclose()
            raise result.error
        assert result.snapshot is not None
        return result.snapshot

    async def wait(self, idle_s: float) -> list[Snapshot] | None:
        """Snapshots not taken yet, ``[]`` after ``idle_s`` without any, or ``None`` when the
        watch ended (client gone, gateway draining)."""
        if self._take is None:
            self._take = asyncio.create_task(self.outbox.take())
        if self._gone is None:
            self._gone = asyncio.create_task(self._disconnected())
        if self._end is None:
            self._end = asyncio.create_task(self._ended.wait())
        take, gone = self._take, self._gone
        done, _ = await asyncio.wait(
            {take, gone, self._end}, timeout=idle_s, return_when=asyncio.FIRST_COMPLETED
        )
        if take in done:
            self._take = None
            return [item for item in take.result() if isinstance(item, Snapshot)]
        if gone in done:
            self._gone = None  # its outcome is dealt with here, not again by aclose
            gone.result()  # re-raises what broke the request (a body too large or too slow)
            logger.info("client left job=%s owner=%s", self.job_id, self.owner)
            return None
        return None if done else []

    async def next_after(self, seq: int, within_s: float) -> Snapshot | None:
        """The first snapshot newer than ``seq`` within ``within_s``, else ``None``."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within_s
        while (remaining := deadline - loop.time()) > 0:
            batch = await self.wait(remaining)
            if batch is None:
                return None
            # A reset is the store's state although its seq is not above ``seq``.
            newer = [snapshot for snapshot in batch if snapshot.seq > seq or snapshot.reset]
            if newer:
                return newer[-1]
        return None

    async def aclose(self) -> None:
        if self._leased:
            self._leased = False
            self.gateway.budget.release(self.owner, self.transport)
        self.gateway.closers.pop(id(self), None)
        self.gateway.hub.drop(self.outbox, None)
        self.outbox.close()
        tasks = [task for task in (self._take, self._gone, self._end) if task is not None]
        self._take = self._gone = self._end = None
        for task in tasks:
            task.cancel()
        for outcome in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(outcome, Exception):
                logger.warning("watch of job %s ended with %r", self.job_id, outcome)

    async def _disconnected(self) -> None:
        while (await self._receive())["type"] != "http.disconnect":
            pass

    async def _drain(self, code: int, reason: str) -> None:
        logger.info("ending watch of job %s for %s: %s", self.job_id, self.owner, reason)
        self._ended.set()


class EventStream(Response):
    """``text/event-stream`` of one job's snapshots; ends after the terminal one.

    A comment line every ``keepalive_s`` without an update keeps proxies from timing the stream
    out and lets the server notice a vanished client.
    """

    media_type = "text/event-stream"

    def __init__(self, watch: JobWatch, keepalive_s: float) -> None:
        self.watch = watch
        self.keepalive_s = keepalive_s
        self.status_code = 200
        self.background = None
        self.init_headers(EVENT_STREAM_HEADERS)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        watch = self.watch
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            ended_by = "client or drain"
            try:
                while (batch := await watch.wait(self.keepalive_s)) is not None:
                    if not batch:
                        await _send_body(send, KEEPALIVE)
                        continue
                    for snapshot in batch:
                        await _send_body(send, snapshot.sse_frame.encode())
                    if batch[-1].terminal:
                        ended_by = f"terminal seq {batch[-1].seq}"
                        break
            except GatewayError as exc:
                # The request broke under the stream (a body too slow or too large): too late
                # for a problem answer, so the stream ends (BodyLimit closes the connection).
                ended_by = f"{exc.code}: {exc.message}"
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            logger.info("SSE end job=%s owner=%s: %s", watch.job_id, watch.owner, ended_by)
        finally:
            await watch.aclose()


async def _send_body(send: Send, chunk: bytes) -> None:
    await send({"type": "http.response.body", "body": chunk, "more_body": True})


# -- request parsing and responses ----------------------------------------------------------------


async def _job_request(request: Request) -> tuple[Gateway, str, str]:
    """Authenticate first, then check the id: a bad token is a 401 even with a bad id."""
    owner = await authenticate(request)
    job_id = check_job_id(request.path_params["id"])
    return request.state.gateway, owner, job_id


async def _owned_snapshot(gateway: Gateway, owner: str, job_id: str) -> Snapshot:
    """The job's snapshot if the caller owns it. Watching routes call it before subscribing too:
    one read answers 404/403/503 at once, with no channel subscribed for a job nobody may watch.
    """
    (raw,) = await gateway.store.snapshots([job_id])
    if raw is None:
        raise JobNotFound(f"job {job_id} not found", job_id=job_id)
    snapshot = Snapshot(raw)
    if snapshot.owner != owner:
        raise Forbidden(f"job {job_id} belongs to someone else", job_id=job_id)
    return snapshot


def _snapshot(snapshot: Snapshot) -> Response:
    headers = {**NO_STORE, "ETag": _etag(snapshot.seq)}
    return Response(snapshot.raw, media_type=JSON, headers=headers)


def _not_modified(snapshot: Snapshot) -> Response:
    return Response(status_code=304, headers={**NO_STORE, "ETag": _etag(snapshot.seq)})


def _etag(seq: int) -> str:
    return f'"{seq}"'


def _entity_tags(header: str | None) -> set[str] | None:
    """``If-None-Match`` as opaque tags (weak comparison, RFC 9110 §13.1.2); ``None`` if absent."""
    if header is None:
        return None
    return {tag.strip().removeprefix("W/") for tag in header.split(",") if tag.strip()}


def _matches(tags: set[str] | None, seq: int) -> bool:
    return tags is not None and ("*" in tags or _etag(seq) in tags)


def _wait_param(request: Request, max_wait_s: float) -> float | None:
    text = request.query_params.get("wait")
    if text is None:
        return None
    wait_s = _number(text, "wait")
    if not 0 < wait_s <= max_wait_s:
        raise BadRequest(
            f"wait must be more than 0 and at most {max_wait_s:g} seconds, got {text[:40]!r}"
        )
    return wait_s


def _recent_param(request: Request, default: float) -> float:
    text = request.query_params.get("recent_s")
    if text is None:
        return default
    recent_s = _number(text, "recent_s")
    if not 0 <= recent_s <= MAX_RECENT_S:
        raise BadRequest(f"recent_s must be within [0, {MAX_RECENT_S}] seconds, got {text[:40]!r}")
    return recent_s


def _last_event_id(request: Request) -> int | None:
    # A browser opening a new EventSource cannot set the header: ?last_event_id= stands in.
    text = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    if text is None or not text.strip():
        return None
    if not _SEQ_RE.fullmatch(text.strip()):
        raise BadRequest(f"Last-Event-ID must be a seq this stream sent, got {text[:40]!r}")
    return int(text)


def _number(text: str, name: str) -> float:
    try:
        value = float(text)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a number of seconds, got {text[:40]!r}") from exc
    if not math.isfinite(value):
        raise BadRequest(f"{name} must be a finite number of seconds, got {text[:40]!r}")
    return value
