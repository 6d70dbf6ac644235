"""The hub: which connection watches which job, and fan-out of every snapshot to them.

Each published snapshot is decoded once and turned into one shared ``Snapshot``; its frame for a
transport is encoded once, on first use, however many connections receive it. Channels are
subscribed with reference counts: the first watcher of a job subscribes, the last one leaving
unsubscribes.

Isolation: a connection becomes a watcher of a job only after the stored snapshot says it owns
the job. Between the subscribe and that check the job is only *being checked*: its channel is
subscribed (so no change is missed) and the newest snapshot is remembered, but nothing reaches the
connection. Fan-out also drops a snapshot whose owner is not the connection's owner.

Repair: the store is the source of truth and pub/sub may lose messages, so the hub compares what
it delivered with the store

- after every broker reconnect, for every watched job and every ``scope: mine`` owner (a job
  created during the gap is adopted from the owner's index);
- when a job's channel carries a ``seq`` below the one delivered (a late message, or a store that
  went back after a failover or a forged message);
- every second, retrying whatever failed (a reconnect resync, an adopt, a check);
- every ``sweep_s``, for all watched jobs and owners, a tick's slice at a time: the safety net,
  rare because idle jobs cost nothing between sweeps.

When the store's ``seq`` is *below* what was delivered, the stored snapshot goes out marked as a
reset, which clients accept in place of what they had.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import struct
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from progress_core.errors import Forbidden, GatewayError, JobNotFound, TooManySubscriptions
from progress_core.store import JobStore
from progress_gateway.broker.base import Broker, MalformedMessage
from progress_gateway.metrics import Metrics
from progress_gateway.outbox import Outbox
from progress_gateway.protocol import error_frame
from progress_gateway.tasks import TaskGroup

logger = logging.getLogger("progress_gateway.hub")

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
# A ``scope: mine`` reconciliation adopts finished jobs created this long before the watch began
# (gateway and store clocks differ a little).
CLOCK_MARGIN_S = 5.0
# How soon a failed repair is tried again (at most every ``resync_s``).
RETRY_S = 1.0


class Snapshot:
    """One job snapshot as published, shared by every connection that receives it."""

    __slots__ = (
        "_sse",
        "_ws",
        "_ws_bytes",
        "job_id",
        "owner",
        "raw",
        "reset",
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
        # The store went back below what was delivered: clients replace their state with this.
        self.reset = False
        self._ws: str | None = None
        self._ws_bytes: bytes | None = None
        self._sse: str | None = None

    def as_reset(self) -> Snapshot:
        """The same snapshot, marked so clients accept it although its ``seq`` is lower."""
        reset = Snapshot.__new__(Snapshot)
        for name in ("raw", "job_id", "owner", "seq", "terminal", "updated_at"):
            setattr(reset, name, getattr(self, name))
        reset.reset = True
        reset._ws = reset._ws_bytes = reset._sse = None
        return reset

    @property
    def ws_frame(self) -> str:
        if self._ws is None:
            tail = ',"reset":true}' if self.reset else "}"
            self._ws = '{"op":"update","job":' + self.raw + tail
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
            event = "reset" if self.reset else "update"
            self._sse = f"id: {self.seq}\nevent: {event}\ndata: {self.raw}\n\n"
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
        sweep_s: float = 60.0,
        max_subscriptions: int = 1000,
    ) -> None:
        self.store = store
        self.broker = broker
        self.metrics = metrics
        self.resync_s = resync_s
        self._retry_s = min(RETRY_S, resync_s)
        self.sweep_s = sweep_s
        self.max_subscriptions = max_subscriptions
        # Connections allowed to receive each job (owner checked).
        self._watchers: dict[str, set[Outbox[Snapshot]]] = {}
        # Watches between their subscribe and their owner check, per job: they keep the channel.
        self._checking: dict[str, int] = {}
        # Per watched job: the newest seq fanned out and the job's owner (interned). Only the seq,
        # not the snapshot: an idle watched job costs two dict entries, not its encoded frames.
        self._latest: dict[str, int] = {}
        self._owners: dict[str, str] = {}
        # The newest snapshot that arrived while a job was being checked (only then).
        self._heard: dict[str, Snapshot] = {}
        # ``scope: mine`` watchers per owner, with when each began (``time.time()``).
        self._owner_watchers: dict[str, dict[Outbox[Snapshot], float]] = {}
        # The sweep reads one slice per ``resync_s`` tick, so each job is read every ``sweep_s``.
        self._slice_count = max(1, math.ceil(sweep_s / resync_s))
        self._slices: list[set[str]] = [set() for _ in range(self._slice_count)]
        # Work to retry on the next tick, and jobs with a check in flight.
        self._resync_all = False
        self._retry_jobs: set[str] = set()
        # Counts broker reconnects: a watch that overlapped one may have read the store before a
        # change that the reconnect's resync, which only covers watchers, did not see.
        self._reconnects = 0
        self._retry_owners: set[str] = set()
        # Jobs with a check in flight, and whether it was asked for again meanwhile (a message
        # it may have read the store too early for): then it runs once more.
        self._checks_in_flight: dict[str, bool] = {}
        self._tasks = TaskGroup(logger, "hub")
        self._resync_task: asyncio.Task[None] | None = None
        self._debug = logger.isEnabledFor(logging.DEBUG)
        self._deliveries = metrics.deliveries.labels("ws")
        self._conflated = metrics.conflated

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> None:
        await self.broker.start(self.on_snapshot, self.on_created, self.on_reconnect)
        self._resync_task = asyncio.create_task(self._maintain(), name="pgw-resync")

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
        """Watch jobs for ``outbox`` once the store says ``owner`` owns them.

        Queues each job's snapshot when it is newer than the ``seq`` the client has (or, when
        the client has a ``seq`` the store no longer has, the stored one as a reset). Raises
        ``StoreUnavailable`` when the store cannot be read; nothing is left watched then.
        """
        if outbox.owner is None:
            outbox.owner = owner
        elif outbox.owner != owner:
            raise Forbidden(f"this connection belongs to {outbox.owner}, not {owner}")
        ids = [job_id for job_id, _ in jobs]
        for job_id in ids:
            self._begin_check(job_id)
        reconnects = self._reconnects
        try:
            # Subscribe first, then read: a change between the two arrives on the channel and is
            # remembered in ``_heard`` while the owner is checked.
            await self.broker.watch_jobs(ids)
            raws = await self.store.snapshots(ids)
            results = [
                self._admit(outbox, owner, job_id, seq, raw)
                for (job_id, seq), raw in zip(jobs, raws, strict=True)
            ]
            if self._reconnects != reconnects:
                for result in results:
                    if result.error is None and result.job_id in self._watchers:
                        self._check_soon(result.job_id)
            return results
        finally:
            self._end_checks(ids)

    def _admit(
        self, outbox: Outbox[Snapshot], owner: str, job_id: str, seq: int | None, raw: str | None
    ) -> WatchResult:
        """The owner check, then (only then) the connection becomes a watcher of the job."""
        if raw is None:
            return WatchResult(job_id, error=_not_found(job_id))
        stored = Snapshot(raw)
        if stored.owner != owner:
            logger.info("job %s refused to %s: it belongs to someone else", job_id, owner)
            return WatchResult(job_id, error=_forbidden(job_id))
        if outbox.closed:
            # The connection ended during the read: it must not become a watcher again.
            return WatchResult(job_id, snapshot=stored)
        watchers = self._watchers.get(job_id)
        if (watchers is None or outbox not in watchers) and (
            outbox.watch_count() >= self.max_subscriptions
        ):
            return WatchResult(job_id, error=_too_many(job_id, self.max_subscriptions))
        latest = stored
        heard = self._heard.get(job_id)
        if heard is not None and heard.owner == stored.owner and heard.seq > stored.seq:
            latest = heard  # published after the read, before this check ended
        if watchers is None:
            watchers = self._watchers[job_id] = set()
            self._owners[job_id] = sys.intern(stored.owner)
            self._latest[job_id] = latest.seq
            self._slices[hash(job_id) % self._slice_count].add(job_id)
            self.metrics.channels.set(len(self._watchers))
        elif latest.seq > self._latest[job_id]:
            # The store is ahead of what this job's watchers got (pub/sub lost it while the
            # subscriber was away): they get it too, or the next resync would find nothing
            # missing against the raised seq.
            self._latest[job_id] = latest.seq
            for other in list(watchers):
                self._offer(other, latest)
            self.metrics.resync_repairs.inc()
            logger.info("a subscribe found job %s at seq %d: delivered to all", job_id, latest.seq)
        if outbox not in watchers:
            watchers.add(outbox)
            outbox.track(job_id)
            self.metrics.subscriptions.inc()
        if seq and seq > latest.seq:
            # The client has a seq the store does not: the store went back (failover, restore).
            outbox.offer_reset(job_id, latest.seq, latest.as_reset())
            self.metrics.resync_repairs.inc()
            logger.info("job %s: client had seq %d, store has %d: reset", job_id, seq, latest.seq)
        else:
            if seq:
                outbox.set_known_seq(job_id, seq)
            self._offer(outbox, latest)
        if latest.terminal:
            self._finished(job_id)  # every watcher has the terminal snapshot now
        return WatchResult(job_id, snapshot=latest)

    def _begin_check(self, job_id: str) -> None:
        self._checking[job_id] = self._checking.get(job_id, 0) + 1

    def _end_checks(self, job_ids: Iterable[str]) -> None:
        gone: list[str] = []
        for job_id in job_ids:
            left = self._checking[job_id] - 1
            if left:
                self._checking[job_id] = left
                continue
            del self._checking[job_id]
            self._heard.pop(job_id, None)
            if job_id not in self._watchers:
                gone.append(job_id)
        if gone:
            self.broker.unwatch_jobs(gone)

    def unwatch(self, outbox: Outbox[Snapshot], job_ids: Iterable[str]) -> None:
        gone: list[str] = []
        for job_id in job_ids:
            watchers = self._watchers.get(job_id)
            if watchers is None or outbox not in watchers:
                continue
            watchers.discard(outbox)
            outbox.forget(job_id)
            self.metrics.subscriptions.dec()
            if not watchers and self._forget(job_id):
                gone.append(job_id)
        if gone:
            self.metrics.channels.set(len(self._watchers))
            self.broker.unwatch_jobs(gone)

    async def watch_owner(self, outbox: Outbox[Snapshot], owner: str) -> list[WatchResult]:
        """Watch every non-terminal job of ``owner`` now, and every job it creates later."""
        if outbox.owner is None:
            outbox.owner = owner
        self._owner_watchers.setdefault(owner, {}).setdefault(outbox, time.time())
        try:
            await self.broker.watch_owner(owner)
            owned = await self.store.owner_jobs(owner, recent_s=0)
            return await self.watch(outbox, owner, [(job.id, None) for job in owned.active])
        except BaseException:
            self.unwatch_owner(outbox, owner)
            raise

    def unwatch_owner(self, outbox: Outbox[Snapshot], owner: str) -> None:
        watchers = self._owner_watchers.get(owner)
        if watchers is None or outbox not in watchers:
            return
        del watchers[outbox]
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
        job_id = snapshot.job_id
        seq = snapshot.seq
        if self._checking and job_id in self._checking:
            heard = self._heard.get(job_id)
            if heard is None or seq > heard.seq:
                self._heard[job_id] = snapshot
        latest = self._latest.get(job_id)
        if latest is None:
            return
        if seq <= latest:
            if seq < latest:
                # Late (a resync got there first), or the store went back: the store decides.
                self._check_soon(job_id)
            return
        owner = self._owners[job_id]
        if snapshot.owner != owner:
            self._drop_foreign(snapshot, owner)
            return
        self._latest[job_id] = seq
        watchers = self._watchers.get(job_id)
        if not watchers:
            return
        delivered = conflated = 0
        for outbox in watchers:
            if outbox.owner != owner:
                self._drop_foreign(snapshot, outbox.owner)
                continue
            outcome = outbox.offer_update(job_id, seq, snapshot)
            if outcome >= 0:
                delivered += 1
                conflated += outcome
        if delivered:
            self._deliveries.inc(delivered)
        if conflated:
            self._conflated.inc(conflated)
        if snapshot.terminal:
            self._finished(job_id)
        self._observe_latency(snapshot)
        if self._debug:
            logger.debug("job %s seq %d to %d connections", job_id, seq, len(watchers))

    def on_created(self, raw: str) -> None:
        """A job was created: every ``scope: mine`` watcher of its owner starts watching it."""
        snapshot = Snapshot(raw)
        watchers = self._owner_watchers.get(snapshot.owner)
        if not watchers:
            return
        for outbox in list(watchers):
            self._tasks.spawn(self._adopt(outbox, snapshot.owner, [snapshot.job_id]))

    async def _adopt(self, outbox: Outbox[Snapshot], owner: str, job_ids: list[str]) -> None:
        wanted = [job_id for job_id in job_ids if not outbox.watches(job_id)]
        if outbox.closed or not wanted:
            return
        try:
            results = await self.watch(outbox, owner, [(job_id, None) for job_id in wanted])
        except GatewayError as exc:
            # Retried by the next tick's reconciliation of the owner, not dropped.
            self._retry_owners.add(owner)
            logger.warning(
                "could not watch %d new jobs of %s (retrying in %.1fs): %s",
                len(wanted),
                owner,
                self._retry_s,
                exc,
            )
            return
        for result in results:
            if result.error is None or outbox.closed:
                continue
            logger.warning("scope mine of %s: %s", owner, result.error.message)
            outbox.offer_control(
                error_frame(result.error.code, result.error.public_message, result.job_id)
            )

    def _offer(self, outbox: Outbox[Snapshot], snapshot: Snapshot) -> None:
        if outbox.owner != snapshot.owner:
            self._drop_foreign(snapshot, outbox.owner)
            return
        outcome = outbox.offer_update(snapshot.job_id, snapshot.seq, snapshot)
        if outcome >= 0:
            self._deliveries.inc()
            if outcome == 1:
                self._conflated.inc()

    def _drop_foreign(self, snapshot: Snapshot, owner: str | None) -> None:
        """Defence in depth: a snapshot whose owner is not the watcher's never goes out."""
        self.metrics.malformed_messages.inc()
        logger.error(
            "dropped a snapshot of job %s owned by %r for a watcher owned by %r",
            snapshot.job_id,
            snapshot.owner,
            owner,
        )

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
        if not watchers and self._forget(job_id):
            self.metrics.channels.set(len(self._watchers))
            self.broker.unwatch_jobs([job_id])

    def _observe_latency(self, snapshot: Snapshot) -> None:
        try:
            published = datetime.fromisoformat(snapshot.updated_at).timestamp()
        except ValueError:
            return
        self.metrics.publish_to_send.observe(max(0.0, time.time() - published))

    # -- repair ----------------------------------------------------------------------------------

    async def on_reconnect(self) -> None:
        """The broker (re)subscribed: what was published meanwhile is gone; read the store."""
        self._reconnects += 1
        self._resync_all = True
        self._retry_owners.update(self._owner_watchers)
        await self._retry()

    async def resync(self, job_ids: Iterable[str] | None = None) -> None:
        """Deliver what the store has and watchers lack, for watched jobs (all, or these).

        Raises ``StoreUnavailable`` if the store cannot be read.
        """
        ids = list(self._watchers) if job_ids is None else list(job_ids)
        # What was delivered before the read was sent: a store below it after the read is a
        # store that went back, not a message that overtook the read.
        observed = {job_id: seq for job_id in ids if (seq := self._latest.get(job_id))}
        if not observed:
            return
        ids = list(observed)
        seqs = await self.store.seqs(ids)
        differ = [
            job_id
            for job_id, seq in zip(ids, seqs, strict=True)
            if seq is not None and seq != observed[job_id]
        ]
        if not differ:
            return
        for raw in await self.store.snapshots(differ):
            if raw is not None:
                self._repair(Snapshot(raw), observed)

    def _repair(self, stored: Snapshot, observed: dict[str, int]) -> None:
        job_id = stored.job_id
        latest = self._latest.get(job_id)
        watchers = self._watchers.get(job_id)
        if latest is None or not watchers:
            return
        if stored.seq > latest:
            self._latest[job_id] = stored.seq
            repaired = any(stored.seq > outbox.known_seq(job_id) for outbox in watchers)
            for outbox in list(watchers):
                self._offer(outbox, stored)
            if repaired:
                self.metrics.resync_repairs.inc()
                logger.info("resync delivered job %s seq %d", job_id, stored.seq)
        elif stored.seq < latest == observed.get(job_id):
            logger.warning(
                "job %s: store has seq %d, below the %d delivered: resetting %d watchers",
                job_id,
                stored.seq,
                latest,
                len(watchers),
            )
            self._latest[job_id] = stored.seq
            reset = stored.as_reset()
            for outbox in list(watchers):
                if outbox.owner != stored.owner:
                    self._drop_foreign(stored, outbox.owner)
                elif outbox.offer_reset(job_id, stored.seq, reset):
                    self._deliveries.inc()
            self.metrics.resync_repairs.inc()
        else:
            return
        if stored.terminal:
            self._finished(job_id)

    def _check_soon(self, job_id: str) -> None:
        if job_id in self._checks_in_flight:
            self._checks_in_flight[job_id] = True
            return
        self._checks_in_flight[job_id] = False
        self._tasks.spawn(self._check(job_id), name="pgw-hub-check")

    async def _check(self, job_id: str) -> None:
        try:
            while True:
                await self.resync([job_id])
                if not self._checks_in_flight[job_id]:
                    break
                self._checks_in_flight[job_id] = False  # asked again meanwhile: once more
        except GatewayError as exc:
            self._retry_jobs.add(job_id)
            logger.warning(
                "check of job %s failed, retrying in %.1fs: %s", job_id, self._retry_s, exc
            )
        finally:
            del self._checks_in_flight[job_id]

    async def reconcile_owner(self, owner: str) -> None:
        """Adopt, for each ``scope: mine`` watcher of ``owner``, the jobs the store's owner index
        has and the watcher never got (their create notice was lost in a subscriber gap)."""
        watchers = self._owner_watchers.get(owner)
        if not watchers:
            return
        now = time.time()
        earliest = min(watchers.values())
        owned = await self.store.owner_jobs(owner, recent_s=now - earliest + CLOCK_MARGIN_S)
        for outbox, since in list(watchers.items()):
            if outbox.closed:
                continue
            cutoff = since - CLOCK_MARGIN_S
            missing = [
                job.id
                for job in owned.active
                if not outbox.watches(job.id) and outbox.known_seq(job.id) == 0
            ] + [
                job.id
                for job in owned.recent
                if job.created_at.timestamp() >= cutoff and outbox.known_seq(job.id) == 0
            ]
            if missing:
                logger.info("scope mine of %s: adopting %d missed jobs", owner, len(missing))
                await self._adopt(outbox, owner, missing)

    async def _retry(self) -> None:
        """Repeat what failed: a resync after a reconnect, checks, owner reconciliations."""
        try:
            if self._resync_all:
                self._retry_jobs.clear()
                await self.resync()
                self._resync_all = False
            elif self._retry_jobs:
                jobs, self._retry_jobs = self._retry_jobs, set()
                try:
                    await self.resync(jobs)
                except BaseException:
                    self._retry_jobs |= jobs
                    raise
            while self._retry_owners:
                owner = next(iter(self._retry_owners))
                await self.reconcile_owner(owner)
                self._retry_owners.discard(owner)
        except GatewayError as exc:
            logger.warning("resync failed, retrying in %.1fs: %s", self._retry_s, exc)

    async def _maintain(self) -> None:
        """Retry what failed every second (the store may be back); every ``resync_s`` sweep one
        slice of jobs and owners."""
        loop = asyncio.get_running_loop()
        step = self._retry_s
        next_sweep = loop.time() + self.resync_s
        tick = 0
        while True:
            await asyncio.sleep(step)
            if loop.time() < next_sweep:
                if self._resync_all or self._retry_jobs or self._retry_owners:
                    await self._retry()
                continue
            next_sweep = loop.time() + self.resync_s
            tick = (tick + 1) % self._slice_count
            await self._retry()
            jobs = list(self._slices[tick])
            owners = [
                owner for owner in self._owner_watchers if hash(owner) % self._slice_count == tick
            ]
            try:
                await self.resync(jobs)
            except GatewayError as exc:
                self._retry_jobs.update(jobs)
                logger.warning("sweep of %d jobs failed, retrying: %s", len(jobs), exc)
            self._retry_owners.update(owners)
            await self._retry()

    # -- bookkeeping -----------------------------------------------------------------------------

    def _forget(self, job_id: str) -> bool:
        """The last watcher of ``job_id`` is gone; True if its channel can go too."""
        del self._watchers[job_id]
        del self._latest[job_id]
        del self._owners[job_id]
        self._slices[hash(job_id) % self._slice_count].discard(job_id)
        return job_id not in self._checking


def _not_found(job_id: str) -> GatewayError:
    return JobNotFound(f"job {job_id} not found", job_id=job_id)


def _forbidden(job_id: str) -> GatewayError:
    return Forbidden(f"job {job_id} belongs to someone else", job_id=job_id)


def _too_many(job_id: str, limit: int) -> GatewayError:
    return TooManySubscriptions(f"at most {limit} jobs per connection", job_id=job_id)
