"""Redis backend: each change is one server-side script (``lua/apply.lua``), one round trip.

Keys: docs/design.md §4. Every key of a job carries the hash tag ``{<id>}`` so the script touches a
single slot; owner and heartbeat indexes are separate single-key commands, written so that a crash
between the script and the index leaves only a hint that readers reconcile, never a lost job.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
import uuid
from collections import deque
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from importlib import resources
from typing import Any

import redis.asyncio as aioredis
from pydantic import JsonValue
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from progress_core.errors import Conflict, JobExists, JobFinished, JobNotFound, StoreUnavailable
from progress_core.models import (
    AttachCall,
    Cancel,
    Change,
    Checkpoint,
    Create,
    Fail,
    Heartbeat,
    HistoryEvent,
    Job,
    JobStatus,
    OwnerJobs,
    RequestCancel,
    Start,
    Succeed,
    Update,
    check_job_id,
    check_owner,
)
from progress_core.redis_client import StallAwarePool, connection_pool
from progress_core.store.base import (
    DEFAULT_OWNER_LIMIT,
    DEFAULT_RECENT_S,
    DEFAULT_STALE_PAGE,
    StaleCursor,
    StalePage,
    StoreOptions,
)

APPLY_LUA = resources.files("progress_core.store").joinpath("lua/apply.lua").read_text("utf-8")
MAX_CONNECTIONS = 64
# How long a burst may wait for a pooled connection while Redis answers (a stalled Redis: see
# StallAwarePool). At 1 s, 1,200-1,500 of 2,000 concurrent owner reads failed on a healthy Redis.
POOL_TIMEOUT_S = 5.0
APPLY_SHA = hashlib.sha1(APPLY_LUA.encode("utf-8")).hexdigest()
# KEYS: job hashes. The seq of each (false where missing): one command and one reply for a whole
# resync slice, where a pipeline of HGETs cost redis-py ~20 µs of Python per job. (A Redis
# Cluster would need the keys grouped by slot.)
SEQS_LUA = """
local seqs = {}
for i, key in ipairs(KEYS) do
  seqs[i] = redis.call('HGET', key, 'seq') or false
