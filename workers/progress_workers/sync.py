"""The blocking SDK: ``ProgressClient`` and ``Reporter`` over the async implementation.

One private event loop per process runs in a daemon thread (a "portal"); blocking calls submit
coroutines to it. There is one implementation of every rule (the async one), the heartbeat keeps
beating while the worker's own thread computes, and a forked child gets a fresh loop and fresh
connections instead of inheriting the parent's.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from types import TracebackType
from typing import Any, TypeVar

from pydantic import JsonValue

from progress_core.config import StoreConfig
from progress_core.models import Job
from progress_core.store import StoreOptions
from progress_workers.client import AsyncProgressClient
from progress_workers.reporter import (
    DEFAULT_FINAL_RETRY_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MIN_INTERVAL_S,
    AsyncReporter,
)

T = TypeVar("T")


class _Portal:
    """An event loop in a daemon thread that blocking code can hand coroutines to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self.loop.run_forever, name="pgw-worker-loop", daemon=True
        )
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T]) -> T:
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return future.result()

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)
        self.loop.close()


class ProgressClient:
    """Report job progress from blocking code (Modal functions, scripts, child processes)."""

    def __init__(self, factory: Callable[[], AsyncProgressClient]) -> None:
        self._factory = factory
        self._lock = threading.Lock()
        self._pid = -1
        self._portal: _Portal | None = None
        self._client: AsyncProgressClient | None = None

    @classmethod
    def from_url(cls, url: str, options: StoreOptions | None = None) -> ProgressClient:
        """``redis://…``, ``rediss://…`` or ``sqlite:///path.db``."""
        return cls(lambda: AsyncProgressClient.from_url(url, options))

    @classmethod
    def from_env(cls) -> ProgressClient:
        """The gateway's store: ``GATEWAY_REDIS_URL`` / ``REDIS_URL``, else the SQLite file."""
        config = StoreConfig.from_env()
        return cls.from_url(config.url, config.options)

    def _run(self, make: Callable[[AsyncProgressClient], Coroutine[Any, Any, T]]) -> T:
        portal, client = self._ensure()
        return portal.call(make(client))

    def _ensure(self) -> tuple[_Portal, AsyncProgressClient]:
        with self._lock:
            if self._pid != os.getpid() or self._portal is None or self._client is None:
                # First use, or we are a forked child: the parent's thread and sockets are not ours.
                self._portal = _Portal()
                self._client = self._factory()
                self._pid = os.getpid()
            return self._portal, self._client

    def create_job(
        self,
        owner: str,
        kind: str,
        params: dict[str, object] | None = None,
        *,
        job_id: str | None = None,
        executor: str | None = None,
        call_id: str | None = None,
    ) -> Job:
        return self._run(
            lambda c: c.create_job(
                owner, kind, params, job_id=job_id, executor=executor, call_id=call_id
            )
        )

    def start(self, job_id: str) -> Job:
        return self._run(lambda c: c.start(job_id))

    def update(
        self,
        job_id: str,
        *,
        progress: float | None = None,
        stage: str | None = None,
        message: str | None = None,
    ) -> Job:
        return self._run(
            lambda c: c.update(job_id, progress=progress, stage=stage, message=message)
        )

    def heartbeat(self, job_id: str) -> Job:
        return self._run(lambda c: c.heartbeat(job_id))

    def checkpoint(self, job_id: str, data: object) -> Job:
        return self._run(lambda c: c.checkpoint(job_id, data))

    def last_checkpoint(self, job_id: str) -> JsonValue:
        return self._run(lambda c: c.last_checkpoint(job_id))

    def succeed(self, job_id: str, result: object = None) -> Job:
        return self._run(lambda c: c.succeed(job_id, result))

    def fail(self, job_id: str, *, message: str, code: str = "worker_error") -> Job:
        return self._run(lambda c: c.fail(job_id, message=message, code=code))

    def cancel(self, job_id: str, message: str = "cancelled") -> Job:
        return self._run(lambda c: c.cancel(job_id, message))

    def request_cancel(self, job_id: str) -> Job:
        return self._run(lambda c: c.request_cancel(job_id))

    def attach_call(self, job_id: str, *, executor: str, call_id: str) -> Job:
        return self._run(lambda c: c.attach_call(job_id, executor=executor, call_id=call_id))

    def get(self, job_id: str) -> Job:
        return self._run(lambda c: c.get(job_id))

    def reporter(
        self,
        job_id: str,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        final_retry_s: float = DEFAULT_FINAL_RETRY_S,
    ) -> Reporter:
        """``with client.reporter(job_id) as r:`` — start, heartbeat, throttled updates."""
        portal, client = self._ensure()
        inner = client.reporter(
            job_id,
            heartbeat_s=heartbeat_s,
            min_interval_s=min_interval_s,
            final_retry_s=final_retry_s,
        )
        return Reporter(portal, inner)

    def close(self) -> None:
        with self._lock:
            if self._portal is not None and self._client is not None and self._pid == os.getpid():
                self._portal.call(self._client.aclose())
                self._portal.close()
            self._portal = None
            self._client = None

    def __enter__(self) -> ProgressClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class Reporter:
    """Blocking face of ``AsyncReporter``; its heartbeat runs on the portal's loop."""

    def __init__(self, portal: _Portal, inner: AsyncReporter) -> None:
        self._portal = portal
        self._inner = inner

    @property
    def job_id(self) -> str:
        return self._inner.job_id

    @property
    def job(self) -> Job | None:
        return self._inner.job

    @property
    def cancel_requested(self) -> bool:
        return self._inner.cancel_requested

    @property
    def finished(self) -> bool:
        return self._inner.finished

    @property
    def last_checkpoint(self) -> JsonValue:
        """What the previous attempt stored with ``checkpoint()``; None on a first attempt."""
        return self._inner.last_checkpoint

    def checkpoint(self, data: object) -> None:
        """Store a small JSON resume point with the job (see ``AsyncReporter.checkpoint``)."""
        self._portal.call(self._inner.checkpoint(data))

    def update(
        self, progress: float | None = None, stage: str | None = None, message: str | None = None
    ) -> None:
        self._portal.call(self._inner.update(progress, stage, message))

    def succeed(self, result: object = None) -> Job:
        return self._portal.call(self._inner.succeed(result))

    def fail(self, message: str, code: str = "worker_error") -> Job:
        return self._portal.call(self._inner.fail(message, code))

    def cancel(self, message: str = "cancelled") -> Job:
        return self._portal.call(self._inner.cancel(message))

    def __enter__(self) -> Reporter:
        self._portal.call(self._inner.__aenter__())
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._portal.call(self._inner.__aexit__(exc_type, exc, tb))
