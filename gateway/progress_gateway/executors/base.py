"""The executor seam: start work somewhere, ask how it is doing, stop it.

An executor returns a call id at once; the id is stored on the job so that any gateway, after any
restart, can poll or cancel the work. ``poll`` is how the reaper and lazy finalization learn the
truth about a job whose heartbeat went quiet: it never guesses from age.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, TypeAlias, runtime_checkable

from progress_core.models import Job


@dataclass(frozen=True, slots=True)
class Running:
    """The call is alive: keep the job, whatever its heartbeat says."""


@dataclass(frozen=True, slots=True)
class Succeeded:
    result: object


@dataclass(frozen=True, slots=True)
class Failed:
    code: str  # an ErrorCode (docs/design.md §3): worker_error, timeout, cancelled
    message: str


@dataclass(frozen=True, slots=True)
class Unknown:
    """The executor no longer knows the call (process gone, output expired): ``worker_lost``."""

    reason: str


CallState: TypeAlias = Running | Succeeded | Failed | Unknown


class Executor(Protocol):
    name: str

    async def start(self) -> None:
        """Prepare (connect, look up deployed functions); fail fast with a clear message."""
        ...

    async def spawn(self, job: Job) -> str:
        """Start the job's work and return its call id. Raises ``ExecutorError`` /
        ``ExecutorUnavailable`` when the work could not be started."""
        ...

    async def poll(self, call_id: str) -> CallState: ...

    async def cancel(self, call_id: str) -> None:
        """Stop the call (cooperatively first where the executor can); idempotent."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class Bounded(Protocol):
    """An executor whose calls cannot outlive ``max_run_s`` (Modal kills an input at its
    function's timeout): a call it still reports running after its worker has been silent that
    long is lost, whatever the executor says."""

    max_run_s: float


@runtime_checkable
class Terminable(Protocol):
    """An executor that can stop a call by force when cooperative cancellation did not."""

    async def terminate(self, call_id: str) -> None: ...


@runtime_checkable
class Degradable(Protocol):
    """An executor that can run degraded: ``unavailable_reason`` is set while it cannot take
    work (its service has not answered since startup); the gateway serves everything else."""

    unavailable_reason: str | None
