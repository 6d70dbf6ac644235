"""Embedded backend: one SQLite file (WAL), safe for several writer processes on one host.

Each change is one ``BEGIN IMMEDIATE`` transaction that checks the transition
(``progress_core.transitions``), writes the snapshot, appends history and appends
``(job_id, seq)`` to the ``changes`` table. That table is the embedded equivalent of pub/sub:
``follow()`` tails it, woken cheaply by ``PRAGMA data_version``, and sees changes from every
process.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlsplit

from pydantic import JsonValue

from progress_core.errors import BadRequest, JobExists, JobNotFound, StoreUnavailable
from progress_core.models import (
    Change,
    Checkpoint,
    Create,
    HistoryEvent,
    Job,
    JobStatus,
    OwnerJobs,
    check_job_id,
    check_owner,
    time_from_ms,
)
from progress_core.store.base import (
    DEFAULT_OWNER_LIMIT,
    DEFAULT_RECENT_S,
    DEFAULT_STALE_PAGE,
    StaleCursor,
    StalePage,
    StoreOptions,
)
from progress_core.transitions import Effect, apply_change, create_job

T = TypeVar("T")

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id           TEXT PRIMARY KEY,
    owner        TEXT NOT NULL,
    kind         TEXT NOT NULL,
    params       TEXT NOT NULL,
    status       TEXT NOT NULL,
    seq          INTEGER NOT NULL,
    created_ms   INTEGER NOT NULL,
    updated_ms   INTEGER NOT NULL,
    heartbeat_ms INTEGER NOT NULL,
    expires_ms   INTEGER,
    snapshot     TEXT NOT NULL,
    checkpoint   TEXT  -- the worker's resume point (JSON), not part of the snapshot
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, expires_ms, updated_ms);
-- The reaper pages through stale jobs in (heartbeat, id) order; replaces jobs_by_heartbeat.
DROP INDEX IF EXISTS jobs_by_heartbeat;
CREATE INDEX IF NOT EXISTS jobs_by_heartbeat_id ON jobs (heartbeat_ms, id) WHERE expires_ms IS NULL;
CREATE INDEX IF NOT EXISTS jobs_by_expiry ON jobs (expires_ms) WHERE expires_ms IS NOT NULL;
CREATE TABLE IF NOT EXISTS history (
    job_id   TEXT NOT NULL,
    seq      INTEGER NOT NULL,
    at_ms    INTEGER NOT NULL,
    status   TEXT NOT NULL,
    progress REAL NOT NULL,
    stage    TEXT,
    message  TEXT,
    PRIMARY KEY (job_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS changes (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id  TEXT NOT NULL,
    owner   TEXT NOT NULL,
    seq     INTEGER NOT NULL,
    created INTEGER NOT NULL
);
"""

PURGE_EVERY_S = 600.0
CHANGES_KEPT = 100_000
BUSY_TIMEOUT_MS = 10_000


@dataclass(frozen=True, slots=True)
class ChangeRecord:
    """One entry of the change feed: job ``job_id`` reached ``seq``."""

    cursor: int
    job_id: str
    owner: str
    seq: int
    created: bool


