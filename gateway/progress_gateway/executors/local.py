"""Local executor: each job runs in a child process on this host (the embedded default).

The call id is ``local:<pid>:<start ticks>`` — the process start time from ``/proc`` makes it
immune to pid reuse, and it still resolves after a gateway restart, when the job's process is no
longer our child. Concurrency is bounded by lock files that a child holds while it works, so the
bound survives gateway restarts too; a child waiting for a slot keeps its job ``queued``.
Cancel is cooperative first (the job's ``cancel_requested`` flag, set by the caller), then
SIGTERM (the child turns it into a cancellation), then SIGKILL of the process group.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import IO, Any

from progress_core.errors import BadRequest, ExecutorError
from progress_core.models import Job
from progress_gateway.executors.base import CallState, Running, Unknown
from progress_gateway.tasks import TaskGroup
from progress_workers import slots

logger = logging.getLogger("progress_gateway.executors.local")

ExitHandler = Callable[[str, str, int | None], Coroutine[Any, Any, None]]


def process_start_ticks(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (start time in clock ticks); None if gone or a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    state, start_ticks = fields[0], fields[19]
    return None if state in ("Z", "X") else int(start_ticks)


def parse_call_id(call_id: str) -> tuple[int, int]:
    scheme, _, rest = call_id.partition(":")
    pid_text, _, ticks_text = rest.partition(":")
    if scheme != "local" or not pid_text.isdigit() or not ticks_text.isdigit():
        raise BadRequest(f"not a local call id: {call_id!r}")
    return int(pid_text), int(ticks_text)


class LocalExecutor:
    name = "local"

    def __init__(
        self,
        environment: Mapping[str, str],
        slots_dir: Path,
        *,
        concurrency: int = 4,
        cancel_grace_s: float = 5.0,
        heartbeat_s: float = 10.0,
        on_exit: ExitHandler | None = None,
    ) -> None:
        if concurrency < 1:
            raise BadRequest("local executor concurrency must be at least 1")
        self._environment = dict(environment)
        self._slots_dir = slots_dir
        self._concurrency = concurrency
        self._cancel_grace_s = cancel_grace_s
        self._heartbeat_s = heartbeat_s
        self._on_exit = on_exit
        self._pidfds: dict[str, int] = {}
        self._tasks = TaskGroup(logger, "local executor")
        self._users: IO[bytes] | None = None

    async def start(self) -> None:
        # Held until aclose: the slots directory is removed only once no gateway and no job
        # process uses it (``progress_workers.slots``).
        self._users = slots.join(self._slots_dir)

    async def spawn(self, job: Job) -> str:
        inherited = {
            name: value
            for name, value in os.environ.items()
            if not name.startswith(("GATEWAY_", "PGW_")) and name != "REDIS_URL"
        }
        environment = {
            **inherited,  # never a store setting: the child uses exactly the gateway's store
            **self._environment,
            "PGW_JOB_ID": job.id,
            "PGW_KIND": job.kind,
            "PGW_PARAMS": json.dumps(job.params),
            "PGW_SLOTS_DIR": str(self._slots_dir),
            "PGW_SLOTS": str(self._concurrency),
            "PGW_HEARTBEAT_S": str(self._heartbeat_s),
        }
        try:
            # posix_spawn, not asyncio's subprocess: asyncio kills children whose transport is
            # closed at shutdown, and jobs must outlive a restarting gateway.
            pid = os.posix_spawn(  # noqa: ASYNC221 - returns as soon as the child exists
                sys.executable,
                [sys.executable, "-m", "progress_workers.local_runner"],
                environment,
                setsid=True,  # its own process group: cancel reaches the job's children too
                file_actions=[(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0)],
            )
        except OSError as exc:
            raise ExecutorError(f"could not start a process for job {job.id}: {exc}") from exc
        ticks = process_start_ticks(pid) or 0  # 0: it died at once; it will poll as gone
        call_id = f"local:{pid}:{ticks}"
        self._watch(job.id, call_id, pid)
        logger.info("job %s started as %s", job.id, call_id)
        return call_id

    def _watch(self, job_id: str, call_id: str, pid: int) -> None:
        """Reap the child when it exits (a pidfd wakes the loop: no thread, no polling)."""
        loop = asyncio.get_running_loop()
        pidfd = os.pidfd_open(pid)
        self._pidfds[call_id] = pidfd

        def exited() -> None:
            loop.remove_reader(pidfd)
            os.close(self._pidfds.pop(call_id))
            try:
                _, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                status = 0
            code = os.waitstatus_to_exitcode(status) if status else 0
            logger.info("job %s process %s exited with %s", job_id, call_id, code)
            if self._on_exit is not None:
                self._tasks.spawn(self._on_exit(job_id, call_id, code))

        loop.add_reader(pidfd, exited)

    async def poll(self, call_id: str) -> CallState:
        pid, ticks = parse_call_id(call_id)
        if self._alive(pid, ticks):
            return Running()
        return Unknown(f"process {pid} is gone without reporting the end of its job")

    @staticmethod
    def _alive(pid: int, ticks: int) -> bool:
        current = process_start_ticks(pid)
        return current is not None and (ticks == 0 or current == ticks)

    async def cancel(self, call_id: str) -> None:
        """Escalate in the background: the caller has set ``cancel_requested`` already."""
        pid, ticks = parse_call_id(call_id)
        if not self._alive(pid, ticks):
            return
        self._tasks.spawn(self._escalate(pid, ticks), name=f"pgw-cancel-{call_id}")

    async def _escalate(self, pid: int, ticks: int) -> None:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if await self._exits_within(pid, ticks, self._cancel_grace_s):
                return
            logger.warning("process %d still running after cancel; sending %s", pid, sig.name)
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                return

    async def _exits_within(self, pid: int, ticks: int, seconds: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while loop.time() < deadline:
            if not self._alive(pid, ticks):
                return True
            await asyncio.sleep(0.1)
        return not self._alive(pid, ticks)

    async def aclose(self) -> None:
        # Children keep running: they report to the store, and a restarted gateway finds them.
        loop = asyncio.get_running_loop()
        for pidfd in self._pidfds.values():
            loop.remove_reader(pidfd)
            os.close(pidfd)
        self._pidfds.clear()
        await self._tasks.aclose()
        if self._users is not None:
            users, self._users = self._users, None
            if slots.leave(users, self._slots_dir):
                logger.info(
                    "removed the slots directory %s: no gateway or job uses it", self._slots_dir
                )
