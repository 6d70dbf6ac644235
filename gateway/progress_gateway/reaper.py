"""The reaper: finds jobs whose heartbeat went quiet and has ``Lifecycle.finalize`` decide.

One leader among all gateways does it: a Redis lock with expiry (``SET NX PX``, renewed by the
holder only), or, embedded, an exclusive lock on a file next to the database. A leader that dies
stops renewing, and another gateway takes over once the lock expires.

Sweeps are fair: each reads the next page of the stale set, continuing where the previous one
stopped and starting over at its end, so jobs that cannot be finalized (an executor that keeps
saying "running", an SDK worker not silent long enough) never hide the ones behind them. With N
jobs stale, each is looked at within ``ceil(N / SWEEP_PAGE) + 1`` sweeps.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import time
import uuid
from pathlib import Path
from typing import IO, Protocol

from redis.exceptions import RedisError

from progress_core.errors import GatewayError, StoreUnavailable
from progress_core.redis_client import redis_client
from progress_core.store import JobStore
from progress_core.store.base import DEFAULT_STALE_PAGE, StaleCursor
from progress_gateway.lifecycle import Lifecycle
from progress_gateway.metrics import Metrics

logger = logging.getLogger("progress_gateway.reaper")

# KEYS[1] lock key; ARGV[1] holder id; ARGV[2] ttl ms. Renew only a lock we hold.
RENEW_LUA = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
SWEEP_PAGE = DEFAULT_STALE_PAGE


class Leadership(Protocol):
    async def hold(self) -> bool:
        """Acquire or renew; True while this process is the leader."""
        ...

    async def release(self) -> None: ...


class RedisLeadership:
    def __init__(self, url: str, key: str, ttl_s: float) -> None:
        self._redis = redis_client(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._key = key
        self._ttl_ms = int(ttl_s * 1000)
        self.holder = uuid.uuid4().hex
        self._renew = self._redis.register_script(RENEW_LUA)

    async def hold(self) -> bool:
        try:
            if await self._renew(keys=[self._key], args=[self.holder, self._ttl_ms]):
                return True
            return bool(await self._redis.set(self._key, self.holder, nx=True, px=self._ttl_ms))
        except RedisError as exc:
            raise StoreUnavailable(f"reaper leadership check failed: {exc}") from exc

    async def release(self) -> None:
        try:
            if await self._redis.get(self._key) == self.holder.encode():
                await self._redis.delete(self._key)
        except RedisError as exc:
            logger.warning("could not release reaper leadership (it expires by itself): %s", exc)
        await self._redis.aclose()


class FileLeadership:
    """Embedded: whoever holds an exclusive lock on the file leads; the OS frees it on death."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._handle: IO[bytes] | None = None

    async def hold(self) -> bool:
        if self._handle is not None:
            return True
        handle = self._path.open("ab")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return False
        self._handle = handle
        return True

    async def release(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None


class Reaper:
    def __init__(
        self,
        store: JobStore,
        lifecycle: Lifecycle,
        leadership: Leadership,
        *,
        stale_after_s: float,
        interval_s: float,
        metrics: Metrics,
    ) -> None:
        self._metrics = metrics
        self._store = store
        self._lifecycle = lifecycle
        self._leadership = leadership
        self._stale_after_s = stale_after_s
        self._interval_s = interval_s
        self._next_check: dict[str, float] = {}
        self._cursor: StaleCursor | None = None
        self._task: asyncio.Task[None] | None = None
        self.leading = False

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="pgw-reaper")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self._leadership.release()

    async def _run(self) -> None:
        while True:
            try:
                leading = await self._leadership.hold()
                if leading != self.leading:
                    logger.info("reaper %s", "leads" if leading else "no longer leads")
                    self.leading = leading
                    self._metrics.reaper_leader.set(int(leading))
                if leading:
                    await self.sweep()
            except GatewayError as exc:
                logger.warning("reaper sweep failed, retrying in %.1fs: %s", self._interval_s, exc)
                if self.leading:
                    self.leading = False  # unknown until the lock can be checked again
                    self._metrics.reaper_leader.set(0)
            await asyncio.sleep(self._interval_s)

    async def sweep(self) -> int:
        """Look at the next page of stale jobs; returns how many were finalized."""
        cutoff_ms = (time.time() - self._stale_after_s) * 1000
        page = await self._store.stale_jobs(cutoff_ms, SWEEP_PAGE, after=self._cursor)
        if self._cursor is not None and page.next is None and not page.jobs:
            # The previous page ended exactly at the end: start over now, not a sweep later.
            page = await self._store.stale_jobs(cutoff_ms, SWEEP_PAGE)
        now = time.monotonic()
        finalized = 0
        for job in page.jobs:
            # Asking an executor costs a call: once it answered "running", ask again only after
            # another stale period. A job without an executor is judged on its heartbeat alone.
            if job.executor is not None and self._next_check.get(job.id, 0.0) > now:
                continue
            result = await self._lifecycle.finalize(job)
            if result.terminal:
                finalized += 1
                self._next_check.pop(job.id, None)
            elif job.executor is not None:
                self._next_check[job.id] = now + self._stale_after_s
        # Only now: a sweep cut short by a store error reads the same page again.
        self._cursor = page.next
        if len(self._next_check) > 10_000:
            self._next_check = {k: v for k, v in self._next_check.items() if v > now}
        return finalized
