"""Run one job's function under a reporter: the shared body of every executor's worker side."""

from __future__ import annotations

import logging

from progress_core.errors import JobFinished
from progress_workers.kinds import JobKind, get_kind
from progress_workers.reporter import DEFAULT_HEARTBEAT_S
from progress_workers.sync import ProgressClient

logger = logging.getLogger("progress_workers.runner")


class WorkerFailed(Exception):
    """What every exception leaving a deployed Modal function becomes: ``"Type: message"``.

    ``FunctionCall.get`` re-raises the function's own exception on the gateway, whatever its
    class, so a worker's ``TimeoutError`` (on Python 3.11 also ``socket.timeout`` and
    ``asyncio.TimeoutError``) or a Modal ``ConnectionError`` of its own would read as "still
    running" or "Modal is down" forever. Wrapped, it can only mean "the worker failed".
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def run_job(
    client: ProgressClient,
    job_id: str,
    kind: str | JobKind,
    params: object,
    *,
    executor: str | None = None,
    call_id: str | None = None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    max_attempts: int | None = None,
) -> object:
    """Validate params, record our call id if the spawner could not, run, report the end.

    Recording the call id from inside the call closes the gap where a gateway dies between
    spawning the work and storing its id: the work itself makes sure it can be found again.

    ``max_attempts`` caps the runs of one job: Modal re-runs an input whose container died (up to
    ~8 times), each a new attempt, so a deterministic crash would otherwise be paid for again and
    again. Past the cap the job fails ``worker_lost`` without running; a re-run within it says
    so in the job's message.
    """
    job_kind = kind if isinstance(kind, JobKind) else get_kind(kind)
    parsed = job_kind.validate(params)
    function = job_kind.load()
    if executor is not None and call_id is not None:
        job = client.get(job_id)
        if job.call_id != call_id:
            try:
                client.attach_call(job_id, executor=executor, call_id=call_id)
            except JobFinished as exc:
                logger.info("job %s ended (%s) before it started; not running", job_id, exc.status)
                return None
    if max_attempts is not None and _over_attempt_cap(client, job_id, max_attempts):
        return None
    try:
        with client.reporter(job_id, heartbeat_s=heartbeat_s) as reporter:
            attempt = reporter.job.attempt if reporter.job is not None else 1
            if attempt > 1:
                of = f" of {max_attempts}" if max_attempts is not None else ""
                # Straight to the store, not through the reporter's throttle: the job's first
                # progress would replace it before it is written.
                client.update(
                    job_id,
                    message=f"restarted: attempt {attempt}{of} (the previous run stopped early)",
                )
            result = function(reporter, parsed)
            if not reporter.finished:
                reporter.succeed(result)
            return result
    except JobFinished as exc:
        # The job ended elsewhere: cancelled by its owner, or finished by an earlier attempt
        # before this retried run (a preemption) started. Its recorded state stands.
        logger.info("job %s already %s; this run stops here", job_id, exc.status)
        return None


def _over_attempt_cap(client: ProgressClient, job_id: str, max_attempts: int) -> bool:
    """Fail the job instead of starting attempt ``max_attempts + 1``; True if it is over."""
    job = client.get(job_id)
    if job.terminal or job.attempt < max_attempts:
        return False
    message = (
        f"gave up after {job.attempt} attempts (the cap is {max_attempts}): each run stopped "
        "before finishing (its container crashed, ran out of memory or was preempted)"
    )
    logger.error("job %s: %s", job_id, message)
    try:
        client.fail(job_id, message=message, code="worker_lost")
    except JobFinished as exc:
        logger.info("job %s ended (%s) before giving up", job_id, exc.status)
    return True