def path_from_url(url: str) -> Path:
    """``sqlite:///relative.db``, ``sqlite:////abs/path.db`` → a filesystem path."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite" or parts.netloc or not parts.path.startswith("/"):
        raise BadRequest(f"SQLite URL must look like sqlite:///path/to/file.db, got {url!r}")
    path = unquote(parts.path[1:])
    if not path:
        raise BadRequest(f"SQLite URL names no file: {url!r}")
    return Path(path)


def _now() -> tuple[datetime, int]:
    epoch_ms = time.time_ns() // 1_000_000
    return time_from_ms(epoch_ms), epoch_ms


@contextmanager
def map_sqlite_errors(op: str, job_id: str | None = None) -> Iterator[None]:
    try:
        yield
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"SQLite failed during {op}: {exc}", job_id=job_id) from exc


class SqliteJobStore:
    def __init__(self, path: str | Path, options: StoreOptions | None = None) -> None:
        self.path = Path(path)
        self._options = options or StoreOptions()
        # One thread owns the connection: SQLite calls block, the event loop must not.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgw-sqlite")
        self._conn: sqlite3.Connection | None = None
        self._last_purge = 0.0
        # data_version only moves for other connections' commits; count our own.
        self._own_commits = 0

    # -- plumbing ------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path.parent and not self.path.parent.exists():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
            conn.execute("PRAGMA journal_mode = WAL")
            # NORMAL in WAL mode survives a killed process; only an OS crash can lose the tail.
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.executescript(SCHEMA)
            _add_checkpoint_column(conn)
            self._conn = conn
        return self._conn

    async def _call(self, op: str, job_id: str | None, fn: Callable[[sqlite3.Connection], T]) -> T:
        def run() -> T:
            with map_sqlite_errors(op, job_id):
                return fn(self._connection())

        return await asyncio.get_running_loop().run_in_executor(self._executor, run)

    @contextmanager
    def _transaction(self, conn: sqlite3.Connection) -> Iterator[None]:
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    # -- writes --------------------------------------------------------------------------------

    async def create(self, change: Create) -> Job:
        return await self._call("create", change.job_id, lambda conn: self._create(conn, change))

    def _create(self, conn: sqlite3.Connection, change: Create) -> Job:
        now, now_ms = _now()
        with self._transaction(conn):
            row = conn.execute(
                "SELECT owner, kind, params, snapshot FROM jobs WHERE id = ? "
                "AND (expires_ms IS NULL OR expires_ms > ?)",
                (change.job_id, now_ms),
            ).fetchone()
            if row is not None:
                if (row[0], row[1], row[2]) == (change.owner, change.kind, change.params_json):
                    return Job.model_validate_json(row[3])
                raise JobExists(f"job {change.job_id} already exists", job_id=change.job_id)
            conn.execute("DELETE FROM jobs WHERE id = ?", (change.job_id,))
            conn.execute("DELETE FROM history WHERE job_id = ?", (change.job_id,))
            job = create_job(change, now)
            conn.execute(
                "INSERT INTO jobs (id, owner, kind, params, status, seq, created_ms, updated_ms,"
                " heartbeat_ms, expires_ms, snapshot) VALUES (?, ?, ?, ?, ?, 1, ?, ?, ?, NULL, ?)",
                (
                    job.id,
                    job.owner,
                    job.kind,
                    change.params_json,
                    job.status.value,
                    now_ms,
                    now_ms,
                    now_ms,
                    job.model_dump_json(),
                ),
            )
            self._append(conn, job, now_ms, created=True)
        self._own_commits += 1
        return job

    async def apply(self, job_id: str, change: Change, *, change_id: str | None = None) -> Job:
        # ``change_id`` is for stores that lose replies; a failed transaction here wrote nothing.
        check_job_id(job_id)
        return await self._call(
            type(change).__name__.lower(), job_id, lambda conn: self._apply(conn, job_id, change)
        )

    def _apply(self, conn: sqlite3.Connection, job_id: str, change: Change) -> Job:
        now, now_ms = _now()
        with self._transaction(conn):
            job = self._load(conn, job_id, now_ms)
            outcome = apply_change(job, change, now)
            new = outcome.job
            if outcome.effect is Effect.NONE:
                return new
            expires = now_ms + self._options.retention_s * 1000 if new.terminal else None
            conn.execute(
                "UPDATE jobs SET status = ?, seq = ?, updated_ms = ?, heartbeat_ms = ?,"
                " expires_ms = ?, snapshot = ? WHERE id = ?",
                (
                    new.status.value,
                    new.seq,
                    _ms(new.updated_at),
                    _ms(new.heartbeat_at),
                    expires,
                    new.model_dump_json(),
                    job_id,
                ),
            )
            if isinstance(change, Checkpoint):
                conn.execute(
                    "UPDATE jobs SET checkpoint = ? WHERE id = ?", (change.data_json, job_id)
                )
            if outcome.effect is Effect.PUBLISH:
                self._append(conn, new, now_ms, created=False)
        self._own_commits += 1
        if now_ms / 1000 - self._last_purge > PURGE_EVERY_S:
            self._purge(conn, now_ms)
        return new

    def _append(self, conn: sqlite3.Connection, job: Job, now_ms: int, *, created: bool) -> None:
        conn.execute(
            "INSERT INTO history (job_id, seq, at_ms, status, progress, stage, message)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (job.id, job.seq, now_ms, job.status.value, job.progress, job.stage, job.message),
        )
        if job.seq > self._options.history_maxlen:
            conn.execute(
                "DELETE FROM history WHERE job_id = ? AND seq <= ?",
                (job.id, job.seq - self._options.history_maxlen),
            )
        conn.execute(
            "INSERT INTO changes (job_id, owner, seq, created) VALUES (?, ?, ?, ?)",
            (job.id, job.owner, job.seq, int(created)),
        )

    def _purge(self, conn: sqlite3.Connection, now_ms: int) -> None:
        """Drop expired jobs and old change-feed rows; cheap, and run at most every few minutes."""
        self._last_purge = now_ms / 1000
        with self._transaction(conn):
            expired = "SELECT id FROM jobs WHERE expires_ms IS NOT NULL AND expires_ms <= ?"
            conn.execute(f"DELETE FROM history WHERE job_id IN ({expired})", (now_ms,))
            conn.execute(
                "DELETE FROM jobs WHERE expires_ms IS NOT NULL AND expires_ms <= ?", (now_ms,)
            )
            conn.execute(
                "DELETE FROM changes WHERE id <= (SELECT MAX(id) FROM changes) - ?", (CHANGES_KEPT,)
            )

    def _load(self, conn: sqlite3.Connection, job_id: str, now_ms: int) -> Job:
        row = conn.execute(
            "SELECT snapshot FROM jobs WHERE id = ? AND (expires_ms IS NULL OR expires_ms > ?)",
            (job_id, now_ms),
        ).fetchone()
        if row is None:
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        return Job.model_validate_json(row[0])

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        check_job_id(job_id)
        return await self._call("get", job_id, lambda conn: self._load(conn, job_id, _now()[1]))

    async def last_checkpoint(self, job_id: str) -> JsonValue:
        check_job_id(job_id)

        def read(conn: sqlite3.Connection) -> JsonValue:
            row = conn.execute(
                "SELECT checkpoint FROM jobs WHERE id = ?"
                " AND (expires_ms IS NULL OR expires_ms > ?)",
                (job_id, _now()[1]),
            ).fetchone()
            if row is None:
                raise JobNotFound(f"job {job_id} not found", job_id=job_id)
            data: JsonValue = None if row[0] is None else json.loads(row[0])
            return data

        return await self._call("last_checkpoint", job_id, read)

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        raws = await self.snapshots(job_ids)
        return [None if raw is None else Job.model_validate_json(raw) for raw in raws]

    async def history(self, job_id: str) -> list[HistoryEvent]:
        check_job_id(job_id)

        def read(conn: sqlite3.Connection) -> list[HistoryEvent]:
            self._load(conn, job_id, _now()[1])
            rows = conn.execute(
                "SELECT seq, at_ms, status, progress, stage, message FROM history"
                " WHERE job_id = ? ORDER BY seq",
                (job_id,),
            ).fetchall()
            return [
                HistoryEvent(
                    seq=row[0],
                    at=time_from_ms(row[1]),
                    status=JobStatus(row[2]),
                    progress=row[3],
                    stage=row[4],
                    message=row[5],
                )
                for row in rows
            ]

        return await self._call("history", job_id, read)

    async def owner_jobs(
        self, owner: str, *, recent_s: float = DEFAULT_RECENT_S, limit: int = DEFAULT_OWNER_LIMIT
    ) -> OwnerJobs:
        check_owner(owner)

        def read(conn: sqlite3.Connection) -> OwnerJobs:
            now_ms = _now()[1]
            active = conn.execute(
                "SELECT snapshot FROM jobs WHERE owner = ? AND expires_ms IS NULL"
                " ORDER BY created_ms DESC LIMIT ?",
                (owner, limit),
            ).fetchall()
            recent = conn.execute(
                "SELECT snapshot FROM jobs WHERE owner = ? AND expires_ms > ? AND updated_ms >= ?"
                " ORDER BY updated_ms DESC LIMIT ?",
                (owner, now_ms, now_ms - int(recent_s * 1000), limit),
            ).fetchall()
            return OwnerJobs(
                active=[Job.model_validate_json(row[0]) for row in active],
                recent=[Job.model_validate_json(row[0]) for row in recent],
            )

        return await self._call("owner_jobs", None, read)

    async def snapshots(self, job_ids: Sequence[str]) -> list[str | None]:
        for job_id in job_ids:
            check_job_id(job_id)
        rows = await self._rows("snapshots", job_ids, "snapshot")
        return [None if row is None else str(row) for row in rows]

    async def seqs(self, job_ids: Sequence[str]) -> list[int | None]:
        rows = await self._rows("seqs", job_ids, "seq")
        return [None if row is None else int(str(row)) for row in rows]

    async def _rows(self, op: str, job_ids: Sequence[str], column: str) -> list[object | None]:
        if not job_ids:
            return []

        def read(conn: sqlite3.Connection) -> list[object | None]:
            now_ms = _now()[1]
            found: dict[str, object] = {}
            for start in range(0, len(job_ids), 500):
                chunk = list(job_ids[start : start + 500])
                marks = ",".join("?" * len(chunk))
                rows = conn.execute(
                    f"SELECT id, {column} FROM jobs WHERE id IN ({marks})"
                    " AND (expires_ms IS NULL OR expires_ms > ?)",
                    (*chunk, now_ms),
                ).fetchall()
                found.update((row[0], row[1]) for row in rows)
            return [found.get(job_id) for job_id in job_ids]

        return await self._call(op, None, read)

    async def stale_jobs(
        self,
        heartbeat_before_ms: float,
        limit: int = DEFAULT_STALE_PAGE,
        after: StaleCursor | None = None,
    ) -> StalePage:
        def read(conn: sqlite3.Connection) -> StalePage:
            low_ms, low_id = (-1.0, "") if after is None else after
            rows = conn.execute(
                "SELECT heartbeat_ms, id, snapshot FROM jobs WHERE expires_ms IS NULL"
                " AND heartbeat_ms < ? AND (heartbeat_ms, id) > (?, ?)"
                " ORDER BY heartbeat_ms, id LIMIT ?",
                (heartbeat_before_ms, low_ms, low_id, limit),
            ).fetchall()
            jobs = [Job.model_validate_json(row[2]) for row in rows]
            at_end = len(rows) < limit
            return StalePage(jobs, None if at_end else (float(rows[-1][0]), rows[-1][1]))

        return await self._call("stale_jobs", None, read)

    # -- change feed ---------------------------------------------------------------------------

    async def changes_after(self, cursor: int, limit: int = 1000) -> list[ChangeRecord]:
        """Change-feed entries with ``cursor`` greater than the given one, oldest first."""

        def read(conn: sqlite3.Connection) -> list[ChangeRecord]:
            rows = conn.execute(
                "SELECT id, job_id, owner, seq, created FROM changes"
                " WHERE id > ? ORDER BY id LIMIT ?",
                (cursor, limit),
            ).fetchall()
            return [ChangeRecord(row[0], row[1], row[2], row[3], bool(row[4])) for row in rows]

        return await self._call("changes_after", None, read)

    async def last_cursor(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT COALESCE(MAX(id), 0) FROM changes").fetchone()
            return int(row[0])

        return await self._call("last_cursor", None, read)

    async def follow(self, cursor: int, *, poll_s: float = 0.05) -> AsyncIterator[ChangeRecord]:
        """Tail the change feed from ``cursor`` forever, one record at a time."""
        async for batch in self.follow_batches(cursor, poll_s=poll_s):
            for record in batch:
                yield record

    async def follow_batches(
        self, cursor: int, *, poll_s: float = 0.05
    ) -> AsyncIterator[list[ChangeRecord]]:
        """Tail the change feed from ``cursor`` forever, a batch per wake-up, across processes.

        ``PRAGMA data_version`` changes when another connection commits, so an idle poll costs one
        pragma, not a query; our own commits are counted separately.
        """
        version: tuple[int, int] = (-1, -1)
        while True:
            current = await self._call(
                "data_version",
                None,
                lambda conn: (conn.execute("PRAGMA data_version").fetchone()[0], self._own_commits),
            )
            if current != version:
                version = current
                while batch := await self.changes_after(cursor):
                    yield batch
                    cursor = batch[-1].cursor
            await asyncio.sleep(poll_s)

    async def ping(self) -> None:
        await self._call("ping", None, lambda conn: conn.execute("SELECT 1").fetchone())

    async def aclose(self) -> None:
        def close(_: sqlite3.Connection | None = None) -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        await asyncio.get_running_loop().run_in_executor(self._executor, close)
        self._executor.shutdown(wait=True)


def _add_checkpoint_column(conn: sqlite3.Connection) -> None:
    """Migrate a file made before checkpoints existed (``CREATE TABLE IF NOT EXISTS`` keeps the
    old table as it was). Another process may add the column first: that is fine."""
    columns = {row[1] for row in conn.execute("PRAGMA table_info(jobs)")}
    if "checkpoint" in columns:
        return
    try:
        conn.execute("ALTER TABLE jobs ADD COLUMN checkpoint TEXT")
    except sqlite3.OperationalError as exc:
        if "duplicate column" not in str(exc):
            raise


def _ms(moment: datetime) -> int:
    return round(moment.astimezone(UTC).timestamp() * 1000)
