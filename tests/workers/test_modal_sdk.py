"""The Modal SDK surface the executor, the deployed app and the stand-in rely on exists in the
installed ``modal``, with the same names, parameters and exception tree: an SDK upgrade that
renames or moves one fails here, not in production. The stand-in's methods are compared with the
real ones parameter by parameter."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path

import grpclib
import modal
import modal.exception
import pytest

from progress_core.errors import ExecutorUnavailable
from progress_core.store import StoreOptions
from progress_gateway.executors import modal as executor_module
from progress_gateway.executors.modal import MODAL_MIN_VERSION, check_sdk_version
from progress_workers.modal_app import APP_NAME
from tests.support.modal_standin import ModalStandIn


def parameters(function: Callable[..., object]) -> dict[str, inspect.Parameter]:
    return {
        name: parameter
        for name, parameter in inspect.signature(function).parameters.items()
        if name not in ("self", "cls")
    }


def assert_accepts_like(real: Callable[..., object], standin: Callable[..., object]) -> None:
    """Every parameter the stand-in takes, the real method takes the same way."""
    real_parameters = parameters(real)
    for name, parameter in parameters(standin).items():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            assert any(p.kind is inspect.Parameter.VAR_KEYWORD for p in real_parameters.values()), (
                f"{real.__qualname__} takes no **kwargs"
            )
            continue
        assert name in real_parameters, f"{real.__qualname__} has no parameter {name!r}"
        assert real_parameters[name].kind == parameter.kind, name
        assert real_parameters[name].default == parameter.default, name


def test_the_installed_sdk_is_at_least_the_floor() -> None:
    check_sdk_version(modal.__version__)
    assert MODAL_MIN_VERSION == (1, 3)


def test_the_calls_we_make_exist_with_their_async_forms(tmp_path: Path) -> None:
    standin = ModalStandIn(tmp_path, "sqlite:///unused.db", StoreOptions())
    function = standin.Function.from_name(APP_NAME, "demo")
    call = standin.FunctionCall.from_id("fc-01")
    pairs: list[tuple[Callable[..., object], Callable[..., object]]] = [
        (modal.Function.from_name, standin.Function.from_name),
        (modal.FunctionCall.from_id, standin.FunctionCall.from_id),
        (modal.Function.hydrate.aio, function.hydrate.aio),  # type: ignore[misc,unused-ignore]
        (modal.Function.spawn.aio, function.spawn.aio),  # type: ignore[misc,unused-ignore]
        (modal.FunctionCall.get.aio, call.get.aio),  # type: ignore[misc,unused-ignore]
        (modal.FunctionCall.cancel.aio, call.cancel.aio),  # type: ignore[misc,unused-ignore]
        (modal.FunctionCall.get_call_graph.aio, call.get_call_graph.aio),  # type: ignore[misc,unused-ignore]
        (modal.current_function_call_id, standin.current_function_call_id),
    ]
    for real, ours in pairs:
        assert_accepts_like(real, ours)
    assert "object_id" in dir(modal.FunctionCall)
    # from_name and from_id are lazy and synchronous: no .aio form to call.
    assert not hasattr(modal.Function.from_name, "aio")


def test_the_exception_tree_we_classify_by() -> None:
    errors = modal.exception
    # Gone: the only three answers that finalize a job as worker_lost.
    for name in ("NotFoundError", "OutputExpiredError", "InternalFailure"):
        assert issubclass(getattr(errors, name), errors.Error)
    # Outcomes of the call itself (_process_result).
    for name in ("FunctionTimeoutError", "RemoteError", "ExecutionError"):
        assert issubclass(getattr(errors, name), errors.Error)
    assert issubclass(errors.DeserializationError, errors.Error)
    assert issubclass(errors.SerializationError, errors.Error)
    # Order matters in poll: both are modal TimeoutErrors, neither is the builtin one.
    assert issubclass(errors.FunctionTimeoutError, errors.TimeoutError)
    assert issubclass(errors.OutputExpiredError, errors.TimeoutError)
    assert not issubclass(errors.TimeoutError, TimeoutError)
    # Transient, though an InvalidError: never "gone".
    assert issubclass(errors.ConflictError, errors.InvalidError)
    # Since 1.3 RPC failures are typed and still GRPCErrors: no blanket GRPCError catch.
    assert issubclass(errors.NotFoundError, grpclib.GRPCError)
    assert issubclass(errors.ServiceError, grpclib.GRPCError)
    # Raised inside a cancelled input; a BaseException, so never wrapped in WorkerFailed.
    assert not issubclass(errors.InputCancellation, Exception)
    for name in executor_module._OUTAGE_ERRORS:
        assert issubclass(getattr(errors, name), errors.Error), name


def test_the_call_graph_reports_terminated_inputs() -> None:
    from modal.call_graph import InputInfo, InputStatus  # type: ignore[attr-defined,unused-ignore]

    fields = InputInfo.__dataclass_fields__
    assert {"function_call_id", "status"} <= set(fields)
    assert InputStatus.TERMINATED.name == "TERMINATED"


@pytest.mark.parametrize("version", ["1.2.9", "1.1.3", "0.73.0"])
def test_an_older_sdk_is_refused(version: str) -> None:
    with pytest.raises(ExecutorUnavailable, match=r"modal>=1\.3"):
        check_sdk_version(version)
