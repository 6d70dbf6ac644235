"""Per-connection outbox: bounded, conflating, ordered.

Pending items are kept in arrival order. An update for a job that still has a pending update
replaces it in place (conflation): a slow client skips intermediate snapshots but always gets the
newest, and since nothing follows a terminal snapshot, the terminal one is never skipped. Memory is
bounded by the number of watched jobs plus ``max_controls`` control frames (acks, errors, pongs).
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")


class OutboxOverflow(Exception):
    """Too many control frames are waiting: the client does not read; close it."""


class Outbox(Generic[T]):
    __slots__ = (
        "_controls",
        "_counter",
        "_max_controls",
        "_pending",
        "_seqs",
        "_waiter",
        "_watching",
        "closed",
        "notify",
        "write_now",
    )

    def __init__(self, max_controls: int = 256) -> None:
        self._pending: dict[str | int, T | str] = {}
        self._seqs: dict[str, int] = {}
        self._watching: set[str] = set()
        self._controls = 0
        self._max_controls = max_controls
        self._counter = itertools.count()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        # Called synchronously when the outbox goes from empty to non-empty (starts a writer).
        self.notify: Callable[[], None] | None = None
        # Writes an update at once when nothing is pending, in the caller's stack (the hub's
        # fan-out loop), or answers False to have it queued (flow control, a closing socket).
        # The owner sets it to None while a writer task drains the outbox, which keeps order.
        self.write_now: Callable[[T], bool] | None = None

    # -- what the connection watches -----------------------------------------------------------

    def track(self, job_id: str) -> None:
        self._watching.add(job_id)

    def untrack(self, job_id: str) -> None:
        """Stop watching (the job finished) but keep a pending frame: it is the terminal one.

        The job's seq is kept too, so a late path (a create notice, a resync) that offers the
        same terminal snapshot again is refused: the client gets it exactly once.
        """
        self._watching.discard(job_id)

    def forget(self, job_id: str) -> None:
        """The client unsubscribed: drop everything about the job."""
        self._watching.discard(job_id)
        self._pending.pop(job_id, None)
        self._seqs.pop(job_id, None)

    def watches(self, job_id: str) -> bool:
        return job_id in self._watching

    def job_ids(self) -> Iterator[str]:
        return iter(list(self._watching))

    def watch_count(self) -> int:
        return len(self._watching)

    # -- queueing ------------------------------------------------------------------------------

    def known_seq(self, job_id: str) -> int:
        """The newest ``seq`` of the job already queued or sent (0 if none)."""
        return self._seqs.get(job_id, 0)

    def set_known_seq(self, job_id: str, seq: int) -> None:
        """Record what the client already has, so nothing at or below it is sent."""
        if seq > self._seqs.get(job_id, 0):
            self._seqs[job_id] = seq

    def offer_update(self, job_id: str, seq: int, item: T) -> int:
        """Queue a job's snapshot: 1 if it replaced a pending one, 0 if queued, -1 if not newer."""
        if self.closed or seq <= self._seqs.get(job_id, 0):
            return -1
        self._seqs[job_id] = seq
        pending = self._pending
        if not pending:
            write_now = self.write_now
            if write_now is not None and write_now(item):
                return 0
            pending[job_id] = item
            self._wake()
            return 0
        replaced = job_id in pending
        pending[job_id] = item
        self._wake()
        return 1 if replaced else 0

    def offer_control(self, frame: str) -> None:
        if self.closed:
            return
        if self._controls >= self._max_controls:
            raise OutboxOverflow(f"{self._controls} control frames are waiting to be sent")
        self._controls += 1
        self._pending[next(self._counter)] = frame
        self._wake()

    async def take(self) -> list[T | str]:
        """Wait for pending items and take them all, in order."""
        while not self._pending and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        items = list(self._pending.values())
        self._pending.clear()
        self._controls = 0
        return items

    def _wake(self) -> None:
        if self.notify is not None and len(self._pending) == 1:
            self.notify()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_nowait(self) -> list[T | str]:
        items = list(self._pending.values())
        self._pending.clear()
        self._controls = 0
        return items

    def close(self) -> None:
        self.closed = True
        self._pending.clear()
        self._wake()

    def __len__(self) -> int:
        return len(self._pending)
