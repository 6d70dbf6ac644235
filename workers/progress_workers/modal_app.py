"""The deployable Modal app: ``modal deploy -m progress_workers.modal_app`` (from the checkout).

Each function is one job kind of ``progress_workers.kinds.KINDS`` whose executor is ``modal`` (its
``modal_function`` names the function here). The gateway spawns it with
``Function.from_name(APP_NAME, name).spawn(job_id=…, params=…)``; the function reports progress
straight into the gateway's Redis, whose URL comes from the Modal secret ``progress-gateway-redis``
(create it with ``modal secret create progress-gateway-redis GATEWAY_REDIS_URL=rediss://…``; add
``GATEWAY_KEY_PREFIX`` there too if the gateway uses a non-default prefix).

The function records its own call id on the job (``modal.current_function_call_id()``), so a
gateway that died between spawning and storing the id can still poll and cancel it.

Cancellation: ``FunctionCall.cancel()`` makes Modal raise ``InputCancellation`` inside the
function; the reporter ends the job ``cancelled``.

Preemption: Modal interrupts a preempted container with SIGINT, kills it after a grace period and
runs the same input again, with the same call id, on a new container. While an input runs, SIGINT
ends the container at once without recording anything (see ``_exit_on_sigint``): the job stays
``running``, and the retry's ``start`` makes it a new ``attempt`` (``attempt`` + 1, ``seq`` + 1).
Progress is not reset: it never decreases within a job, so the bar holds at the highest value the
first attempt reached until the new attempt passes it (docs/decisions.md, "attempt"). If Modal
does not retry, the reaper finds the call ended and finalizes the job. Modal also re-runs an input
whose container died (a crash, out of memory; up to ~8 times): the gateway passes
``max_attempts`` with every spawn, and past it the job fails ``worker_lost`` instead of running
again.

Importing this module defines the app and does nothing else: no credentials, no network, no
environment reads.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import FrameType

import modal

from progress_core.config import StoreConfig, worker_heartbeat_s
from progress_core.errors import JobFinished
from progress_workers.kinds import JobKind
from progress_workers.reporter import DEFAULT_HEARTBEAT_S, describe_exception
from progress_workers.runner import WorkerFailed, run_job
from progress_workers.sync import ProgressClient

logger = logging.getLogger("progress_workers.modal_app")

APP_NAME = "progress-gateway-workers"
SECRET_NAME = "progress-gateway-redis"
# Long exports are the point; Modal's default (300 s) would kill them.
FUNCTION_TIMEOUT_S = 60 * 60

_PROJECT = Path(__file__).resolve().parents[2]
# The packages go into the container as Python sources, plus the store's Lua scripts.
SOURCE_IGNORE = ~modal.FilePatternMatcher("**/*.py", "**/*.lua")

app = modal.App(APP_NAME)
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install_from_pyproject(str(_PROJECT / "pyproject.toml"))
    .add_local_python_source("progress_core", "progress_workers", ignore=SOURCE_IGNORE)
)
redis_secret = modal.Secret.from_name(SECRET_NAME, required_keys=["GATEWAY_REDIS_URL"])


# The exit status after SIGINT: the shell's convention for "killed by SIGINT".
SIGINT_EXIT_STATUS = 130


@contextmanager
def _exit_on_sigint() -> Iterator[None]:
    """While an input runs, SIGINT ends the container at once, leaving the job ``running``.

    Modal sends SIGINT on preemption, at the input's timeout, on ``modal app stop``, when a
    container is stopped and on ``modal deploy --strategy recreate``, then SIGKILL after a grace
    period (~30 s). Raising ``KeyboardInterrupt`` would make the reporter record a cancellation,
    which ends the job for good; ignoring the signal would pay for the grace period every time.
    Exiting leaves the job as it is: a re-run of the input is its next attempt, and otherwise the
    reaper finalizes it from Modal's answer. At most the last ``min_interval_s`` of progress is
    not written.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread; Modal runs sync inputs there
        return

    def interrupted(signum: int, frame: FrameType | None) -> None:
        logger.warning(
            "SIGINT (preemption, timeout or stop): exiting now; the job stays running and a "
            "re-run of this input continues it as a new attempt"
        )
        logging.shutdown()
        os._exit(SIGINT_EXIT_STATUS)

    previous = signal.signal(signal.SIGINT, interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextmanager
def _failures_wrapped() -> Iterator[None]:
    """Turn any ``Exception`` leaving a deployed function into one ``WorkerFailed``."""
    try:
        yield
    except WorkerFailed:
        raise
    except Exception as exc:
        raise WorkerFailed(describe_exception(exc)) from exc


def run_input(
    client: ProgressClient,
    job_id: str,
    kind: str | JobKind,
    params: object,
    *,
    call_id: str | None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    max_attempts: int | None = None,
) -> object:
    """The body of every function here: run the job's kind under a reporter.

    A retried input whose job has already ended (finished by the interrupted attempt, or
    cancelled meanwhile) returns ``None`` rather than failing the Modal call. Any other exception
    leaves as ``WorkerFailed`` (see there); Modal's ``InputCancellation`` and interrupts, which
    are not ``Exception``, pass unchanged for Modal's container to handle.
    """
    with _failures_wrapped(), _exit_on_sigint():
        try:
            return run_job(
                client,
                job_id,
                kind,
                params,
                executor="modal",
                call_id=call_id,
                heartbeat_s=heartbeat_s,
                max_attempts=max_attempts,
            )
        except JobFinished as exc:
            logger.info("job %s is already %s; nothing left to do", job_id, exc.status)
            return None


def _store_config() -> StoreConfig:
    config = StoreConfig.from_env()
    if config.url.startswith("sqlite:"):
        # Without it the worker would write to a SQLite file inside the container that no
        # gateway reads: fail loudly instead.
        raise RuntimeError(
            f"GATEWAY_REDIS_URL is not set: add it to the Modal secret {SECRET_NAME!r}"
        )
    return config


def _run(job_id: str, kind: str, params: object, max_attempts: int | None) -> object:
    with _failures_wrapped():
        config = _store_config()
        with ProgressClient.from_url(config.url, config.options) as client:
            return run_input(
                client,
                job_id,
                kind,
                params,
                call_id=modal.current_function_call_id(),
                heartbeat_s=worker_heartbeat_s(default=DEFAULT_HEARTBEAT_S),
                max_attempts=max_attempts,
            )


@app.function(image=image, secrets=[redis_secret], timeout=FUNCTION_TIMEOUT_S)
def demo(job_id: str, params: dict[str, object], max_attempts: int | None = None) -> object:
    """The ``demo_modal`` kind: the demo job, run on Modal (``max_attempts``: see run_job)."""
    return _run(job_id, "demo_modal", params, max_attempts)
