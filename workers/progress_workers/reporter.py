"""The reporter: what a worker holds while it runs a job.

It starts the job, heartbeats in the background (so a 40-minute job is never "stale"), throttles
progress to at most one write per ``min_interval_s`` while always delivering the last one, keeps
reporting through a store outage, and on exit records how the work ended: success, ``failed`` with
``worker_error`` on an exception, ``cancelled`` on a cancellation (``KeyboardInterrupt``,
``asyncio.CancelledError``, Modal's ``InputCancellation``: every ``BaseException`` that is not an
``Exception`` or ``SystemExit``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from types import TracebackType
from typing import TYPE_CHECKING

from pydantic import JsonValue

from progress_core.errors import GatewayError, JobFinished, JobNotFound, StoreUnavailable
from progress_core.models import (
    MAX_MESSAGE_CHARS,
    Cancel,
    Change,
    Checkpoint,
    Fail,
    Heartbeat,
    Job,
    Start,
    Succeed,
    Update,
)

if TYPE_CHECKING:
    from progress_workers.client import AsyncProgressClient

logger = logging.getLogger("progress_workers.reporter")

DEFAULT_HEARTBEAT_S = 10.0
DEFAULT_MIN_INTERVAL_S = 0.2
DEFAULT_FINAL_RETRY_S = 60.0
OUTAGE_RETRY_S = 1.0
# How long finishing waits for the heartbeat and flush tasks to end before going on without them.
STOP_WAIT_S = 5.0


def _merge(pending: Update | None, new: Update) -> Update:
    if pending is None:
        return new
    return Update(
        progress=new.progress if new.progress is not None else pending.progress,
        stage=new.stage if new.stage is not None else pending.stage,
        message=new.message if new.message is not None else pending.message,
    )


def describe_exception(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text[:MAX_MESSAGE_CHARS]


class AsyncReporter:
    def __init__(
        self,
        client: AsyncProgressClient,
        job_id: str,
        *,
        heartbeat_s: float = DEFAULT_HEARTBEAT_S,
        min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
        final_retry_s: float = DEFAULT_FINAL_RETRY_S,
    ) -> None:
        if heartbeat_s <= 0 or min_interval_s < 0 or final_retry_s < 0:
            raise ValueError("heartbeat_s must be > 0; min_interval_s and final_retry_s >= 0")
        self.client = client
        self.job_id = job_id
        self.job: Job | None = None
        # What the previous attempt stored with ``checkpoint()``; None on a first attempt.
        self.last_checkpoint: JsonValue = None
        self._heartbeat_s = heartbeat_s
        self._min_interval_s = min_interval_s
        self._final_retry_s = final_retry_s
        self._pending: Update | None = None
        self._last_sent = -float("inf")
        self._flush_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._finished: JobFinished | None = None
        self._done = False
        self._stopping = False

    # -- what the worker reads -----------------------------------------------------------------

    @property
    def cancel_requested(self) -> bool:
        """True once cancellation was asked for: stop work and exit (raise or return)."""
        if self._finished is not None and self._finished.status == "cancelled":
            return True
        return self.job is not None and self.job.cancel_requested

    @property
    def finished(self) -> bool:
        return self._done or self._finished is not None

    # -- lifecycle -----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncReporter:
        self._observe(await self.client.store.apply(self.job_id, Start()))
        self.last_checkpoint = await self.client.store.last_checkpoint(self.job_id)
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_loop(), name=f"pgw-heartbeat-{self.job_id}"
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._stop_background()
        if self._done:
            return
        if exc is None:
            if self._finished is None:
                try:
                    await self.succeed()
                except JobFinished as finished:
                    # Ended elsewhere (cancelled, or a newer attempt finished): that state stands.
                    logger.info("job %s already %s at exit", self.job_id, finished.status)
            return
        if isinstance(exc, JobFinished) or self._finished is not None:
            return
        try:
            if isinstance(exc, Exception | SystemExit):
                await self.fail(describe_exception(exc))
            else:
                await self.cancel(describe_exception(exc))
        except GatewayError as report_error:
            # The original exception propagates; the failure to record it must not hide it.
            logger.error(
                "could not record the end of job %s (%s): %s",
                self.job_id,
                describe_exception(exc),
                report_error,
            )

    # -- progress ------------------------------------------------------------------------------

    async def update(
        self, progress: float | None = None, stage: str | None = None, message: str | None = None
    ) -> None:
        """Report progress; written now or within ``min_interval_s``, the latest always kept.

        Raises ``JobFinished`` once the job has ended elsewhere (cancelled by its owner, or
        finalized), so the worker stops instead of reporting into the void.
        """
        self._raise_if_finished()
        self._pending = _merge(
            self._pending, Update.build(progress=progress, stage=stage, message=message)
        )
        wait = self._last_sent + self._min_interval_s - time.monotonic()
        if wait <= 0 and self._flush_task is None:
            await self._send()
        elif self._flush_task is None:
            self._flush_task = asyncio.create_task(self._flush_later(max(wait, 0.0)))

    async def checkpoint(self, data: object) -> None:
        """Store a small JSON resume point (at most 16 KiB) with the job, written now.

        A later attempt of this job (after a preemption or a crash) finds it in
        ``last_checkpoint``. A store outage is logged, not raised: the next checkpoint replaces
        this one and the work goes on. Raises ``JobFinished`` once the job has ended elsewhere.
        """
        self._raise_if_finished()
        change = Checkpoint.build(data)
        try:
            self._observe(await self.client.store.apply(self.job_id, change))
        except JobFinished as exc:
            self._finished = exc
            raise
        except StoreUnavailable as exc:
            logger.warning("checkpoint of job %s not written: %s", self.job_id, exc)
            return
        self.last_checkpoint = json.loads(change.data_json)

    async def succeed(self, result: object = None) -> Job:
        return await self._finish(Succeed.build(result))

    async def fail(self, message: str, code: str = "worker_error") -> Job:
        return await self._finish(Fail.build(code=code, message=message))

    async def cancel(self, message: str = "cancelled") -> Job:
        return await self._finish(Cancel.build(message))

    # -- internals -----------------------------------------------------------------------------

    def _observe(self, job: Job) -> None:
        self.job = job

    def _raise_if_finished(self) -> None:
        if self._finished is not None:
            raise self._finished
        if self._done:
            raise JobFinished(
                f"job {self.job_id} was already reported finished by this worker",
                job_id=self.job_id,
                status=self.job.status.value if self.job else "",
            )

    async def _send(self) -> None:
        change, self._pending = self._pending, None
        if change is None:
            return
        self._last_sent = time.monotonic()
        try:
            self._observe(await self.client.store.apply(self.job_id, change))
        except JobFinished as exc:
            self._finished = exc
            raise
        except StoreUnavailable as exc:
            # Keep the newest state and try again: an outage must not kill the job.
            self._pending = _merge(change, self._pending) if self._pending else change
            logger.warning("progress of job %s not written, retrying: %s", self.job_id, exc)
            if self._flush_task is None:
                self._flush_task = asyncio.create_task(self._flush_later(OUTAGE_RETRY_S))

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        if self._stopping:
            return
        self._flush_task = None
        try:
            await self._send()
        except JobFinished as exc:
            logger.info("job %s ended elsewhere (%s); progress dropped", self.job_id, exc.status)
        except Exception:
            logger.exception("delayed progress of job %s failed unexpectedly", self.job_id)

    async def _finish(self, change: Change) -> Job:
        self._raise_if_finished()
        await self._stop_background()
        if self._pending is not None and not isinstance(change, Succeed):
            # The last progress is part of the story of a failure ("failed at 20 %").
            try:
                await self._send()
            except JobFinished:
                raise
            except GatewayError as exc:
                logger.warning("last progress of job %s not written: %s", self.job_id, exc)
        self._pending = None
        deadline = time.monotonic() + self._final_retry_s
        delay = 0.1
        # One id for every attempt: an attempt that timed out may still be applied when the
        # store wakes, and the retry must then get the job back, not JobFinished.
        change_id = uuid.uuid4().hex
        while True:
            try:
                job = await self.client.store.apply(self.job_id, change, change_id=change_id)
            except JobFinished as exc:
                self._finished = exc
                raise
            except StoreUnavailable as exc:
                # The final state is what the user waits for: retry through an outage.
                if time.monotonic() + delay > deadline:
                    raise
                logger.warning(
                    "final state of job %s not written, retrying in %.1fs: %s",
                    self.job_id,
                    delay,
                    exc,
                )
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                continue
            self._observe(job)
            self._done = True
            return job

    async def _heartbeat_loop(self) -> None:
        while not self._stopping:
            await asyncio.sleep(self._heartbeat_s)
            if self._stopping:
                return
            try:
                self._observe(await self.client.store.apply(self.job_id, Heartbeat()))
            except JobFinished as exc:
                self._finished = exc
                logger.info("job %s ended elsewhere (%s); heartbeat stops", self.job_id, exc.status)
                return
            except JobNotFound:
                logger.error("job %s no longer exists; heartbeat stops", self.job_id)
                return
            except StoreUnavailable as exc:
                logger.warning("heartbeat of job %s failed, will retry: %s", self.job_id, exc)
            except Exception:
                logger.exception("heartbeat of job %s failed unexpectedly", self.job_id)

    async def _stop_background(self) -> None:
        """Stop heartbeating and delayed flushes before the final write.

        Not by cancellation alone: a cancel can be lost (CPython gh-86296 in libraries that use
        ``asyncio.wait_for``), and a heartbeat that never stops must not hold the final state
        back. The loops also check ``_stopping``, and the wait is bounded. ``asyncio.wait``
        neither raises a task's ``CancelledError`` nor absorbs the caller's own.
        """
        self._stopping = True
        tasks = [task for task in (self._heartbeat_task, self._flush_task) if task is not None]
        self._heartbeat_task = self._flush_task = None
        if not tasks:
            return
        for task in tasks:
            task.cancel()
        done, pending = await asyncio.wait(tasks, timeout=STOP_WAIT_S)
        for task in pending:
            logger.error(
                "job %s: %s still running %.0fs after it was stopped; finishing without it",
                self.job_id,
                task.get_name(),
                STOP_WAIT_S,
            )
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                logger.error(
                    "job %s: %s failed", self.job_id, task.get_name(), exc_info=task.exception()
                )
