"""The hub: which connection watches which job, and fan-out of every snapshot to them.

Each published snapshot is decoded once and turned into one shared ``Snapshot``; its frame for a
transport is encoded once, on first use, however many connections receive it. Channels are
subscribed with reference counts: the first watcher of a job subscribes, the last one leaving
unsubscribes. Subscribing is race-free (subscribe first, then read the stored snapshot), and the
hub assumes pub/sub loses messages: after every broker reconnect (all watched jobs), and every
``resync_s`` (a tenth of them every tenth of it), it compares the ``seq`` of watched jobs with the
store and delivers what is missing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import struct
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from gateway.broker.base import Broker, MalformedMessage
from gateway.errors import Forbidden, GatewayError, JobNotFound
from gateway.metrics import Metrics
from gateway.outbox import Outbox
from gateway.store import JobStore
from gateway.tasks import TaskGroup

logger = logging.getLogger("gateway.hub")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# The periodic resync reads one slice of the watched jobs per tick, so each job is checked once
# every ``resync_s`` and no tick holds the event loop for a read of every watched job at once.
RESYNC_SLICES = 10


class Snapshot:
    """One job snapshot as published, shared by every connection that receives it."""

    __slots__ = (
        "_sse",
        "_ws",
        "_ws_bytes",
        "job_id",
        "owner",
        "raw",
        "seq",
        "terminal",
        "updated_at",
    )

    def __init__(self, raw: str) -> None:
        try:
            fields = json.loads(raw)
        except ValueError as exc:
            raise MalformedMessage(f"not JSON: {exc}") from None
        if not isinstance(fields, dict):
            raise MalformedMessage(f"not a JSON object but {type(fields).__name__}")
        job_id, owner, seq = fields.get("id"), fields.get("owner"), fields.get("seq")
        status, updated_at = fields.get("status"), fields.get("updated_at")
        if not (
            isinstance(job_id, str)
            and isinstance(owner, str)
            and type(seq) is int
            and isinstance(status, str)
            and isinstance(updated_at, str)
        ):
            raise MalformedMessage("id, owner, status, updated_at (strings) and seq (int) needed")
        self.raw = raw
        self.job_id: str = job_id
        self.owner: str = owner
        self.seq: int = seq
        self.terminal: bool = status in TERMINAL
        self.updated_at: str = updated_at
        self._ws: str | None = None
        self._ws_bytes: bytes | None = None
        self._sse: str | None = None

    @property
    def ws_frame(self) -> str:
        if self._ws is None:
            self._ws = '{"op":"update","job":' + self.raw + "}"
        return self._ws

    @property
    def ws_bytes(self) -> bytes:
        """The whole server WebSocket frame (text, FIN, unmasked): the same for every client."""
        if self._ws_bytes is None:
            payload = self.ws_frame.encode()
            size = len(payload)
            if size < 126:
                header = bytes((0x81, size))
            elif size < 1 << 16:
                header = struct.pack("!BBH", 0x81, 126, size)
            else:
                header = struct.pack("!BBQ", 0x81, 127, size)
            self._ws_bytes = header + payload
        return self._ws_bytes

    @property
    def sse_frame(self) -> str:
        if self._sse is None:
            self._sse = f"id: {self.seq}\nevent: update\ndata: {self.raw}\n\n"
        return self._sse


@dataclass(frozen=True, slots=True)
class WatchResult:
    """Outcome of watching one job: its current snapshot, or why it cannot be watched."""

    job_id: str
    snapshot: Snapshot | None = None
    error: GatewayError | None = None


class Hub:
    def __init__(
        self,
        store: JobStore,
        broker: Broker,
        metrics: Metrics,
        *,
        resync_s: float = 5.0,
    ) -> None:
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.resync_s = resync_s
        self._watchers: dict[str, set[Outbox[Snapshot]]] = {}
        # Watched job ids by resync slice (``hash(id) % RESYNC_SLICES``).
        self._slices: list[set[str]] = [set() for _ in range(RESYNC_SLICES)]
        self._owner_watchers: dict[str, set[Outbox[Snapshot]]] = {}
        self._latest: dict[str, int] = {}
        self._tasks = TaskGroup(logger, "hub")
        self._resync_task: asyncio.Task[None] | None = None
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._deliveries = metrics.deliveries.labels("ws")
        self._conflated = metrics.conflated

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self.on_snapshot, self.on_created, self.resync)
        self._resync_task = asyncio.create_task(self._resync_loop(), name="pgw-resync")

    async def aclose(self) -> None:
        if self._resync_task is not None:
            self._resync_task.cancel()
            await asyncio.gather(self._resync_task, return_exceptions=True)
        await self._tasks.aclose()
        await self.broker.aclose()

    # -- watching ------------------------------------------------------------------------------

    async def watch(
        self, outbox: Outbox[Snapshot], owner: str, jobs: Sequence[tuple[str, int | None]]
    ) -> list[WatchResult]:
        """Watch jobs for ``outbox`` (the caller owns them all, or gets ``forbidden``).

        Queues each job's snapshot when it is newer than the ``seq`` the client has. Raises
        ``StoreUnavailable`` when the store cannot be read; nothing is left watched then.
        """
        ids = [job_id for job_id, _ in jobs]
        for job_id, seq in jobs:
            if seq:
                outbox.set_known_seq(job_id, seq)
        self._add(outbox, ids)
        try:
            # Subscribe first, then read: a change between the two arrives on the channel.
            await self.broker.watch_jobs(ids)
            raws = await self.store.snapshots(ids)
        except BaseException:
            self.unwatch(outbox, ids)
            raise
        results: list[WatchResult] = []
        finished: list[str] = []
        for job_id, raw in zip(ids, raws, strict=True):
            if raw is None:
                finished.append(job_id)
                results.append(WatchResult(job_id, error=_not_found(job_id)))
                continue
            snapshot = Snapshot(raw)
            if snapshot.owner != owner:
                finished.append(job_id)
                results.append(WatchResult(job_id, error=_forbidden(job_id)))
                continue
            self._deliver_to(outbox, snapshot)
            results.append(WatchResult(job_id, snapshot=snapshot))
        if finished:
            self.unwatch(outbox, finished)
        return results

    def unwatch(self, outbox: Outbox[Snapshot], job_ids: Iterable[str]) -> None:
        gone: list[str] = []
        for job_id in job_ids:
            watchers = self._watchers.get(job_id)
            if watchers is None or outbox not in watchers:
                continue
            watchers.discard(outbox)
            outbox.forget(job_id)
            self.metrics.subscriptions.dec()
            if not watchers:
                self._forget(job_id)
                gone.append(job_id)
        if gone:
            self.metrics.channels.set(len(self._watchers))
            self.broker.unwatch_jobs(gone)

    async def watch_owner(self, outbox: Outbox[Snapshot], owner: str) -> list[WatchResult]:
        """Watch every non-terminal job of ``owner`` now, and every job it creates later."""
        self._owner_watchers.setdefault(owner, set()).add(outbox)
        try:
            await self.broker.watch_owner(owner)
            owned = await self.store.owner_jobs(owner, recent_s=0)
        except BaseException:
            self.unwatch_owner(outbox, owner)
            raise
        return await self.watch(outbox, owner, [(job.id, None) for job in owned.active])

    def unwatch_owner(self, outbox: Outbox[Snapshot], owner: str) -> None:
        watchers = self._owner_watchers.get(owner)
        if watchers is None or outbox not in watchers:
            return
        watchers.discard(outbox)
        if not watchers:
            del self._owner_watchers[owner]
            self.broker.unwatch_owner(owner)

    def drop(self, outbox: Outbox[Snapshot], owner: str | None) -> None:
        """Forget a closed connection entirely."""
        self.unwatch(outbox, list(outbox.job_ids()))
        if owner is not None:
            self.unwatch_owner(outbox, owner)

    def watched_count(self) -> int:
        return len(self._watchers)

    # -- delivery (called by the broker) --------------------------------------------------------

    def on_snapshot(self, raw: str) -> None:
        """A snapshot arrived on a job channel: fan it out, encoded once."""
        snapshot = Snapshot(raw)
        watchers = self._watchers.get(snapshot.job_id)
        if not watchers or snapshot.seq <= self._latest.get(snapshot.job_id, 0):
            return
        self._latest[snapshot.job_id] = snapshot.seq
        delivered = conflated = 0
        job_id, seq = snapshot.job_id, snapshot.seq
        for outbox in watchers:
            outcome = outbox.offer_update(job_id, seq, snapshot)
            if outcome >= 0:
                delivered += 1
                conflated += outcome
        if delivered:
            self._deliveries.inc(delivered)
        if conflated:
            self._conflated.inc(conflated)
        if snapshot.terminal:
            self._finished(snapshot.job_id)
        self._observe_latency(snapshot)
        if self._debug:
            logger.debug(
                "job %s seq %d to %d connections", snapshot.job_id, snapshot.seq, len(watchers)
            )

    def on_created(self, raw: str) -> None:
        """A job was created: every ``scope: mine`` watcher of its owner starts watching it."""
        snapshot = Snapshot(raw)
        watchers = self._owner_watchers.get(snapshot.owner)
        if not watchers:
            return
        for outbox in list(watchers):
            self._tasks.spawn(self._adopt(outbox, snapshot.owner, snapshot.job_id))

    async def _adopt(self, outbox: Outbox[Snapshot], owner: str, job_id: str) -> None:
        if outbox.closed or outbox.watches(job_id):
            return
        try:
            await self.watch(outbox, owner, [(job_id, None)])
        except GatewayError as exc:
            # The next resync cannot help a job we never watched: say so loudly.
            logger.error("could not watch new job %s of %s: %s", job_id, owner, exc)

    def _deliver_to(self, outbox: Outbox[Snapshot], snapshot: Snapshot) -> None:
        self._offer(outbox, snapshot)
        if snapshot.terminal:
            self._release(outbox, snapshot.job_id)

    def _offer(self, outbox: Outbox[Snapshot], snapshot: Snapshot) -> None:
        outcome = outbox.offer_update(snapshot.job_id, snapshot.seq, snapshot)
        if outcome >= 0:
            self._deliveries.inc()
            if outcome == 1:
                self._conflated.inc()

    def _finished(self, job_id: str) -> None:
        """Nothing follows a terminal snapshot: every watcher stops listening for the job."""
        for outbox in list(self._watchers.get(job_id, ())):
            self._release(outbox, job_id)

    def _release(self, outbox: Outbox[Snapshot], job_id: str) -> None:
        watchers = self._watchers.get(job_id)
        if watchers is None or outbox not in watchers:
            return
        watchers.discard(outbox)
        outbox.untrack(job_id)  # keeps the pending terminal frame
        self.metrics.subscriptions.dec()
        if not watchers:
            self._forget(job_id)
            self.metrics.channels.set(len(self._watchers))
            self.broker.unwatch_jobs([job_id])

    def _observe_latency(self, snapshot: Snapshot) -> None:
        try:
            published = datetime.fromisoformat(snapshot.updated_at).timestamp()
        except ValueError:
            return
        self.metrics.publish_to_send.observe(max(0.0, time.time() - published))

    # -- resync ----------------------------------------------------------------------------------

    async def resync(self, job_ids: Iterable[str] | None = None) -> None:
        """Deliver watched jobs (all, or these) whose stored ``seq`` is newer than we fanned out."""
        if job_ids is None:
            ids = list(self._watchers)
        else:
            ids = [job_id for job_id in job_ids if job_id in self._watchers]
        if not ids:
            return
        seqs = await self.store.seqs(ids)
        behind = [
            job_id
            for job_id, seq in zip(ids, seqs, strict=True)
            if seq is not None and seq > self._latest.get(job_id, 0)
        ]
        if not behind:
            return
        raws = await self.store.snapshots(behind)
        for raw in raws:
            if raw is None:
                continue
            snapshot = Snapshot(raw)
            watchers = self._watchers.get(snapshot.job_id)
            if not watchers:
                continue
            repaired = False
            for outbox in watchers:
                if snapshot.seq > outbox.known_seq(snapshot.job_id):
                    repaired = True
                self._offer(outbox, snapshot)
            self._latest[snapshot.job_id] = max(self._latest.get(snapshot.job_id, 0), snapshot.seq)
            if snapshot.terminal:
                self._finished(snapshot.job_id)
            if repaired:
                self.metrics.resync_repairs.inc()
                logger.info("resync delivered job %s seq %d", snapshot.job_id, snapshot.seq)

    async def _resync_loop(self) -> None:
        tick = 0
        while True:
            await asyncio.sleep(self.resync_s / RESYNC_SLICES)
            tick = (tick + 1) % RESYNC_SLICES
            try:
                await self.resync(list(self._slices[tick]))
            except GatewayError as exc:
                logger.warning(
                    "anti-entropy resync of slice %d failed, retrying in %.1fs: %s",
                    tick,
                    self.resync_s,
                    exc,
                )

    # -- bookkeeping -----------------------------------------------------------------------------

    def _add(self, outbox: Outbox[Snapshot], job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            watchers = self._watchers.get(job_id)
            if watchers is None:
                watchers = self._watchers[job_id] = set()
                self._slices[hash(job_id) % RESYNC_SLICES].add(job_id)
            if outbox not in watchers:
                watchers.add(outbox)
                outbox.track(job_id)
                self.metrics.subscriptions.inc()
        self.metrics.channels.set(len(self._watchers))

    def _forget(self, job_id: str) -> None:
        """The last watcher of ``job_id`` is gone."""
        del self._watchers[job_id]
        self._latest.pop(job_id, None)
        self._slices[hash(job_id) % RESYNC_SLICES].discard(job_id)


def _not_found(job_id: str) -> GatewayError:
    return JobNotFound(f"job {job_id} not found", job_id=job_id)


def _forbidden(job_id: str) -> GatewayError:
    return Forbidden(f"job {job_id} belongs to someone else", job_id=job_id)
