"""The store protocol every backend implements (Redis, embedded SQLite).

The store is the single source of truth for jobs: nothing above it keeps its own copy. Backends
raise only ``progress_core.errors`` exceptions; driver errors become ``StoreUnavailable``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from pydantic import JsonValue

from progress_core.models import Change, Create, HistoryEvent, Job, OwnerJobs

DEFAULT_RETENTION_S = 7 * 24 * 3600
DEFAULT_HISTORY_MAXLEN = 500
DEFAULT_RECENT_S = 24 * 3600
DEFAULT_OWNER_LIMIT = 500
DEFAULT_STALE_PAGE = 500

# Where a scan of stale jobs stands: the (heartbeat index score in ms, job id) last read.
StaleCursor: TypeAlias = tuple[float, str]


@dataclass(frozen=True, slots=True)
class StoreOptions:
    """Behaviour shared by every backend; the URL chooses the backend, these tune it."""

    prefix: str = "pgw"
    retention_s: int = DEFAULT_RETENTION_S
    history_maxlen: int = DEFAULT_HISTORY_MAXLEN


@dataclass(frozen=True, slots=True)
class StalePage:
    """One page of a scan over stale jobs; ``next`` is ``None`` once the scan reached the end."""

    jobs: list[Job]
    next: StaleCursor | None


@runtime_checkable
class JobStore(Protocol):
    async def create(self, change: Create) -> Job:
        """Create a job (``queued``, ``seq`` 1) and publish it.

        An identical repeat of a create (same id, owner, kind and params) returns the existing job,
        so a retried call whose reply was lost is harmless; any other reuse of the id raises
        ``JobExists``.
        """
        ...

    async def apply(self, job_id: str, change: Change, *, change_id: str | None = None) -> Job:
        """Apply one change atomically and return the resulting snapshot.

        Guarantee: the transition is checked, the snapshot written, the history appended and the
        snapshot published as one atomic step, with ``seq`` + 1; concurrent writers never lose an
        update. A change to a terminal job raises ``JobFinished`` and writes nothing. A heartbeat
        only refreshes ``heartbeat_at`` (no ``seq`` change, no publish); a repeated cancel request
        returns the job unchanged.

        ``change_id`` makes retries of one call idempotent: a caller that got
        ``StoreUnavailable`` cannot know whether the change was applied (a stalled Redis runs the
        command once it wakes), so it retries with the same id and gets the current snapshot if
        the change is already in (never ``JobFinished`` for its own final state).

        A ``Checkpoint`` replaces the job's stored checkpoint and refreshes ``heartbeat_at`` like
        a heartbeat (no ``seq`` change, no publish: the checkpoint is not in the snapshot). It is
        accepted only while the job runs (``Conflict`` when queued, ``JobFinished`` when ended).
        """
        ...

    async def last_checkpoint(self, job_id: str) -> JsonValue:
        """The job's last stored checkpoint, ``None`` if none was stored; ``JobNotFound`` if
        there is no such job. The checkpoint lives with the job and expires with it."""
        ...

    async def get(self, job_id: str) -> Job:
        """The latest snapshot; ``JobNotFound`` if there is no such job (or it expired)."""
        ...

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        """Snapshots in one round trip, ``None`` where a job does not exist."""
        ...

    async def snapshots(self, job_ids: Sequence[str]) -> list[str | None]:
        """Stored snapshots as JSON text, exactly as published (no re-encoding for fan-out)."""
        ...

    async def seqs(self, job_ids: Sequence[str]) -> list[int | None]:
        """Current ``seq`` of each job, ``None`` where missing: the cheap anti-entropy probe."""
        ...

    async def history(self, job_id: str) -> list[HistoryEvent]:
        """The bounded timeline of changes, oldest first."""
        ...

    async def owner_jobs(
        self, owner: str, *, recent_s: float = DEFAULT_RECENT_S, limit: int = DEFAULT_OWNER_LIMIT
    ) -> OwnerJobs:
        """The owner's non-terminal jobs, and jobs finished within ``recent_s``, newest first.

        Read from per-owner indexes (never a scan of all jobs) and reconciled against the jobs
        themselves, so an index entry left behind by a crash never shows a wrong state.
        """
        ...

    async def stale_jobs(
        self,
        heartbeat_before_ms: float,
        limit: int = DEFAULT_STALE_PAGE,
        after: StaleCursor | None = None,
    ) -> StalePage:
        """One page of non-terminal jobs whose last heartbeat is older than the given time (the
        reaper's input), from the heartbeat index entries after ``after`` in (heartbeat, id)
        order, at most ``limit`` entries read; index hints are confirmed against each job's own
        heartbeat.

        Guarantee: following ``next`` from ``None`` until it is ``None`` again reads every job
        stale during the whole scan once, however many stay stale; a job's position only moves
        forward (heartbeats), never back past the cursor.
        """
        ...

    async def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""
        ...

    async def aclose(self) -> None: ...
