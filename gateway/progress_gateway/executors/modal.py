"""Modal executor: each job is a call of a function deployed with ``modal deploy``.

The call id is Modal's ``FunctionCall.object_id`` (``fc-…``): any gateway, after any restart, can
poll or cancel the work with ``FunctionCall.from_id``. Every SDK call uses Modal's async interface
(``.aio``) and is bounded by ``timeout_s``. The SDK is passed in — the real ``modal`` module by
default, ``tests/support/modal_standin.py`` in tests — and no ``modal.*`` exception leaves this
module: failures to reach Modal become ``ExecutorUnavailable``, anything else ``ExecutorError``.

``poll`` reads ``FunctionCall.get(timeout=0)``::

    get(timeout=0) returns or raises                    CallState
    a value                                             Succeeded(value)
    builtin TimeoutError (no output yet)                Running
    OutputExpiredError, NotFoundError, InternalFailure  Unknown          (→ worker_lost)
    FunctionTimeoutError                                Failed("timeout")
    RemoteError whose input the call graph shows        Failed("cancelled")
      TERMINATED (a cancelled input: its text is empty)
    WorkerFailed (the worker's own exception, wrapped)  Failed("worker_error", the worker's message)
    RemoteError, ExecutionError, Deserialization-,      Failed("worker_error", their message)
      SerializationError, any non-Modal exception
    any other modal.exception.Error (ConnectionError,   raises ExecutorUnavailable: the caller
      ServiceError, AuthError, ConflictError,             retries later, never finalizes on it
      InvalidError, modal's TimeoutError, …) or no
      answer within timeout_s

``get`` re-raises a worker's own exception whatever its class, so the deployed functions wrap every
exception of theirs in ``WorkerFailed`` (progress_workers/runner.py): a worker's ``TimeoutError``
or Modal ``ConnectionError`` cannot pass for "running" or "unavailable". As a backstop for a call
that says "running" for ever, ``max_run_s`` (the function's timeout plus a margin) bounds how long
the lifecycle believes it while the job's worker is silent.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Mapping, Sequence
from types import ModuleType
from typing import Protocol, cast

from pydantic import JsonValue
from redis.backoff import ExponentialWithJitterBackoff

from progress_core.errors import ExecutorError, ExecutorUnavailable
from progress_core.models import Job
from progress_gateway.executors.base import CallState, Failed, Running, Succeeded, Unknown
from progress_workers.kinds import JobKind
from progress_workers.reporter import describe_exception
from progress_workers.runner import WorkerFailed

logger = logging.getLogger("progress_gateway.executors.modal")

DEPLOY_HINT = "deploy it with `modal deploy -m progress_workers.modal_app` from the checkout"
CREDENTIALS_HINT = (
    "set MODAL_TOKEN_ID and MODAL_TOKEN_SECRET (or run `modal token new`) for the gateway"
)

# The deployed functions' timeout (``FUNCTION_TIMEOUT_S`` in progress_workers/modal_app.py) and the
# margin past it after which a call Modal still reports running, with a silent worker, is lost.
DEFAULT_FUNCTION_TIMEOUT_S = 3600.0
DEFAULT_TIMEOUT_MARGIN_S = 300.0
# Runs of one job at most: Modal re-runs an input whose container died, each a new attempt.
DEFAULT_MAX_ATTEMPTS = 3

# The oldest SDK whose RPC failures are all typed ``modal.exception`` classes (see
# ``check_sdk_version``); pyproject's ``modal`` and ``test`` extras require it too.
MODAL_MIN_VERSION = (1, 3)

# Modal's exceptions that mean "Modal could not be reached or would not serve us now" (its
# TimeoutError: retries of an RPC ran out of time). Looked up by name so that an SDK without one of
# them still works.
_OUTAGE_ERRORS = (
    "ConnectionError",
    "TimeoutError",
    "ServiceError",
    "InternalError",
    "AuthError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "ClientClosed",
)


# -- the SDK surface this executor uses --------------------------------------------------------


class _Hydrate(Protocol):
    def aio(self) -> Awaitable[object]: ...


class _Spawn(Protocol):
    def aio(
        self, *, job_id: str, params: dict[str, JsonValue], max_attempts: int
    ) -> Awaitable[ModalCall]: ...


class _Get(Protocol):
    def aio(self, timeout: float | None = None) -> Awaitable[object]: ...


class _Cancel(Protocol):
    def aio(self, terminate_containers: bool = False) -> Awaitable[object]: ...


class _InputInfo(Protocol):
    @property
    def function_call_id(self) -> str: ...

    @property
    def status(self) -> enum.Enum: ...


class _CallGraph(Protocol):
    def aio(self) -> Awaitable[Sequence[_InputInfo]]: ...


class ModalFunction(Protocol):
    @property
    def hydrate(self) -> _Hydrate: ...

    @property
    def spawn(self) -> _Spawn: ...


class ModalCall(Protocol):
    @property
    def object_id(self) -> str: ...

    @property
    def get(self) -> _Get: ...

    @property
    def cancel(self) -> _Cancel: ...

    @property
    def get_call_graph(self) -> _CallGraph: ...


class _FunctionType(Protocol):
    def from_name(
        self, app_name: str, name: str, *, environment_name: str | None = None
    ) -> ModalFunction: ...


class _FunctionCallType(Protocol):
    def from_id(self, function_call_id: str) -> ModalCall: ...


class ModalSDK(Protocol):
    """What ``ModalExecutor`` uses of the ``modal`` module; a stand-in provides the same."""

    @property
    def Function(self) -> _FunctionType: ...

    @property
    def FunctionCall(self) -> _FunctionCallType: ...

    @property
    def exception(self) -> ModuleType: ...


def check_sdk_version(version: str) -> None:
    """Refuse an SDK older than ``MODAL_MIN_VERSION``.

    Before 1.3 an RPC failure that outlasted the SDK's retries surfaced as a raw
    ``grpclib.GRPCError``, which ``poll`` cannot tell from the worker's own exception: it would fail
    a live job for good. Since 1.3 every such failure is a typed ``modal.exception`` class.
    """
    parts = [int(part) if part.isdigit() else 0 for part in version.split(".")[:2]]
    if tuple(parts) < MODAL_MIN_VERSION:
        floor = ".".join(map(str, MODAL_MIN_VERSION))
        raise ExecutorUnavailable(
            f"the modal executor needs modal>={floor} (installed: {version}): "
            "pip install -U 'progress-gateway[modal]'"
        )


def _import_modal() -> ModalSDK:
    try:
        import modal
    except ImportError as exc:
        raise ExecutorUnavailable(
            "the modal executor needs the Modal SDK: pip install 'progress-gateway[modal]'"
        ) from exc
    check_sdk_version(modal.__version__)
    # The module matches ModalSDK; mypy checks Function and FunctionCall but does not count the
    # submodule ``modal.exception`` (imported by modal itself) as an attribute, hence the cast.
    return cast(ModalSDK, modal)


# -- the executor ------------------------------------------------------------------------------


class ModalExecutor:
    name = "modal"

    def __init__(
        self,
        app_name: str,
        kinds: Mapping[str, JobKind],
        *,
        sdk: ModalSDK | None = None,
        environment_name: str | None = None,
        timeout_s: float = 30.0,
        function_timeout_s: float = DEFAULT_FUNCTION_TIMEOUT_S,
        timeout_margin_s: float = DEFAULT_TIMEOUT_MARGIN_S,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        retry_min_s: float = 1.0,
        retry_max_s: float = 30.0,
    ) -> None:
        if timeout_s <= 0:
            raise ValueError("timeout_s must be > 0")
        if function_timeout_s <= 0 or timeout_margin_s < 0:
            raise ValueError("function_timeout_s must be > 0 and timeout_margin_s >= 0")
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.max_attempts = max_attempts
        self.app_name = app_name
        self.environment_name = environment_name
        self.timeout_s = timeout_s
        # Bounded: no input runs past its function's timeout; a call still "running" after its
        # worker has been silent this long is lost (the lifecycle finalizes it).
        self.max_run_s = function_timeout_s + timeout_margin_s
        self._functions_by_kind: dict[str, str] = {}
        for kind in kinds.values():
            if kind.executor != self.name:
                continue
            if not kind.modal_function:
                raise ValueError(f"kind {kind.name!r} runs on modal but names no modal_function")
            self._functions_by_kind[kind.name] = kind.modal_function
        self._sdk = sdk if sdk is not None else _import_modal()
        errors = self._sdk.exception
        self._errors = errors
        self._outage: tuple[type[BaseException], ...] = tuple(
            getattr(errors, name) for name in _OUTAGE_ERRORS if hasattr(errors, name)
        )
        # What get() raises to describe the call's own outcome (``_process_result`` in
        # modal/_utils/function_utils.py), as opposed to a failed RPC.
        self._outcomes: tuple[type[BaseException], ...] = (
            errors.RemoteError,
            errors.ExecutionError,
            errors.DeserializationError,
            errors.SerializationError,
        )
        self._handles: dict[str, ModalFunction] = {}
        # Set while Modal has not answered the startup lookup (see ``start``).
        self.unavailable_reason: str | None = None
        self._retry_task: asyncio.Task[None] | None = None
        self._backoff = ExponentialWithJitterBackoff(base=retry_min_s, cap=retry_max_s)

    # -- Executor --------------------------------------------------------------------------------

    async def start(self) -> None:
        """Look up every deployed function our kinds name.

        Fails fast only when retrying cannot help: a function not deployed (``NotFoundError``) or
        no valid credentials (``AuthError``). If Modal is merely unreachable or slow, the gateway
        starts degraded: ``unavailable_reason`` says why, Modal kinds answer 503
        ``executor_unavailable`` and the lookup is retried in the background until it succeeds.
        """
        try:
            await self._look_up_all()
        except ExecutorUnavailable as exc:
            if isinstance(exc.__cause__, self._errors.NotFoundError | self._errors.AuthError):
                raise
            self.unavailable_reason = exc.message
            logger.warning("modal executor starts degraded, retrying: %s", exc.message)
            self._retry_task = asyncio.create_task(self._keep_looking_up(), name="pgw-modal-lookup")

    async def _look_up_all(self) -> None:
        for function_name in sorted(set(self._functions_by_kind.values())):
            where = self._where(function_name)
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._handle(function_name).hydrate.aio()
            except TimeoutError as exc:
                raise ExecutorUnavailable(
                    f"Modal did not answer within {self.timeout_s}s while looking up {where}"
                ) from exc
            except self._errors.NotFoundError as exc:
                raise ExecutorUnavailable(
                    f"{where} is not deployed ({exc}); {DEPLOY_HINT}"
                ) from exc
            except self._errors.AuthError as exc:
                raise ExecutorUnavailable(
                    f"no valid Modal credentials to look up {where} ({exc}); {CREDENTIALS_HINT}"
                ) from exc
            except Exception as exc:
                error = self._translate(exc, f"cannot look up {where}")
                if not isinstance(error, ExecutorUnavailable):
                    error = ExecutorUnavailable(error.message)
                raise error from exc
            logger.info("modal executor: %s is deployed", where)

    async def _keep_looking_up(self) -> None:
        """Retry the startup lookup with jittered backoff until Modal answers."""
        failures = 0
        while self.unavailable_reason is not None:
            failures += 1
            await asyncio.sleep(self._backoff.compute(failures))
            try:
                await self._look_up_all()
            except ExecutorUnavailable as exc:
                self.unavailable_reason = exc.message
                logger.warning("modal executor still unavailable: %s", exc.message)
            else:
                self.unavailable_reason = None
                logger.info("modal executor: Modal answers again after %d retries", failures)

    async def spawn(self, job: Job) -> str:
        if self.unavailable_reason is not None:
            raise ExecutorUnavailable(
                f"cannot spawn job {job.id}: Modal has not answered since startup "
                f"({self.unavailable_reason}); retrying",
                job_id=job.id,
            )
        function_name = self._functions_by_kind.get(job.kind)
        if function_name is None:
            raise ExecutorError(
                f"kind {job.kind!r} of job {job.id} does not run on the modal executor",
                job_id=job.id,
            )
        where = self._where(function_name)
        try:
            async with asyncio.timeout(self.timeout_s):
                call = await self._handle(function_name).spawn.aio(
                    job_id=job.id, params=job.params, max_attempts=self.max_attempts
                )
                call_id = call.object_id
        except TimeoutError as exc:
            # Modal may have accepted the call: its worker then records its own call id, or finds
            # the job ended and does nothing.
            raise ExecutorUnavailable(
                f"Modal did not confirm the spawn of job {job.id} on {where} "
                f"within {self.timeout_s}s",
                job_id=job.id,
            ) from exc
        except self._errors.NotFoundError as exc:
            raise ExecutorError(
                f"cannot spawn job {job.id}: {where} is not deployed ({exc}); {DEPLOY_HINT}",
                job_id=job.id,
            ) from exc
        except Exception as exc:
            raise self._translate(exc, f"cannot spawn job {job.id} on {where}", job.id) from exc
        logger.info("job %s spawned on %s as call %s", job.id, where, call_id)
        return call_id

    async def poll(self, call_id: str) -> CallState:
        try:
            async with asyncio.timeout(self.timeout_s):
                call = self._sdk.FunctionCall.from_id(call_id)
                try:
                    value = await call.get.aio(timeout=0)
                except Exception as exc:  # noqa: BLE001 - get re-raises the worker's own exception
                    state = self._call_state(call_id, exc)
                    if isinstance(state, Failed) and isinstance(exc, self._errors.RemoteError):
                        state = await self._cancelled_or(call, state)
                    return state
        except TimeoutError as exc:
            raise ExecutorUnavailable(
                f"Modal did not answer a poll of call {call_id} within {self.timeout_s}s"
            ) from exc
        logger.debug("call %s succeeded", call_id)
        return Succeeded(value)

    async def cancel(self, call_id: str) -> None:
        await self._cancel(call_id, terminate=False)

    async def terminate(self, call_id: str) -> None:
        """Cancel and stop the containers running the call: for an input that did not stop on
        the cancellation Modal delivers through the container's heartbeat."""
        await self._cancel(call_id, terminate=True)

    async def _cancel(self, call_id: str, *, terminate: bool) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                await self._sdk.FunctionCall.from_id(call_id).cancel.aio(
                    terminate_containers=terminate
                )
        except TimeoutError as exc:
            raise ExecutorUnavailable(
                f"Modal did not confirm the cancellation of call {call_id} within {self.timeout_s}s"
            ) from exc
        except self._errors.NotFoundError as exc:
            # Nothing left to cancel: cancel is idempotent.
            logger.info("cancel of call %s: Modal does not know it (%s)", call_id, exc)
            return
        except Exception as exc:
            raise self._translate(exc, f"cannot cancel call {call_id}") from exc
        logger.info("call %s cancelled%s", call_id, " (containers terminated)" if terminate else "")

    async def aclose(self) -> None:
        # Modal's client is shared by the process and closed with it; only our handles go.
        if self._retry_task is not None:
            self._retry_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retry_task
            self._retry_task = None
        self._handles.clear()

    # -- internals -------------------------------------------------------------------------------

    def _where(self, function_name: str) -> str:
        environment = f" in environment {self.environment_name!r}" if self.environment_name else ""
        return f"Modal function {function_name!r} of app {self.app_name!r}{environment}"

    def _handle(self, function_name: str) -> ModalFunction:
        handle = self._handles.get(function_name)
        if handle is None:
            # Lazy: no network until hydrate or spawn.
            handle = self._sdk.Function.from_name(
                self.app_name, function_name, environment_name=self.environment_name
            )
            self._handles[function_name] = handle
        return handle

    def _translate(self, exc: Exception, what: str, job_id: str | None = None) -> ExecutorError:
        if isinstance(exc, self._outage):
            logger.warning("%s: Modal unavailable: %s", what, describe_exception(exc))
            return ExecutorUnavailable(
                f"{what}: Modal is unavailable ({describe_exception(exc)})", job_id=job_id
            )
        logger.warning("%s: %s", what, describe_exception(exc))
        return ExecutorError(f"{what}: {describe_exception(exc)}", job_id=job_id)

    async def _cancelled_or(self, call: ModalCall, failed: Failed) -> Failed:
        """A cancelled input ends TERMINATED and ``get`` raises ``RemoteError('')``: the same
        class as a container's own failure, with no text to tell them apart. The call graph
        holds each input's status; TERMINATED means cancelled (by us, the dashboard or the CLI).
        """
        try:
            inputs = await call.get_call_graph.aio()
        except Exception as exc:
            raise self._translate(exc, f"cannot read the call graph of {call.object_id}") from exc
        statuses = {info.status.name for info in inputs if info.function_call_id == call.object_id}
        if "TERMINATED" in statuses:
            return Failed("cancelled", f"call {call.object_id} was cancelled on Modal")
        if failed.message == "RemoteError":
            return Failed(
                failed.code,
                f"RemoteError: call {call.object_id} ended without an output "
                f"(input status: {', '.join(sorted(statuses)) or 'unknown'})",
            )
        return failed

    def _call_state(self, call_id: str, exc: Exception) -> CallState:
        errors = self._errors
        message = describe_exception(exc)
        state: CallState
        if isinstance(exc, WorkerFailed):
            # The deployed function wraps every exception of its own in WorkerFailed.
            state = Failed("worker_error", exc.message)
        elif isinstance(exc, errors.OutputExpiredError):
            state = Unknown(f"Modal no longer holds the output of call {call_id} ({message})")
        elif isinstance(exc, errors.FunctionTimeoutError):
            state = Failed("timeout", message)
        elif isinstance(exc, TimeoutError):
            # The builtin TimeoutError is how get(timeout=0) says "no output yet".
            state = Running()
        elif isinstance(exc, errors.NotFoundError):
            state = Unknown(f"Modal does not know call {call_id} ({message})")
        elif isinstance(exc, errors.InternalFailure):
            state = Unknown(f"Modal lost call {call_id} to an internal failure ({message})")
        elif isinstance(exc, errors.Error) and not isinstance(exc, self._outcomes):
            # Any other Modal error is about the RPC, not the call (ConflictError is an
            # InvalidError, ServiceError covers UNAVAILABLE and DEADLINE_EXCEEDED, modal's own
            # TimeoutError is an RPC deadline): ask again later, never finalize on it.
            raise ExecutorUnavailable(
                f"cannot poll call {call_id}: Modal is unavailable ({message})"
            ) from exc
        else:
            state = Failed("worker_error", message)
        logger.debug("call %s: %s", call_id, state)
        return state
