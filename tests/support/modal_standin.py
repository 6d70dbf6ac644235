"""A stand-in for Modal's servers, for tests: the real ones cannot be reached from here.

``ModalStandIn`` offers exactly the part of the ``modal`` SDK that ``ModalExecutor`` uses — same
names, same arguments, the async ``.aio`` forms — and raises the real exception classes
(``standin.exception`` *is* ``modal.exception``)::

    standin.Function.from_name(app, name, environment_name=None)    a lazy handle
        .hydrate.aio()          NotFoundError: app or function not deployed; AuthError: no token
        .spawn.aio(**kwargs)    a FunctionCall; the input starts running at once
    standin.FunctionCall.from_id(call_id)                           a lazy handle, .object_id
        .get.aio(timeout=0)     the function's return value, or raises: TimeoutError (still
                                running), the function's own exception (re-raised, as Modal
                                does), FunctionTimeoutError, RemoteError (input terminated by a
                                cancellation), OutputExpiredError, NotFoundError (unknown id)
        .get_call_graph.aio()   [InputInfo] (modal.call_graph), the input's InputStatus
        .cancel.aio(terminate_containers=False)
                                idempotent; SIGUSR1 to the input's process, whose handler
                                raises InputCancellation inside the function, as Modal's
                                container does; terminate_containers=True also kills it
    standin.current_function_call_id()    inside an input its call id, elsewhere None
    standin.exception

The work is real. ``spawn`` starts a "container": a child process
(``python -m tests.support.modal_standin <state dir> <call id>``) that runs
``progress_workers.modal_app.run_input`` — the body of every deployed function — against the
test's store, killed at the deployed function's timeout as Modal would. The servers' state is a
directory of files per call id, so any stand-in over the same directory (a restarted gateway)
answers for calls it did not spawn::

    deployed.json    the deployed functions: environment/app/function → kind, timeout
    <id>.json        the input: app, function, kind, kwargs, store, timeout
    <id>.pid         the pid of the container running it (a new one after a preemption)
    <id>.ready       the container can take a cancellation signal
    <id>.cancel      cancellation requested
    <id>.out.json    the output: success + value | failure + exception | terminated | timeout
    <id>.expired     Modal no longer holds the output
    <id>.preempting  the input is between two containers
    <id>.retries     how often a dead container's input ran again (``kill``)
    <id>.log         the container's stdout and stderr

What running code cannot provoke is a knob: ``outage`` (every call raises Modal's
``ConnectionError``), ``hang`` (every call blocks), ``credentials = False`` (``AuthError``),
``failures[op] = exc`` (calls of ``op`` — hydrate, spawn, get, cancel — raise ``exc``),
``expire(call_id)``, ``preempt(call_id)``, ``kill(call_id)`` (the container dies; the input
runs again on a new one, as Modal does, up to ``MAX_INPUT_RETRIES`` times), ``hold_inputs``
(spawned inputs wait for ``release(call_id)``, as with no capacity). To mirror another SDK call,
add it to the handles with the real name and signature, and give it the real call's failure modes.

A cancelled input ends as Modal's container ends it: a TERMINATED result with no text, which
``get`` raises as ``RemoteError('')`` (modal/_runtime/container_io_manager.py,
``output_items_cancellation``; modal/_utils/function_utils.py, ``_process_result``), and
``get_call_graph`` shows its input ``TERMINATED``. An input cancelled before any container took it
(``hold_inputs``) ends the same way without running.
"""

from __future__ import annotations

import asyncio
import functools
import importlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from types import FrameType
from typing import Generic, TypeVar

import modal.exception

# Defined in modal.call_graph up to 1.3, in modal.types (re-exported by call_graph) since.
from modal.call_graph import InputInfo, InputStatus  # type: ignore[attr-defined,unused-ignore]

from progress_core.store import StoreOptions

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_ENVIRONMENT = "main"
DEFAULT_FUNCTION_TIMEOUT_S = 300.0  # Modal's default
CANCELLED_MESSAGE = "Input was cancelled by user"
# How often Modal runs an input again after its container died (the issue tracker and the SDK's
# own MAX_INTERNAL_FAILURE_COUNT for sync calls, modal/_functions.py, both say 8).
MAX_INPUT_RETRIES = 8  # what Modal's container raises on a cancel

_current_call_id: str | None = None


def current_function_call_id() -> str | None:
    return _current_call_id


_F = TypeVar("_F", bound=Callable[..., Awaitable[object]])


