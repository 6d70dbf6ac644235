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
) -> object:
    """Validate params, record our call id if the spawner could not, run, report the end.

    Recording the call id from inside the call closes the gap where a gateway dies between
    spawning the work and storing its id: the work itself makes sure it can be found again.
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
    try:
        with client.reporter(job_id, heartbeat_s=heartbeat_s) as reporter:
            result = function(reporter, parsed)
            if not reporter.finished:
                reporter.succeed(result)
            return result
    except JobFinished as exc:
        # The job ended elsewhere: cancelled by its owner, or finished by an earlier attempt
        # before this retried run (a preemption) started. Its recorded state stands.
        logger.info("job %s already %s; this run stops here", job_id, exc.status)
        return None
