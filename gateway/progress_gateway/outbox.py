"""Per-connection outbox: bounded, conflating, ordered.

Pending items are kept in arrival order. An update for a job that still has a pending update
replaces it in place (conflation): a slow client skips intermediate snapshots but always gets the
newest, and since nothing follows a terminal snapshot, the terminal one is never skipped. Memory is
bounded by the number of watched jobs, ``max_bytes`` of pending frames, and the seqs of at most
``MAX_FINISHED`` finished jobs (kept so a late duplicate is refused).

Pending bytes count what waits for the connection's writer (snapshots and control frames: acks,
errors, pongs). The answers to one client frame may go past ``max_bytes`` (a client restoring
1,000 jobs gets every answer); the owner reads no further frame while they are ``backlogged``.
Past ``max_bytes`` otherwise (updates the client falls behind on), ``overflow`` is called once
and the outbox closes.

``owner`` is who may receive what this outbox holds: the hub refuses to put another owner's
snapshot in it, whatever path the snapshot took.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar

T = TypeVar("T")

# Finished jobs whose seq is remembered per outbox (oldest forgotten first): enough to refuse the
# duplicates a resync or a create notice may offer shortly after the terminal snapshot.
MAX_FINISHED = 1024


class Outbox(Generic[T]):
    __slots__ = (
        "_answer_bytes",
        "_bytes",
        "_counter",
        "_finished",
        "_max_bytes",
        "_pending",
        "_seqs",
        "_size",
        "_waiter",
        "_watching",
        "answering",
        "closed",
        "notify",
        "overflow",
        "owner",
        "write_now",
    )

    def __init__(
        self,
        owner: str | None = None,
        *,
        max_bytes: int | None = None,
        size: Callable[[T], int] | None = None,
    ) -> None:
        self.owner = owner
        self._pending: dict[str | int, T | str] = {}
        self._seqs: dict[str, int] = {}
        self._finished: dict[str, int] = {}
        self._watching: set[str] = set()
        # Pending bytes (``size`` of updates, length of control frames); none are counted
        # without a ``size``, and without ``max_bytes`` nothing overflows.
        self._bytes = 0
        self._answer_bytes = 0
        self._max_bytes = max_bytes
        self._size = size
        self._counter = itertools.count()
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False
        # Called synchronously when the outbox goes from empty to non-empty (starts a writer).
        self.notify: Callable[[], None] | None = None
        # Writes an update at once when nothing is pending, in the caller's stack (the hub's
        # fan-out loop), or answers False to have it queued (flow control, a closing socket).
        # The owner sets it to None while a writer task drains the outbox, which keeps order.
        self.write_now: Callable[[T], bool] | None = None
        # True while the owner answers one client frame (see ``begin_answer``).
        self.answering = False
        # Called once, synchronously, when pending bytes pass ``max_bytes``.
        self.overflow: Callable[[], None] | None = None

    # -- what the connection watches -----------------------------------------------------------

    def track(self, job_id: str) -> None:
        self._watching.add(job_id)

    def untrack(self, job_id: str) -> None:
        """Stop watching (the job finished) but keep a pending frame: it is the terminal one.

        The job's seq is kept too (among the last ``MAX_FINISHED``), so a late path (a create
        notice, a resync) that offers the same terminal snapshot again is refused: the client
        gets it exactly once.
        """
        self._watching.discard(job_id)
        seq = self._seqs.pop(job_id, None)
        if seq is not None:
            finished = self._finished
            finished[job_id] = seq
            if len(finished) > MAX_FINISHED:
                del finished[next(iter(finished))]

    def forget(self, job_id: str) -> None:
        """The client unsubscribed: drop everything about the job."""
        self._watching.discard(job_id)
        dropped = self._pending.pop(job_id, None)
        if dropped is not None and self._size is not None:
            self._bytes -= self._size(dropped)  # type: ignore[arg-type]  # keyed by job: T
        self._seqs.pop(job_id, None)
        self._finished.pop(job_id, None)

    def watches(self, job_id: str) -> bool:
        return job_id in self._watching

    def job_ids(self) -> Iterator[str]:
        return iter(list(self._watching))

    def watch_count(self) -> int:
        return len(self._watching)

    # -- queueing ------------------------------------------------------------------------------

    def known_seq(self, job_id: str) -> int:
        """The newest ``seq`` of the job already queued or sent (0 if none)."""
        seq = self._seqs.get(job_id)
        return self._finished.get(job_id, 0) if seq is None else seq

    def set_known_seq(self, job_id: str, seq: int) -> None:
        """Record what the client already has, so nothing at or below it is sent."""
        if seq > self.known_seq(job_id):
            self._seqs[job_id] = seq

    def offer_update(self, job_id: str, seq: int, item: T) -> int:
        """Queue a job's snapshot: 1 if it replaced a pending one, 0 if queued, -1 if not newer."""
        known = self._seqs.get(job_id)
        if known is None:
            known = self._finished.get(job_id, 0)
        if self.closed or seq <= known:
            return -1
        self._seqs[job_id] = seq
        pending = self._pending
        if not pending:
            write_now = self.write_now
            if write_now is not None and write_now(item):
                return 0
            replaced = None
        else:
            replaced = pending.get(job_id)
        pending[job_id] = item
        size = self._size
        if size is not None:
            added = size(item) - (0 if replaced is None else size(replaced))  # type: ignore[arg-type]
            self._bytes += added
            if self.answering:
                self._answer_bytes += added
            elif self._max_bytes is not None and self._bytes - self._answer_bytes > self._max_bytes:
                self._overflowed()
                return -1
        self._wake()
        return 0 if replaced is None else 1

    def offer_reset(self, job_id: str, seq: int, item: T) -> bool:
        """Queue the store's snapshot although its ``seq`` is not newer: the store went back.

        The client replaces its state with it (the item is marked as a reset) and ``seq``
        counts from there. False if the outbox is closed.
        """
        if self.closed:
            return False
        self._finished.pop(job_id, None)
        self._seqs[job_id] = seq
        replaced = self._pending.get(job_id)
        self._pending[job_id] = item
        size = self._size
        if size is not None:
            self._bytes += size(item) - (0 if replaced is None else size(replaced))  # type: ignore[arg-type]
            if self._max_bytes is not None and self._bytes - self._answer_bytes > self._max_bytes:
                self._overflowed()
                return False
        self._wake()
        return True

    def offer_control(self, frame: str) -> None:
        if self.closed:
            return
        self._pending[next(self._counter)] = frame
        self._bytes += len(frame)
        if self.answering:
            self._answer_bytes += len(frame)
        elif self._max_bytes is not None and self._bytes - self._answer_bytes > self._max_bytes:
            self._overflowed()
            return
        self._wake()

    def backlogged(self) -> bool:
        """Over ``max_bytes`` wait, earlier answers included: answer no more frames yet."""
        return self._max_bytes is not None and self._bytes > self._max_bytes

    def begin_answer(self) -> None:
        """The owner answers a client frame: until the next one, its answers do not count
        against ``max_bytes`` (earlier answers do again)."""
        self._answer_bytes = 0
        self.answering = True

    def end_answer(self) -> None:
        self.answering = False

    def pending_bytes(self) -> int:
        return self._bytes

    def _overflowed(self) -> None:
        overflow, self.overflow = self.overflow, None
        self.close()
        if overflow is not None:
            overflow()

    async def take(self) -> list[T | str]:
        """Wait for pending items and take them all, in order."""
        while not self._pending and not self.closed:
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self.take_nowait()

    def _wake(self) -> None:
        if self.notify is not None and len(self._pending) == 1:
            self.notify()
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def take_nowait(self) -> list[T | str]:
        items = list(self._pending.values())
        self._pending.clear()
        self._bytes = self._answer_bytes = 0
        return items

    def close(self) -> None:
        self.closed = True
        self._pending.clear()
        self._bytes = self._answer_bytes = 0
        self._wake()

    def __len__(self) -> int:
        return len(self._pending)