end
return seqs
"""
SEQS_BATCH = 1000


@contextmanager
def map_redis_errors(op: str, job_id: str | None = None) -> Iterator[None]:
    """Translate redis-py errors at the boundary: nothing above the store sees ``redis.*``."""
    try:
        yield
    except (RedisConnectionError, RedisTimeoutError) as exc:
        raise StoreUnavailable(f"Redis unreachable during {op}: {exc}", job_id=job_id) from exc
    except RedisError as exc:
        raise StoreUnavailable(f"Redis failed during {op}: {exc}", job_id=job_id) from exc


class CommandBatcher:
    """Coalesces the commands of concurrent callers into pipelines (auto-pipelining).

    redis-py spends ~45 µs of client CPU per command (pool checkout, retry wrapper, timeouts,
    packing, one send and one read per command); a pipeline pays most of that once per batch.
    Callers queue their command and await a future; a drain task sends what is queued as one
    ``transaction=False`` pipeline. Up to ``max_inflight`` pipelines (pooled connections) run at
    once, each of at most ``max_batch`` commands, so the client packs the next batch while Redis
    runs the previous one. Each command (an ``apply`` script, a subscriber's snapshot read) is
    still atomic, with its own reply or error; only the transport is shared. A caller that finds
    nothing else in flight sends its command directly, so a lone caller pays nothing for the
    batching.
    """

    def __init__(
        self, client: aioredis.Redis, *, max_batch: int = 32, max_inflight: int = 4
    ) -> None:
        self._client = client
        self._max_batch = max_batch
        self._max_inflight = max_inflight
        self._queue: deque[tuple[tuple[str | int, ...], asyncio.Future[Any]]] = deque()
        self._drains: set[asyncio.Task[None]] = set()  # strong refs: the loop keeps weak ones
        self._direct = False  # a lone command is in flight outside any batch

    async def execute(self, *args: str | int) -> Any:
        """One command (name first) and its reply, sent alone or in the next pipeline."""
        if not self._direct and not self._drains:
            self._direct = True
            try:
                return await self._client.execute_command(*args)  # type: ignore[no-untyped-call]
            finally:
                self._direct = False
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        self._queue.append((args, future))
        if len(self._drains) < self._max_inflight:
            task = loop.create_task(self._drain())
            self._drains.add(task)
            task.add_done_callback(self._drains.discard)
        return await future

    async def _drain(self) -> None:
        try:
            await self._send_queued()
        finally:
            # Leave the set now, not a loop step later in the done callback: the callers woken
            # by this drain run first, and a command one of them queues meanwhile would find
            # the set full of finished drains and wait for some later caller to start one.
            self._drains.discard(asyncio.current_task())

    async def _send_queued(self) -> None:
        await asyncio.sleep(0)  # let every caller that is ready now queue its command first
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(self._max_batch, len(queue)))]
            batch = [(args, future) for args, future in batch if not future.done()]
            if not batch:
                continue
            try:
                async with self._client.pipeline(transaction=False) as pipe:
                    for args, _ in batch:
                        pipe.execute_command(*args)
                    replies = await pipe.execute(raise_on_error=False)
            except Exception as exc:  # noqa: BLE001 - every caller of the batch gets it
                # And every caller queued behind it: their batches would go to the server that
                # just failed to answer, waiting one socket timeout after another.
                batch += [queue.popleft() for _ in range(len(queue))]
                for _, future in batch:
                    if not future.done():
                        future.set_exception(exc)
                return
            except BaseException:
                for _, future in batch:
                    future.cancel()
                raise
            for (_, future), reply in zip(batch, replies, strict=True):
                if future.done():
                    continue  # the caller was cancelled; the script ran all the same
                if isinstance(reply, Exception):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)


class RedisKeys:
    """Key and channel names of docs/design.md §4 under a configurable prefix."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.active = f"{prefix}:active"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:job"

    def history(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:history"

    def changes(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}:changes"

    def channel(self, job_id: str) -> str:
        return f"{self.prefix}:{{{job_id}}}"

    def owner_active(self, owner: str) -> str:
        return f"{self.prefix}:owner:{{{owner}}}:active"

    def owner_done(self, owner: str) -> str:
        return f"{self.prefix}:owner:{{{owner}}}:done"

    def owner_channel(self, owner: str) -> str:
        return f"{self.prefix}:owner:{{{owner}}}"


def _change_args(change: Change) -> tuple[str, list[str]]:
    if isinstance(change, Update):
        mask = (
            ("p" if change.progress is not None else "")
            + ("s" if change.stage is not None else "")
            + ("m" if change.message is not None else "")
        )
        progress = "" if change.progress is None else repr(change.progress)
        return "update", [mask, progress, change.stage or "", change.message or ""]
    if isinstance(change, Heartbeat):
        return "heartbeat", []
    if isinstance(change, Checkpoint):
        return "checkpoint", [change.data_json]
    if isinstance(change, Start):
        return "start", []
    if isinstance(change, Succeed):
        return "succeed", [change.result_json]
    if isinstance(change, Fail):
        return "fail", [change.code, change.message]
    if isinstance(change, RequestCancel):
        return "request_cancel", []
    if isinstance(change, Cancel):
        return "cancel", [change.message]
    if isinstance(change, AttachCall):
        return "attach_call", [change.executor, change.call_id]
    raise TypeError(f"unknown change {change!r}")  # pragma: no cover - closed union


class RedisJobStore:
    def __init__(self, client: aioredis.Redis, options: StoreOptions) -> None:
        self._redis = client
        self._options = options
        self.keys = RedisKeys(options.prefix)
        self._static_args = [str(options.retention_s), str(options.history_maxlen)]
        self._batcher = CommandBatcher(client)
        self._seqs = client.register_script(SEQS_LUA)

    @classmethod
    def from_url(cls, url: str, options: StoreOptions | None = None) -> RedisJobStore:
        # A blocking pool: with redis-py's default pool, the 101st concurrent command raises
        # "Too many connections" instead of waiting, which a reconnect storm reaches at once.
        # Timeouts, retries and the pool's patience are ``progress_core.redis_client``'s: a stalled
        # Redis fails a command within ~1 s and a request answers 503 within ~2 s.
        pool = connection_pool(
            url,
            StallAwarePool,
            max_connections=MAX_CONNECTIONS,
            timeout=POOL_TIMEOUT_S,
            health_check_interval=30,
        )
        return cls(
            aioredis.Redis.from_pool(pool),
            options or StoreOptions(),
        )

    # -- writes --------------------------------------------------------------------------------

    async def create(self, change: Create) -> Job:
        keys = self.keys
        with map_redis_errors("create", change.job_id):
            # Index hints first: if we die before the script, readers drop the dangling id; the
            # other order could leave a live job that /exports/active never shows. NX: a retried
            # create must not move an existing job's heartbeat score in the reaper's index.
            async with self._redis.pipeline(transaction=False) as pipe:
                created_ms = time.time() * 1000
                pipe.zadd(keys.owner_active(change.owner), {change.job_id: created_ms}, nx=True)
                pipe.zadd(keys.active, {change.job_id: created_ms}, nx=True)
                await pipe.execute()
            snapshot, effect, _ = await self._run(
                change.job_id,
                "create",
                [
                    change.job_id,
                    change.owner,
                    change.kind,
                    change.params_json,
                    change.executor or "",
                    change.call_id or "",
                ],
            )
            if effect == "publish":
                await self._redis.publish(keys.owner_channel(change.owner), snapshot)
        return Job.model_validate_json(snapshot)

    async def apply(self, job_id: str, change: Change, *, change_id: str | None = None) -> Job:
        check_job_id(job_id)
        op, args = _change_args(change)
        with map_redis_errors(op, job_id):
            snapshot, effect, now_ms = await self._run(job_id, op, args, change_id)
            job = Job.model_validate_json(snapshot)
            if effect == "write":
                await self._redis.zadd(self.keys.active, {job_id: now_ms})
            elif effect == "publish" and job.terminal:
                await self._index_finished(job, now_ms)
        return job

    async def _run(
        self, job_id: str, op: str, args: list[str], change_id: str | None = None
    ) -> tuple[bytes, str, float]:
        keys = (self.keys.job(job_id), self.keys.history(job_id), self.keys.changes(job_id))
        # The change id makes a retry of this very call (redis-py retries on connection errors,
        # after which the script may or may not have run; or the caller's, see ``apply``) apply
        # at most once.
        change_id = change_id or uuid.uuid4().hex
        argv = [op, self.keys.channel(job_id), *self._static_args, *args, change_id]
        try:
            reply = await self._batcher.execute("EVALSHA", APPLY_SHA, 3, *keys, *argv)
        except NoScriptError:
            # A restarted or flushed Redis forgot the script: load it and go on.
            await self._redis.script_load(APPLY_LUA)
            reply = await self._batcher.execute("EVALSHA", APPLY_SHA, 3, *keys, *argv)
        if reply[0] == b"err":
            code, status = reply[1].decode(), reply[2].decode()
            if code == "not_found":
                raise JobNotFound(f"job {job_id} not found", job_id=job_id)
            if code == "job_exists":
                raise JobExists(f"job {job_id} already exists", job_id=job_id)
            if code == "not_running":
                raise Conflict(
                    f"job {job_id} is {status}; only a started job can store a checkpoint",
                    job_id=job_id,
                )
            raise JobFinished(
                f"job {job_id} is already {status}; {op} was rejected", job_id=job_id, status=status
            )
        return reply[1], reply[2].decode(), float(reply[3])

    async def _index_finished(self, job: Job, finished_ms: float) -> None:
        keys = self.keys
        done = keys.owner_done(job.owner)
        async with self._redis.pipeline(transaction=False) as pipe:
            pipe.zrem(keys.owner_active(job.owner), job.id)
            pipe.zadd(done, {job.id: finished_ms})
            pipe.zremrangebyscore(done, "-inf", finished_ms - self._options.retention_s * 1000)
            pipe.zrem(keys.active, job.id)
            await pipe.execute()

    # -- reads ---------------------------------------------------------------------------------

    async def get(self, job_id: str) -> Job:
        check_job_id(job_id)
        with map_redis_errors("get", job_id):
            raw = await self._redis.hget(self.keys.job(job_id), "snapshot")
        if raw is None:
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        return Job.model_validate_json(raw)

    async def last_checkpoint(self, job_id: str) -> JsonValue:
        check_job_id(job_id)
        with map_redis_errors("last_checkpoint", job_id):
            exists, raw = await self._redis.hmget(self.keys.job(job_id), ["seq", "checkpoint"])
        if exists is None:
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        data: JsonValue = None if raw is None else json.loads(raw)
        return data

    async def get_many(self, job_ids: Sequence[str]) -> list[Job | None]:
        for job_id in job_ids:
            check_job_id(job_id)
        if not job_ids:
            return []
        with map_redis_errors("get_many"):
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in job_ids:
                    pipe.hget(self.keys.job(job_id), "snapshot")
                raws = await pipe.execute()
        return [None if raw is None else Job.model_validate_json(raw) for raw in raws]

    async def history(self, job_id: str) -> list[HistoryEvent]:
        check_job_id(job_id)
        with map_redis_errors("history", job_id):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.exists(self.keys.job(job_id))
                pipe.xrange(self.keys.history(job_id))
                exists, entries = await pipe.execute()
        if not exists:
            raise JobNotFound(f"job {job_id} not found", job_id=job_id)
        return [_history_event(fields) for _, fields in entries]

    async def owner_jobs(
        self, owner: str, *, recent_s: float = DEFAULT_RECENT_S, limit: int = DEFAULT_OWNER_LIMIT
    ) -> OwnerJobs:
        check_owner(owner)
        keys = self.keys
        active_key, done_key = keys.owner_active(owner), keys.owner_done(owner)
        since_ms = time.time() * 1000 - recent_s * 1000
        with map_redis_errors("owner_jobs"):
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.zrevrange(active_key, 0, limit - 1)
                pipe.zrevrangebyscore(done_key, "+inf", since_ms, start=0, num=limit)
                active_ids, done_ids = await pipe.execute()
            ids = [raw.decode() for raw in active_ids] + [raw.decode() for raw in done_ids]
            jobs = await self.get_many(ids) if ids else []
            active: list[Job] = []
            recent: list[Job] = []
            stale_active: list[str] = []
            stale_done: list[str] = []
            moved: dict[str, float] = {}
            for index, (job_id, job) in enumerate(zip(ids, jobs, strict=True)):
                from_active = index < len(active_ids)
                if job is None or job.owner != owner:
                    (stale_active if from_active else stale_done).append(job_id)
                elif not job.terminal:
                    if from_active:
                        active.append(job)
                    else:
                        stale_done.append(job_id)
                else:
                    if from_active:
                        stale_active.append(job_id)
                        moved[job_id] = job.updated_at.timestamp() * 1000
                    if job.updated_at.timestamp() * 1000 >= since_ms:
                        recent.append(job)
            if stale_active or stale_done or moved:
                async with self._redis.pipeline(transaction=False) as pipe:
                    if stale_active:
                        pipe.zrem(active_key, *stale_active)
                    if stale_done:
                        pipe.zrem(done_key, *stale_done)
                    if moved:
                        pipe.zadd(done_key, moved)
                    await pipe.execute()
        unique_recent = {job.id: job for job in recent}
        return OwnerJobs(
            active=sorted(active, key=lambda job: job.created_at, reverse=True),
            recent=sorted(unique_recent.values(), key=lambda job: job.updated_at, reverse=True),
        )

    async def snapshots(self, job_ids: Sequence[str]) -> list[str | None]:
        for job_id in job_ids:
            check_job_id(job_id)
        if not job_ids:
            return []
        with map_redis_errors("snapshots"):
            if len(job_ids) == 1:
                # A subscribe's read: batched with the other connections' of this moment (a
                # reconnect storm sends thousands at once).
                raws = [await self._batcher.execute("HGET", self.keys.job(job_ids[0]), "snapshot")]
            else:
                async with self._redis.pipeline(transaction=False) as pipe:
                    for job_id in job_ids:
                        pipe.hget(self.keys.job(job_id), "snapshot")
                    raws = await pipe.execute()
        return [None if raw is None else raw.decode() for raw in raws]

    async def seqs(self, job_ids: Sequence[str]) -> list[int | None]:
        if not job_ids:
            return []
        keys = [self.keys.job(job_id) for job_id in job_ids]
        raws: list[bytes | None] = []
        with map_redis_errors("seqs"):
            for start in range(0, len(keys), SEQS_BATCH):
                raws.extend(await self._seqs(keys=keys[start : start + SEQS_BATCH]))
        return [None if raw is None else int(raw) for raw in raws]

    async def stale_jobs(
        self,
        heartbeat_before_ms: float,
        limit: int = DEFAULT_STALE_PAGE,
        after: StaleCursor | None = None,
    ) -> StalePage:
        keys = self.keys
        with map_redis_errors("stale_jobs"):
            entries, at_end = await self._stale_entries(heartbeat_before_ms, limit, after)
            if not entries:
                return StalePage([], None)
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id, _ in entries:
                    pipe.hmget(keys.job(job_id), "snapshot", "heartbeat_ms")
                rows = await pipe.execute()
            stale: list[Job] = []
            gone: list[str] = []
            fresher: dict[str, float] = {}
            for (job_id, _), (raw, heartbeat_ms) in zip(entries, rows, strict=True):
                job = None if raw is None else Job.model_validate_json(raw)
                if job is None or job.terminal:
                    gone.append(job_id)
                elif float(heartbeat_ms) > heartbeat_before_ms:
                    fresher[job_id] = float(heartbeat_ms)  # the hint lagged behind the job
                else:
                    stale.append(job)
            if gone or fresher:
                async with self._redis.pipeline(transaction=False) as pipe:
                    if gone:
                        pipe.zrem(keys.active, *gone)
                    if fresher:
                        pipe.zadd(keys.active, fresher)
                    await pipe.execute()
        last_id, last_score = entries[-1]
        return StalePage(stale, None if at_end else (last_score, last_id))

    async def _stale_entries(
        self, before_ms: float, limit: int, after: StaleCursor | None
    ) -> tuple[list[tuple[str, float]], bool]:
        """Up to ``limit`` heartbeat index entries scored at most ``before_ms`` that follow
        ``after`` in (score, id) order, and whether the index has no more. Redis orders equal
        scores by member bytes, which for job ids (ASCII) is Python's string order; reading
        from the cursor's score, the ties already read are skipped."""
        low: float | str = "-inf" if after is None else after[0]
        entries: list[tuple[str, float]] = []
        offset = 0
        while True:
            rows = await self._redis.zrangebyscore(
                self.keys.active, low, before_ms, start=offset, num=limit, withscores=True
            )
            pairs: list[tuple[bytes, float]] = rows  # type: ignore[assignment]  # withscores
            for member, score in pairs:
                entry = (member.decode(), float(score))
                # Entries tied with the cursor's score come first: skip those already read.
                if after is None or (entry[1], entry[0]) > after:
                    entries.append(entry)
            if len(entries) >= limit:
                return entries[:limit], False
            if len(rows) < limit:
                return entries, True
            offset += limit

    async def ping(self) -> None:
        with map_redis_errors("ping"):
            await self._redis.ping()

    async def aclose(self) -> None:
        await self._redis.aclose()


def _history_event(fields: dict[bytes, bytes]) -> HistoryEvent:
    stage = fields.get(b"stage")
    message = fields.get(b"message")
    return HistoryEvent(
        seq=int(fields[b"seq"]),
        at=datetime.fromisoformat(fields[b"at"].decode()),
        status=JobStatus(fields[b"status"].decode()),
        progress=float(fields[b"progress"]),
        stage=None if stage is None else stage.decode(),
        message=None if message is None else message.decode(),
    )