@dataclass(frozen=True)
class _Method(Generic[_F]):
    """A method's ``.aio`` form, as the real SDK's objects expose it (only that form here)."""

    aio: _F


@dataclass(frozen=True)
class Deployed:
    kind: str
    timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S


class _FunctionHandle:
    def __init__(self, standin: ModalStandIn, app_name: str, name: str, environment: str) -> None:
        self._standin = standin
        self.app_name = app_name
        self.name = name
        self.environment = environment
        self.hydrate = _Method(self._hydrate)
        self.spawn = _Method(self._spawn)

    async def _hydrate(self) -> _FunctionHandle:
        await self._standin.rpc("hydrate")
        self._standin.lookup(self.app_name, self.name, self.environment)
        return self

    async def _spawn(self, **kwargs: object) -> _CallHandle:
        await self._standin.rpc("spawn")
        deployed = self._standin.lookup(self.app_name, self.name, self.environment)
        call_id = self._standin.create_call(self.app_name, self.name, deployed, kwargs)
        return _CallHandle(self._standin, call_id)


class _CallHandle:
    def __init__(self, standin: ModalStandIn, call_id: str) -> None:
        self._standin = standin
        self.object_id = call_id
        self.get = _Method(functools.partial(standin.get_output, call_id))
        self.cancel = _Method(functools.partial(standin.cancel_call, call_id))
        self.get_call_graph = _Method(functools.partial(standin.call_graph, call_id))


class _FunctionApi:
    def __init__(self, standin: ModalStandIn) -> None:
        self._standin = standin

    def from_name(
        self, app_name: str, name: str, *, environment_name: str | None = None
    ) -> _FunctionHandle:
        if "." in name:
            raise modal.exception.InvalidError(f"Invalid Function name: {name!r}.")
        environment = environment_name or DEFAULT_ENVIRONMENT
        return _FunctionHandle(self._standin, app_name, name, environment)


class _FunctionCallApi:
    def __init__(self, standin: ModalStandIn) -> None:
        self._standin = standin

    def from_id(self, function_call_id: str) -> _CallHandle:
        return _CallHandle(self._standin, function_call_id)


