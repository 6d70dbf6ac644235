"""Embedded broker: tails the SQLite change feed (the embedded equivalent of pub/sub).

Changes written by any process on this host (workers in child processes included) appear in the
feed in commit order; the broker reads the snapshots of the watched ones in one query per batch.
Watching is immediate and race-free: a change committed after a job is watched is still ahead of
the feed cursor.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence

from progress_core.errors import StoreUnavailable
from progress_core.store.sqlite import SqliteJobStore
from progress_gateway.broker.base import MalformedMessage, ReconnectHandler, SnapshotHandler

logger = logging.getLogger("progress_gateway.broker.sqlite")


class SqliteBroker:
    def __init__(self, store: SqliteJobStore, *, poll_s: float = 0.05) -> None:
        self._store = store
        self._poll_s = poll_s
        self._jobs: set[str] = set()
        self._owners: set[str] = set()
        self._connected = False
        self._task: asyncio.Task[None] | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(
        self,
        on_snapshot: SnapshotHandler,
        on_created: SnapshotHandler,
        on_reconnect: ReconnectHandler,
    ) -> None:
        cursor = await self._store.last_cursor()
        self._connected = True
        self._task = asyncio.create_task(
            self._follow(cursor, on_snapshot, on_created, on_reconnect), name="pgw-broker-sqlite"
        )

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._connected = False

    async def watch_jobs(self, job_ids: Sequence[str]) -> None:
        self._jobs.update(job_ids)

    def unwatch_jobs(self, job_ids: Sequence[str]) -> None:
        self._jobs.difference_update(job_ids)

    async def watch_owner(self, owner: str) -> None:
        self._owners.add(owner)

    def unwatch_owner(self, owner: str) -> None:
        self._owners.discard(owner)

    async def _follow(
        self,
        cursor: int,
        on_snapshot: SnapshotHandler,
        on_created: SnapshotHandler,
        on_reconnect: ReconnectHandler,
    ) -> None:
        batches = self._store.follow_batches(cursor, poll_s=self._poll_s)
        while True:
            try:
                batch = await anext(batches)
            except StoreUnavailable as exc:
                self._connected = False
                logger.warning("change feed unreadable, retrying: %s", exc)
                await asyncio.sleep(1.0)
                batches = self._store.follow_batches(cursor, poll_s=self._poll_s)
                continue
            if not self._connected:
                self._connected = True
                await on_reconnect()
            cursor = batch[-1].cursor if batch else cursor
            created = [r.job_id for r in batch if r.created and r.owner in self._owners]
            changed = [r.job_id for r in batch if r.job_id in self._jobs]
            wanted = list(dict.fromkeys([*created, *changed]))
            if not wanted:
                continue
            try:
                raws = await self._store.snapshots(wanted)
            except StoreUnavailable as exc:
                # Treated as a gap in the feed: the next batch read runs the reconnect resync.
                self._connected = False
                logger.warning("snapshots of %d changed jobs unreadable: %s", len(wanted), exc)
                continue
            created_ids = set(created)
            for job_id, raw in zip(wanted, raws, strict=True):
                if raw is None:
                    continue
                try:
                    if job_id in created_ids:
                        on_created(raw)
                    if job_id in self._jobs:
                        on_snapshot(raw)
                except MalformedMessage as exc:
                    logger.error("dropped a malformed snapshot of job %s: %s", job_id, exc)
                except Exception:
                    # A bug: ending this task would stop every delivery while /readyz says
                    # ready. The sweep delivers the job later.
                    logger.exception("delivering job %s failed", job_id)
