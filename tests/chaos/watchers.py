"""Chaos-campaign watchers: WebSocket clients that reconnect, resume and check every frame.

A ``Watcher`` is one logical browser tab. It keeps one connection to its gateway at a time; when
that closes (gateway killed or draining) it reconnects with jittered backoff and resumes: every
followed job not known to be finished is subscribed again with the last ``seq`` it saw, and a
``scope: mine`` watcher subscribes to ``mine`` again and restores from ``GET /exports/active``
(active and recent jobs), as client-js does. Each connection is a ``Session`` that records what
arrived on it, so the campaign can check the per-connection guarantees of docs/protocol.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed, WebSocketException

from tests.support.gateway_server import GatewayServer

logger = logging.getLogger("tests.chaos.watchers")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
RETRY_S = 0.5  # before asking again after a retryable error (store_unavailable)
SUBSCRIBE_BATCH = 100
TRACE_LENGTH = 12

Frame = dict[str, Any]


@dataclass
class Violations:
    """Broken guarantees, one readable line each; the campaign asserts they stay empty."""

    seq_regressions: list[str] = field(default_factory=list)
    duplicate_terminals: list[str] = field(default_factory=list)
    not_found: list[str] = field(default_factory=list)
    foreign: list[str] = field(default_factory=list)
    unexpected_errors: list[str] = field(default_factory=list)

    def items(self) -> dict[str, list[str]]:
        return {
            "seq_regressions": self.seq_regressions,
            "duplicate_terminals": self.duplicate_terminals,
            "not_found": self.not_found,
            "foreign": self.foreign,
            "unexpected_errors": self.unexpected_errors,
        }


@dataclass
class Session:
    """One WebSocket connection of a watcher: what reached it and while it was open."""

    number: int
    opened_at: float
    mine_since: float | None = None
    mine_refused: bool = False  # the last `mine` subscribe got an error: its ack is no success
    closed_at: float | None = None
    seqs: dict[str, int] = field(default_factory=dict)
    terminals: dict[str, int] = field(default_factory=dict)
    # Per job, what was sent and answered (subscribes, updates, errors), newest last, and the
    # acks: enough to tell a lost subscribe from a lost update when a fault does not converge.
    trace: dict[str, deque[str]] = field(default_factory=dict)
    acks: deque[str] = field(default_factory=lambda: deque(maxlen=TRACE_LENGTH))

    def note(self, job_ids: list[str], event: str) -> None:
        line = f"{time.monotonic():.2f} {event}"
        for job_id in job_ids:
            self.trace.setdefault(job_id, deque(maxlen=TRACE_LENGTH)).append(line)

    def about(self, job_id: str) -> list[str]:
        return list(self.trace.get(job_id, ()))

    def open_at(self, moment: float) -> bool:
        return self.opened_at <= moment and (self.closed_at is None or moment < self.closed_at)


class Watcher:
    """Follows jobs (by id, or every job of its owner with ``mine``) on one gateway."""

    def __init__(
        self,
        name: str,
        gateway: GatewayServer,
        owner: str,
        token: str,
        *,
        mine: bool,
        violations: Violations,
        rng: random.Random,
    ) -> None:
        self.name = name
        self.gateway = gateway
        self.owner = owner
        self.token = token
        self.mine = mine
        self.violations = violations
        self.rng = rng
        self.latest: dict[str, Frame] = {}  # newest snapshot per job over all sessions
        self.follows: set[str] = set()
        self.sessions: list[Session] = []
        self._pending: set[str] = set()
        self._resubscribe_mine = False
        self._wake = asyncio.Event()

    def follow(self, job_id: str) -> None:
        """Subscribe to ``job_id`` now if connected, else on the next connection."""
        if job_id not in self.follows:
            self.follows.add(job_id)
            self._pending.add(job_id)
            self._wake.set()

    def trace(self, job_id: str) -> list[str]:
        """What each session sent and got about ``job_id`` (sessions without any left out)."""
        return [
            f"session {session.number}: {events}"
            for session in self.sessions
            if (events := session.about(job_id))
        ]

    def seq(self, job_id: str) -> int:
        return int(self.latest[job_id]["seq"]) if job_id in self.latest else 0

    def finished(self, job_id: str) -> bool:
        return job_id in self.latest and self.latest[job_id]["status"] in TERMINAL

    async def run(self, stop: asyncio.Event) -> None:
        """Connect, follow, reconnect after every close, until ``stop`` is set."""
        failures = 0
        url = f"{self.gateway.ws_url}?token={self.token}"
        while not stop.is_set():
            try:
                connection = await websockets.connect(
                    url, compression=None, open_timeout=5, close_timeout=1
                )
            except (OSError, TimeoutError, WebSocketException) as exc:
                failures += 1
                logger.debug("%s: connect to %s failed: %r", self.name, self.gateway.url, exc)
                await self._backoff(stop, failures)
                continue
            failures = 0
            session = Session(len(self.sessions), time.monotonic())
            self.sessions.append(session)
            try:
                await self._serve(connection, session, stop)
            except (ConnectionClosed, OSError) as exc:
                logger.debug("%s: session %d closed: %r", self.name, session.number, exc)
            finally:
                session.closed_at = time.monotonic()
                await connection.close()
            await self._backoff(stop, 1)

    async def _backoff(self, stop: asyncio.Event, failures: int) -> None:
        delay = min(0.1 * 2 ** min(failures, 4), 1.0) * self.rng.uniform(0.5, 1.0)
        try:
            await asyncio.wait_for(stop.wait(), delay)
        except TimeoutError:
            return

    async def _serve(
        self, connection: ClientConnection, session: Session, stop: asyncio.Event
    ) -> None:
        self._pending = {job_id for job_id in self.follows if not self.finished(job_id)}
        self._resubscribe_mine = self.mine
        self._wake.set()
        tasks = [
            asyncio.create_task(self._read(connection, session)),
            asyncio.create_task(self._write(connection, session)),
            asyncio.create_task(stop.wait()),
        ]
        if self.mine:
            tasks.append(asyncio.create_task(self._restore()))
        try:
            done, _ = await asyncio.wait(tasks[:3], return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            outcomes = await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            task.result()  # re-raise what ended the session (ConnectionClosed)
        for outcome in outcomes:
            if isinstance(outcome, Exception) and not isinstance(outcome, ConnectionClosed):
                raise outcome  # a bug in the watcher itself: fail the campaign loudly

    async def _write(self, connection: ClientConnection, session: Session) -> None:
        """Send what is due: ``mine``, then pending ids with the last seq seen (resume)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            if self._resubscribe_mine:
                self._resubscribe_mine = False
                await connection.send(
                    json.dumps({"op": "subscribe", "ref": "mine", "scope": "mine"})
                )
            pending = sorted(job_id for job_id in self._pending if not self.finished(job_id))
            self._pending.clear()
            for start in range(0, len(pending), SUBSCRIBE_BATCH):
                jobs = [
                    {"id": job_id, "seq": self.seq(job_id)} if job_id in self.latest else job_id
                    for job_id in pending[start : start + SUBSCRIBE_BATCH]
                ]
                await connection.send(json.dumps({"op": "subscribe", "ref": "ids", "jobs": jobs}))
                batch = pending[start : start + SUBSCRIBE_BATCH]
                session.note(batch, f"sent subscribe ({len(batch)} jobs)")

    async def _retry_later(self, error: Frame) -> None:
        """Send again what a retryable error answered: one job, ``mine``, or the whole frame."""
        await asyncio.sleep(RETRY_S)
        if error.get("job_id") is not None:
            self._pending.add(error["job_id"])
        elif error.get("ref") == "mine":
            self._resubscribe_mine = True
        else:
            self._pending.update(self.follows)
        self._wake.set()

    async def _restore(self) -> None:
        """What client-js does for ``watchMine`` on (re)connect: follow active and recent jobs."""
        async with httpx.AsyncClient(base_url=self.gateway.url, timeout=5) as http:
            while True:
                try:
                    response = await http.get(
                        "/exports/active", headers={"Authorization": f"Bearer {self.token}"}
                    )
                except httpx.HTTPError as exc:
                    logger.debug("%s: restore failed: %r", self.name, exc)
                    await asyncio.sleep(RETRY_S)
                    continue
                if response.status_code == 200:
                    body = response.json()
                    for job in [*body["active"], *body["recent"]]:
                        self.follow(job["id"])
                    return
                if response.status_code != 503:
                    self.violations.unexpected_errors.append(
                        f"{self.name}: GET /exports/active answered {response.status_code}"
                    )
                    return
                await asyncio.sleep(RETRY_S)

    async def _read(self, connection: ClientConnection, session: Session) -> None:
        retries: set[asyncio.Task[None]] = set()
        async for message in connection:
            frame: Frame = json.loads(message)
            op = frame.get("op")
            if op == "update":
                self._on_update(frame, session)
            elif op == "ack" and frame.get("ref") != "mine":
                session.acks.append(f"{time.monotonic():.2f} ack {frame.get('ref')}")
            elif op == "ack" and frame.get("ref") == "mine":
                if not session.mine_refused and session.mine_since is None:
                    session.mine_since = time.monotonic()
                session.mine_refused = False
            elif op == "error":
                session.note([frame.get("job_id") or "-"], f"error {frame}")
                session.mine_refused = frame.get("ref") == "mine"
                if self._on_error(frame):
                    task = asyncio.create_task(self._retry_later(frame))
                    retries.add(task)
                    task.add_done_callback(retries.discard)

    def _on_update(self, frame: Frame, session: Session) -> None:
        job: Frame = frame["job"]
        job_id, seq = job["id"], int(job["seq"])
        # `"reset": true` is the documented exception: the store's seq went back (docs/protocol.md).
        reset = bool(frame.get("reset") or job.get("reset"))
        previous = session.seqs.get(job_id)
        where = f"{self.name} session {session.number} job {job_id}"
        if previous is not None and seq <= previous and not reset:
            self.violations.seq_regressions.append(f"{where}: seq {previous} then {seq}")
        session.seqs[job_id] = seq
        session.note([job_id], f"update seq {seq}{' reset' if reset else ''}")
        if job["owner"] != self.owner:
            self.violations.foreign.append(f"{where}: owner {job['owner']}")
        if job["status"] in TERMINAL:
            count = session.terminals.get(job_id, 0) + 1
            session.terminals[job_id] = count
            if count > 1:
                self.violations.duplicate_terminals.append(f"{where}: terminal #{count}")
        if reset or seq > self.seq(job_id):
            self.latest[job_id] = job
        if self.mine:
            self.follows.add(job_id)

    def _on_error(self, frame: Frame) -> bool:
        """Record the error; True when the same subscribe should be sent again later."""
        code, job_id = frame.get("code"), frame.get("job_id")
        if code == "store_unavailable":
            return True
        line = f"{self.name}: {code} for {job_id}: {frame.get('message')}"
        if code == "not_found":
            self.violations.not_found.append(line)
        else:
            self.violations.unexpected_errors.append(line)
        return False
