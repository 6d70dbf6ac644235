"""The job lifecycle around executors: create and spawn, cancel, and finalize from the truth.

``finalize`` is the one place that turns the truth about a quiet job into a terminal state,
shared by the reaper, lazy finalization in ``GET /exports/active`` and the local executor's exit
hook. It never fails a job on age alone: it asks the executor, and only "gone"/"unknown" becomes
``worker_lost``. A job without an executor (an app's own worker reports through the SDK) has
nobody to ask: its heartbeat is the only sign of life, and silence for ``orphan_after_s`` makes it
``worker_lost`` (``cancelled`` if its owner had asked to cancel).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from progress_core.errors import (
    BadRequest,
    ExecutorError,
    ExecutorUnavailable,
    Forbidden,
    GatewayError,
    JobFinished,
    JobNotFound,
    StoreUnavailable,
    Unprocessable,
)
from progress_core.models import (
    AttachCall,
    Cancel,
    Change,
    Create,
    Fail,
    Job,
    JobStatus,
    RequestCancel,
    Succeed,
)
from progress_core.store import JobStore
from progress_gateway.executors.base import (
    Bounded,
    Degradable,
    Executor,
    Failed,
    Running,
    Succeeded,
    Terminable,
    Unknown,
)
from progress_gateway.metrics import Metrics
from progress_gateway.tasks import TaskGroup
from progress_workers.kinds import JobKind, get_kind

logger = logging.getLogger("progress_gateway.lifecycle")

# Modal delivers a cancellation through the container's heartbeat (every ~15 s), so asking every
# 0.25 s only spends RPCs; a call still running at the deadline is terminated (Terminable).
CANCEL_POLL_S = 1.5
DEFAULT_ORPHAN_AFTER_S = 300.0


class Lifecycle:
    def __init__(
        self,
        store: JobStore,
        executors: Mapping[str, Executor],
        kinds: Mapping[str, JobKind],
        metrics: Metrics,
        *,
        cancel_timeout_s: float = 15.0,
        orphan_after_s: float = DEFAULT_ORPHAN_AFTER_S,
        cancel_poll_s: float = CANCEL_POLL_S,
    ) -> None:
        self.store = store
        self.executors = executors
        self.kinds = dict(kinds)
        self.metrics = metrics
        self.cancel_timeout_s = cancel_timeout_s
        self.cancel_poll_s = cancel_poll_s
        self.orphan_after_s = orphan_after_s
        self._tasks = TaskGroup(logger, "lifecycle")

    async def aclose(self) -> None:
        await self._tasks.aclose()

    # -- create ------------------------------------------------------------------------------

    async def create(self, owner: str, kind_name: object, params: object) -> Job:
        """Validate, create the job, spawn it and store its call id before answering.

        If the spawn fails the job ends ``failed`` with ``spawn_error`` (never stuck in
        ``queued``) and the caller gets the executor's error.
        """
        kind = get_kind(kind_name, self.kinds)
        parsed = kind.validate(params)
        executor = self.executors.get(kind.executor)
        if executor is None:
            raise Unprocessable(
                f"kind {kind.name!r} runs on the {kind.executor!r} executor, "
                "which is not configured on this gateway"
            )
        if isinstance(executor, Degradable) and executor.unavailable_reason is not None:
            # Before creating the job: no failed spawn_error job for work never attempted.
            raise ExecutorUnavailable(
                f"kind {kind.name!r} runs on the {kind.executor!r} executor, which is "
                f"unavailable: {executor.unavailable_reason}"
            )
        change = Create.build(
            owner=owner,
            kind=kind.name,
            params=parsed.model_dump(mode="json"),
            executor=kind.executor,
        )
        job = await self.store.create(change)
        try:
            call_id = await executor.spawn(job)
        except ExecutorError as exc:
            logger.error("spawn of job %s (%s, owner %s) failed: %s", job.id, kind.name, owner, exc)
            await self._apply(job, Fail.build(code="spawn_error", message=exc.message[:1000]))
            raise
        try:
            return await self.store.apply(
                job.id, AttachCall.build(executor=kind.executor, call_id=call_id)
            )
        except JobFinished:
            # A fast job ended first; its worker recorded the call id itself.
            return await self.store.get(job.id)

    # -- cancel ------------------------------------------------------------------------------

    async def cancel(self, owner: str, job_id: str) -> Job:
        """Flag the job, cancel its executor call, and make sure it ends ``cancelled``."""
        job = await self.owned(owner, job_id)
        job = await self.store.apply(job_id, RequestCancel())
        executor = self.executors.get(job.executor) if job.executor else None
        if executor is not None and job.call_id is not None:
            await executor.cancel(job.call_id)
            if not job.terminal:
                self._tasks.spawn(self._confirm_cancel(job_id, executor, job.call_id))
        return job

    async def _confirm_cancel(self, job_id: str, executor: Executor, call_id: str) -> None:
        """Wait for the call to stop, then record ``cancelled`` if the worker could not."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.cancel_timeout_s
        stopped = False
        while loop.time() < deadline:
            job = await self.store.get(job_id)
            if job.terminal:
                return
            if not isinstance(await executor.poll(call_id), Running):
                stopped = True
                break
            await asyncio.sleep(self.cancel_poll_s)
        if not stopped and isinstance(executor, Terminable):
            logger.warning(
                "call %s of job %s still runs %g s after its cancellation: terminating it",
                call_id,
                job_id,
                self.cancel_timeout_s,
            )
            await executor.terminate(call_id)
        job = await self.store.get(job_id)
        if not job.terminal:
            await self._apply(job, Cancel.build("cancelled by its owner"))

    async def owned(self, owner: str, job_id: str) -> Job:
        """The job if ``owner`` may act on it: 404 if it does not exist, 403 if not theirs."""
        job = await self.store.get(job_id)
        if job.owner != owner:
            raise Forbidden(f"job {job_id} belongs to someone else", job_id=job_id)
        return job

    # -- finalize ----------------------------------------------------------------------------

    async def finalize(self, job: Job) -> Job:
        """Record a terminal state if the job's work ended: its executor says so, or, with no
        executor, its worker has not reported for ``orphan_after_s``."""
        if job.terminal:
            return job
        if job.executor is None:
            return await self._finalize_orphan(job)
        executor = self.executors.get(job.executor)
        if executor is None:
            logger.warning("job %s runs on executor %r, not configured here", job.id, job.executor)
            return job
        if job.call_id is None:
            state: Running | Succeeded | Failed | Unknown = Unknown("no call id was recorded")
        else:
            try:
                state = await executor.poll(job.call_id)
            except ExecutorError as exc:
                logger.warning("cannot poll job %s (%s): %s", job.id, job.call_id, exc)
                return job
        if isinstance(state, Running):
            if not (isinstance(executor, Bounded) and _silent_s(job) > executor.max_run_s):
                return job
            state = Unknown(
                f"{executor.name} still reports call {job.call_id} running, but its worker has "
                f"not reported for {_silent_s(job):.0f} s, longer than any call may run "
                f"({executor.max_run_s:g} s: the function's timeout plus a margin)"
            )
        change: Change
        reason: str
        if isinstance(state, Succeeded):
            try:
                change, reason = Succeed.build(state.result), "succeeded"
            except BadRequest as exc:
                change, reason = Fail.build(code="worker_error", message=exc.message), "bad_result"
        elif isinstance(state, Failed):
            if state.code == "cancelled" or job.cancel_requested:
                change, reason = Cancel.build(state.message[:1000] or "cancelled"), "cancelled"
            else:
                code = state.code if state.code in ("worker_error", "timeout") else "worker_error"
                change, reason = Fail.build(code=code, message=state.message[:1000]), code
        elif job.cancel_requested:
            change, reason = Cancel.build(f"cancelled; {state.reason}"[:1000]), "cancelled"
        else:
            change, reason = (
                Fail.build(code="worker_lost", message=state.reason[:1000]),
                "worker_lost",
            )
        return await self._record(job, change, reason)

    async def _finalize_orphan(self, listed: Job) -> Job:
        """A job without an executor whose worker went silent for ``orphan_after_s`` ends
        ``worker_lost``: judged on its last heartbeat, never its age, so a long job that keeps
        reporting stays alive. A queued one that nobody started is judged from its creation."""
        if _silent_s(listed) < self.orphan_after_s:
            return listed
        try:
            job = await self.store.get(listed.id)  # its worker may have reported since listing
        except JobNotFound:
            logger.warning("job %s (owner %s) vanished before finalizing", listed.id, listed.owner)
            return listed
        silent_s = _silent_s(job)
        if job.terminal or silent_s < self.orphan_after_s:
            return job
        change: Change
        if job.cancel_requested:
            message = f"cancelled; its worker stopped reporting {silent_s:.0f} s ago"
            change, reason = Cancel.build(message), "cancelled"
        elif job.status is JobStatus.QUEUED:
            message = f"no worker started this job: nothing reported for {silent_s:.0f} s"
            change, reason = Fail.build(code="worker_lost", message=message), "worker_lost"
        else:
            message = f"its worker stopped reporting: no heartbeat for {silent_s:.0f} s"
            change, reason = Fail.build(code="worker_lost", message=message), "worker_lost"
        return await self._record(job, change, reason)

    async def _record(self, job: Job, change: Change, reason: str) -> Job:
        """Apply the terminal change and count it by reason, unless another writer ended it."""
        finalized = await self._apply(job, change)
        if finalized.terminal and finalized.seq > job.seq:
            self.metrics.finalized.labels(reason).inc()
            logger.info(
                "job %s (owner %s) finalized as %s: %s",
                job.id,
                job.owner,
                finalized.status.value,
                reason,
            )
        return finalized

    async def on_local_exit(self, job_id: str, call_id: str, code: int | None) -> None:
        """A local job's process exited: if it did not report its end, finalize now."""
        try:
            job = await self.store.get(job_id)
            if not job.terminal and job.call_id in (call_id, None):
                await self.finalize(job.model_copy(update={"call_id": call_id}))
        except GatewayError as exc:
            # The reaper finalizes it later from the store; say so rather than lose the event.
            logger.warning("exit of job %s (code %s) not recorded yet: %s", job_id, code, exc)

    async def _apply(self, job: Job, change: Change) -> Job:
        try:
            return await self.store.apply(job.id, change)
        except JobFinished:
            return await self.store.get(job.id)  # someone else recorded the end first
        except StoreUnavailable:
            logger.error("could not record the end of job %s (owner %s)", job.id, job.owner)
            raise


def _silent_s(job: Job) -> float:
    """Seconds since the job's worker last reported (the store's clock stamps ``heartbeat_at``)."""
    return time.time() - job.heartbeat_at.timestamp()