class ModalStandIn:
    """Modal's servers for one test: deployed functions, calls, and the knobs."""

    exception = modal.exception

    def __init__(
        self,
        state_dir: Path,
        store_url: str,
        store_options: StoreOptions,
        *,
        heartbeat_s: float = 10.0,
    ) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_dir = state_dir
        self.store_url = store_url
        self.store_options = store_options
        self.heartbeat_s = heartbeat_s
        self.outage = False
        self.hang = False
        self.credentials = True
        self.hold_inputs = False
        self.failures: dict[str, BaseException] = {}
        self.calls: dict[str, int] = {}
        self.Function = _FunctionApi(self)
        self.FunctionCall = _FunctionCallApi(self)
        self.current_function_call_id = current_function_call_id
        self._containers: list[subprocess.Popen[bytes]] = []
        self._closed = False

    # -- what a test sets up -------------------------------------------------------------------

    def deploy(
        self,
        app_name: str,
        function_name: str,
        kind: str,
        *,
        timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S,
        environment_name: str | None = None,
    ) -> None:
        """``modal deploy``: ``function_name`` of ``app_name`` runs ``run_input`` for ``kind``."""
        environment = environment_name or DEFAULT_ENVIRONMENT
        deployed = self._deployed()
        deployed[_deployment_key(environment, app_name, function_name)] = asdict(
            Deployed(kind, timeout_s)
        )
        self._write_json(self.state_dir / "deployed.json", deployed)

    def expire(self, call_id: str) -> None:
        """Modal dropped the call's output (it keeps outputs for a limited time)."""
        self._path(call_id, "expired").touch()

    async def preempt(self, call_id: str, *, grace_s: float = 0.2) -> bool:
        """Preempt the input's container as Modal does: SIGINT, SIGKILL after ``grace_s``, then
        run the same input (same call id) on a new container, unless it finished meanwhile.
        True if the container had to be killed (it did not exit on SIGINT within ``grace_s``)."""
        pid = self._pid(call_id)
        preempting = self._path(call_id, "preempting")
        preempting.touch()  # until the input runs again, get answers "running"
        os.kill(pid, signal.SIGINT)
        killed = not await self._exited(pid, grace_s)
        if killed:
            os.kill(pid, signal.SIGKILL)
            if not await self._exited(pid, 10.0):
                raise RuntimeError(f"container {pid} of {call_id} survived SIGKILL")
        if self._read_output(call_id) is None:
            self._path(call_id, "ready").unlink(missing_ok=True)
            self._start_container(call_id)
        preempting.unlink()
        return killed

    def pid(self, call_id: str) -> int:
        return self._pid(call_id)

    def alive(self, pid: int) -> bool:
        return self._alive(pid)

    def freeze(self, call_id: str) -> None:
        """The input's container hangs (SIGSTOP): it neither reports nor handles a cancel."""
        os.kill(self._pid(call_id), signal.SIGSTOP)

    def kill(self, call_id: str) -> None:
        """The input's container dies (a crash, out of memory): SIGKILL, no output. Modal runs
        the input again on a new container, up to ``MAX_INPUT_RETRIES`` times."""
        os.kill(self._pid(call_id), signal.SIGKILL)

    def close(self) -> None:
        """Stop every container this stand-in started (test teardown)."""
        self._closed = True
        for process in self._containers:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)
        self._containers.clear()

    # -- the servers ---------------------------------------------------------------------------

    async def rpc(self, operation: str) -> None:
        """Every call to "Modal" passes here first: the knobs, and ``calls`` counts them."""
        self.calls[operation] = self.calls.get(operation, 0) + 1
        if self.hang:
            await asyncio.Event().wait()
        if self.outage:
            raise modal.exception.ConnectionError("Could not connect to the Modal server.")
        if not self.credentials:
            raise modal.exception.AuthError(
                "Token missing. Could not authenticate client. If you have token credentials, "
                "see modal.com/docs/sdk/py/latest/config for setup help."
            )
        failure = self.failures.get(operation)
        if failure is not None:
            raise failure

    def lookup(self, app_name: str, name: str, environment: str) -> Deployed:
        deployed = self._deployed()
        found = deployed.get(_deployment_key(environment, app_name, name))
        if found is not None:
            return Deployed(**found)  # type: ignore[arg-type]
        if not any(key.startswith(_deployment_key(environment, app_name, "")) for key in deployed):
            raise modal.exception.NotFoundError(
                f"Lookup failed for Function '{name}' from the '{app_name}' app: "
                f"App '{app_name}' not found in environment '{environment}'."
            )
        raise modal.exception.NotFoundError(
            f"Lookup failed for Function '{name}' from the '{app_name}' app: "
            f"Function '{name}' not found."
        )

    def create_call(
        self, app_name: str, name: str, deployed: Deployed, kwargs: dict[str, object]
    ) -> str:
        call_id = f"fc-{uuid.uuid4().hex[:26].upper()}"
        spec = {
            "call_id": call_id,
            "app": app_name,
            "function": name,
            "kind": deployed.kind,
            "timeout_s": deployed.timeout_s,
            "kwargs": kwargs,
            "store_url": self.store_url,
            "store_options": asdict(self.store_options),
            "heartbeat_s": self.heartbeat_s,
        }
        self._write_json(self._path(call_id, "json"), spec)
        if not self.hold_inputs:
            self._start_container(call_id)
        return call_id

    def release(self, call_id: str) -> None:
        """Start a held input's container (Modal found capacity)."""
        if not self._path(call_id, "pid").exists() and self._read_output(call_id) is None:
            self._start_container(call_id)

    async def get_output(self, call_id: str, timeout: float | None = None) -> object:
        await self.rpc("get")
        self._spec(call_id)
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        while True:
            if self._path(call_id, "expired").exists():
                raise modal.exception.OutputExpiredError()
            # A container that died without an output is no answer: Modal runs the input again
            # (``_rerun_if_dead``) and the call stays pending meanwhile.
            output = self._read_output(call_id)
            if output is not None:
                return _deliver(output)
            if deadline is not None and loop.time() >= deadline:
                raise TimeoutError()
            await asyncio.sleep(0.02)

    async def cancel_call(self, call_id: str, terminate_containers: bool = False) -> None:
        await self.rpc("cancel")
        self._spec(call_id)
        if terminate_containers and self._read_output(call_id) is None:
            # The input ends TERMINATED and its container is killed, whatever it was doing.
            self._write_json(self._path(call_id, "out.json"), {"status": "terminated"})
            if self._path(call_id, "pid").exists() and self._alive(self._pid(call_id)):
                os.kill(self._pid(call_id), signal.SIGKILL)
        marker = self._path(call_id, "cancel")
        if marker.exists() or self._read_output(call_id) is not None:
            return
        # The marker first: a container that is not ready yet checks it once it is.
        marker.touch()
        if not self._path(call_id, "pid").exists():
            # Never started (held): Modal terminates the pending input without running it.
            self._write_json(self._path(call_id, "out.json"), {"status": "terminated"})
            return
        if self._path(call_id, "ready").exists():
            pid = self._pid(call_id)
            if self._alive(pid):
                os.kill(pid, signal.SIGUSR1)

    async def call_graph(self, call_id: str) -> list[InputInfo]:
        """The call's one input with its status, as ``FunctionCall.get_call_graph`` reports it."""
        await self.rpc("call_graph")
        spec = self._spec(call_id)
        output = self._read_output(call_id)
        status = InputStatus.PENDING if output is None else _INPUT_STATUS[str(output["status"])]
        return [
            InputInfo(f"in-{call_id[3:]}", call_id, "ta-01", status, str(spec["function"]), "", [])
        ]

    # -- internals -----------------------------------------------------------------------------

    def _deployed(self) -> dict[str, dict[str, object]]:
        path = self.state_dir / "deployed.json"
        if not path.exists():
            return {}
        deployed: dict[str, dict[str, object]] = json.loads(path.read_text())
        return deployed

    @staticmethod
    def _write_json(path: Path, value: object) -> None:
        tmp = path.with_name(f"{path.name}.tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(path)

    def _path(self, call_id: str, suffix: str) -> Path:
        return self.state_dir / f"{call_id}.{suffix}"

    def _spec(self, call_id: str) -> dict[str, object]:
        path = self._path(call_id, "json")
        if not path.exists():
            raise modal.exception.NotFoundError(f"Function call {call_id!r} not found")
        spec: dict[str, object] = json.loads(path.read_text())
        return spec

    def _read_output(self, call_id: str) -> dict[str, object] | None:
        try:
            output: dict[str, object] = json.loads(self._path(call_id, "out.json").read_text())
        except FileNotFoundError:
            return None
        return output

    def _pid(self, call_id: str) -> int:
        self._spec(call_id)
        return int(self._path(call_id, "pid").read_text())

    def _alive(self, pid: int) -> bool:
        for process in self._containers:
            if process.pid == pid:
                return process.poll() is None
        # Not ours (another stand-in started it): a zombie or a vanished pid is gone.
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except FileNotFoundError:
            return False
        return stat[stat.rindex(")") + 2] not in "ZX"

    async def _exited(self, pid: int, within: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while True:
            if not self._alive(pid):
                return True
            if loop.time() >= deadline:
                return False
            await asyncio.sleep(0.02)

    def _start_container(self, call_id: str) -> None:
        with self._path(call_id, "log").open("ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "tests.support.modal_standin", str(self.state_dir), call_id],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._containers.append(process)
        self._write_json(self._path(call_id, "pid"), process.pid)
        threading.Thread(target=self._rerun_if_dead, args=(call_id, process), daemon=True).start()

    def _rerun_if_dead(self, call_id: str, process: subprocess.Popen[bytes]) -> None:
        """Modal's worker side: an input whose container died without an output runs again on a
        new container (a new attempt); after ``MAX_INPUT_RETRIES`` it ends INTERNAL_FAILURE."""
        process.wait()
        if (
            self._closed
            or self._read_output(call_id) is not None
            or self._path(call_id, "preempting").exists()
            or self._pid(call_id) != process.pid  # preempt() started the next one itself
        ):
            return
        retries_path = self._path(call_id, "retries")
        retries = int(retries_path.read_text()) if retries_path.exists() else 0
        if retries >= MAX_INPUT_RETRIES:
            self._write_json(
                self._path(call_id, "out.json"),
                {"status": "internal_failure", "message": "container crashed repeatedly"},
            )
            return
        retries_path.write_text(str(retries + 1))
        self._path(call_id, "ready").unlink(missing_ok=True)
        self._start_container(call_id)


def _deployment_key(environment: str, app_name: str, function_name: str) -> str:
    return f"{environment}/{app_name}/{function_name}"


_INPUT_STATUS = {
    "success": InputStatus.SUCCESS,
    "failure": InputStatus.FAILURE,
    "terminated": InputStatus.TERMINATED,
    "timeout": InputStatus.TIMEOUT,
    "internal_failure": InputStatus.FAILURE,
}


def _deliver(output: dict[str, object]) -> object:
    """What ``get`` makes of an output: the value, or the exception Modal's client raises."""
    status, message = output["status"], str(output.get("message", ""))
    if status == "success":
        return output["value"]
    if status == "timeout":
        raise modal.exception.FunctionTimeoutError(message)
    if status == "internal_failure":
        raise modal.exception.InternalFailure(message)
    if status == "terminated":
        # Modal's container sends a TERMINATED result with no exception text (output_items_
        # cancellation in modal/_runtime/container_io_manager.py); _process_result raises it as
        # RemoteError(result.exception).
        raise modal.exception.RemoteError("")
    raise _rebuild_exception(str(output["module"]), str(output["type"]), message)


def _rebuild_exception(module: str, qualname: str, message: str) -> BaseException:
    """The worker's exception, as Modal's client deserializes it (or its fallback)."""
    try:
        cls: object = importlib.import_module(module)
        for part in qualname.split("."):
            cls = getattr(cls, part)
        if not (isinstance(cls, type) and issubclass(cls, BaseException)):
            raise TypeError(f"{module}.{qualname} is not an exception class")
        return cls(message)
    except Exception as exc:  # noqa: BLE001 - Modal's client falls back the same way
        return modal.exception.ExecutionError(
            f"Could not deserialize remote exception due to local error:\n{exc}\n"
            f"Here is the remote traceback:\n{module}.{qualname}: {message}"
        )


# -- the container ---------------------------------------------------------------------------


class _Container:
    """One input's process: runs the deployed function's body and writes the output once."""

    def __init__(self, state_dir: Path, call_id: str) -> None:
        self.state_dir = state_dir
        self.call_id = call_id
        self.spec: dict[str, object] = json.loads(self._path("json").read_text())
        self._lock = threading.Lock()
        self._written = False

    def _path(self, suffix: str) -> Path:
        return self.state_dir / f"{self.call_id}.{suffix}"

    def write_output(self, output: dict[str, object]) -> bool:
        with self._lock:
            if self._written:
                return False
            tmp = self._path("out.json.tmp")
            tmp.write_text(json.dumps(output))
            tmp.replace(self._path("out.json"))
            self._written = True
            return True

    def time_out(self) -> None:
        """Modal kills an input at its function's timeout: nothing else runs after this."""
        timeout_s = self.spec["timeout_s"]
        if self.write_output(
            {"status": "timeout", "message": f"Function timed out after {timeout_s}s"}
        ):
            os._exit(124)

    def run(self) -> None:
        global _current_call_id
        _current_call_id = self.call_id
        timer = threading.Timer(float(str(self.spec["timeout_s"])), self.time_out)
        timer.daemon = True
        timer.start()
        try:
            value = self._run_input()
        except modal.exception.InputCancellation:
            self.write_output({"status": "terminated"})
        except Exception as exc:  # noqa: BLE001 - the function's exception is the call's output
            self.write_output(
                {
                    "status": "failure",
                    "module": type(exc).__module__,
                    "type": type(exc).__qualname__,
                    "message": str(exc),
                }
            )
        else:
            try:
                self.write_output({"status": "success", "value": value})
            except TypeError as exc:
                self.write_output(
                    {
                        "status": "failure",
                        "module": "modal.exception",
                        "type": "SerializationError",
                        "message": f"the return value is not serializable: {exc}",
                    }
                )

    def _run_input(self) -> object:
        from progress_workers.modal_app import run_input
        from progress_workers.sync import ProgressClient

        def cancelled(signum: int, frame: FrameType | None) -> None:
            raise modal.exception.InputCancellation(CANCELLED_MESSAGE)

        spec = self.spec
        options = StoreOptions(**spec["store_options"])  # type: ignore[arg-type]
        kwargs: dict[str, object] = spec["kwargs"]  # type: ignore[assignment]
        try:
            signal.signal(signal.SIGUSR1, cancelled)
            self._path("ready").touch()
            if self._path("cancel").exists():
                raise modal.exception.InputCancellation(CANCELLED_MESSAGE)
            with ProgressClient.from_url(str(spec["store_url"]), options) as client:
                return run_input(
                    client,
                    kind=str(spec["kind"]),
                    call_id=current_function_call_id(),
                    heartbeat_s=float(str(spec["heartbeat_s"])),
                    **kwargs,  # type: ignore[arg-type]
                )
        finally:
            signal.signal(signal.SIGUSR1, signal.SIG_IGN)


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    state_dir, call_id = Path(argv[0]), argv[1]
    _Container(state_dir, call_id).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
