"""The worker SDK's async client: validated changes written straight to the store.

Workers never talk to the gateway; the store is the source of truth and publishes every change.
"""

from __future__ import annotations

from types import TracebackType

from pydantic import JsonValue

from progress_core.config import StoreConfig
from progress_core.models import (
    AttachCall,
    Cancel,
    Checkpoint,
    Create,
    Fail,
    Heartbeat,
    Job,
    RequestCancel,
    Start,
    Succeed,
    Update,
)
from progress_core.store import JobStore, StoreOptions, open_store
from progress_workers.reporter import (
    DEFAULT_FINAL_RETRY_S,
    DEFAULT_HEARTBEAT_S,
    DEFAULT_MIN_INTERVAL_S,
    AsyncReporter,
)


class AsyncProgressClient:
    """Report job progress from asyncio code. ``ProgressClient`` is the blocking twin."""

    def __init__(self, store: JobStore) -> None:
        self.store = store

    @classmethod
    def from_url(cls, url: str, options: StoreOptions | None = None) -> AsyncProgressClient:
        """``redis://…``, ``rediss://…`` or ``sqlite:///path.db``."""
        return cls(open_store(url, options))

    @classmethod
    def from_env(cls) -> AsyncProgressClient:
        """The gateway's store: ``GATEWAY_REDIS_URL`` / ``REDIS_URL``, else the SQLite file."""
        config = StoreConfig.from_env()
        return cls.from_url(config.url, config.options)

    async def create_job(
        self,
        owner: str,
        kind: str,
        params: dict[str, object] | None = None,
        *,
        job_id: str | None = None,
        executor: str | None = None,
        call_id: str | None = None,
    ) -> Job:
        change = Create.build(
            owner=owner, kind=kind, params=params, job_id=job_id, executor=executor, call_id=call_id
        )
        return await self.store.create(change)

    async def start(self, job_id: str) -> Job:
        return await self.store.apply(job_id, Start())

    async def update(
        self,
        job_id: str,
        *,
        progress: float | None = None,
        stage: str | None = None,
        message: str | None = None,
    ) -> Job:
        return await self.store.apply(
            job_id, Update.build(progress=progress, stage=stage, message=message)
        )

    async def heartbeat(self, job_id: str) -> Job:
        return await self.store.apply(job_id, Heartbeat())

    async def checkpoint(self, job_id: str, data: object) -> Job:
        """Store the job's resume point (JSON, at most 16 KiB), replacing the previous one."""
        return await self.store.apply(job_id, Checkpoint.build(data))

    async def last_checkpoint(self, job_id: str) -> JsonValue:
        return await self.store.last_checkpoint(job_id)

    async def succeed(self, job_id: str, result: object = None) -> Job:
        return await self.store.apply(job_id, Succeed.build(result))

    async def fail(self, job_id: str, *, message: str, code: str = "worker_error") -> Job:
        return await self.store.apply(job_id, Fail.build(code=code, message=message))

    async def cancel(self, job_id: str, message: str = "cancelled") -> Job:
        """Confirm that the work stopped: the job ends ``cancelled``."""
        return await self.store.apply(job_id, Cancel.build(message))

    async def request_cancel(self, job_id: str) -> Job:
        """Ask the worker to stop (sets ``cancel_requested``; a queued job is cancelled at once)."""
        return await self.store.apply(job_id, RequestCancel())

    async def attach_call(self, job_id: str, *, executor: str, call_id: str) -> Job:
        return await self.store.apply(job_id, AttachCall.build(executor=executor, call_id=call_id))

    async def get(self, job_id: str) -> Job:
        return await self.store.get(job_id)

    def reporter(
        self,
        job_id: str,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        final_retry_s: float = DEFAULT_FINAL_RETRY_S,
    ) -> AsyncReporter:
        """``async with client.reporter(job_id) as r:`` — start, heartbeat, throttled updates."""
        return AsyncReporter(
            self,
            job_id,
            heartbeat_s=heartbeat_s,
            min_interval_s=min_interval_s,
            final_retry_s=final_retry_s,
        )

    async def aclose(self) -> None:
        await self.store.aclose()

    async def __aenter__(self) -> AsyncProgressClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
