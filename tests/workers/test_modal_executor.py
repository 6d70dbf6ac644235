"""The Modal executor against the Modal stand-in: real worker processes, a real store, both
backends. What runs in the stand-in's "containers" is
``progress_workers.modal_app.run_input``, the body of the deployed functions."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import modal.exception
import pytest

from progress_core.errors import ExecutorError, ExecutorUnavailable, JobFinished
from progress_core.models import AttachCall, Create, Job, JobStatus
from progress_core.store import JobStore, StoreOptions
from progress_gateway.executors.base import CallState, Failed, Running, Succeeded, Unknown
from progress_gateway.executors.modal import MODAL_MIN_VERSION, ModalExecutor, check_sdk_version
from progress_gateway.lifecycle import Lifecycle
from progress_gateway.metrics import Metrics
from progress_workers.kinds import KINDS
from progress_workers.modal_app import APP_NAME
from progress_workers.runner import WorkerFailed
from progress_workers.sync import ProgressClient
from tests.support.contract import eventually
from tests.support.modal_standin import CANCELLED_MESSAGE, ModalStandIn

ROOT = Path(__file__).resolve().parents[2]
LONG = {"steps": 400, "step_s": 0.05}  # 20 s: long enough to act on while it runs


@pytest.fixture
def standin(tmp_path: Path, store_url: str, store_options: StoreOptions) -> Iterator[ModalStandIn]:
    standin = ModalStandIn(tmp_path / "modal", store_url, store_options, heartbeat_s=0.2)
    standin.deploy(APP_NAME, "demo", "demo_modal")
    yield standin
    standin.close()


@pytest.fixture
async def executor(standin: ModalStandIn) -> AsyncIterator[ModalExecutor]:
    executor = ModalExecutor(APP_NAME, KINDS, sdk=standin, timeout_s=10)
    await executor.start()
    yield executor
    await executor.aclose()


@pytest.fixture
async def lifecycle(store: JobStore, executor: ModalExecutor) -> AsyncIterator[Lifecycle]:
    lifecycle = Lifecycle(store, {"modal": executor}, KINDS, Metrics(), cancel_timeout_s=15)
    yield lifecycle
    await lifecycle.aclose()


async def finished(store: JobStore, job_id: str, timeout: float = 30) -> Job:
    async def terminal() -> bool:
        return (await store.get(job_id)).terminal

    await eventually(terminal, timeout, f"job {job_id} to finish")
    return await store.get(job_id)


async def progressing(store: JobStore, job_id: str, above: float = 0) -> Job:
    async def moved() -> bool:
        return (await store.get(job_id)).progress > above

    await eventually(moved, 30, f"job {job_id} to pass {above}%")
    return await store.get(job_id)


async def settled(executor: ModalExecutor, call_id: str, timeout: float = 30) -> CallState:
    """Poll until the call is no longer running (the output follows the job's end closely)."""
    states: list[CallState] = []

    async def ended() -> bool:
        states.append(await executor.poll(call_id))
        return not isinstance(states[-1], Running)

    await eventually(ended, timeout, f"call {call_id} to end")
    return states[-1]


def call_id_of(job: Job) -> str:
    assert job.call_id is not None
    return job.call_id


async def test_job_runs_on_modal_and_poll_returns_its_result(
    lifecycle: Lifecycle, executor: ModalExecutor, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo_modal", {"steps": 4, "step_s": 0})
    assert job.executor == "modal"
    assert call_id_of(job).startswith("fc-")
    done = await finished(store, job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert done.attempt == 1
    assert done.call_id == job.call_id
    progress = [event.progress for event in await store.history(job.id)]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert await settled(executor, call_id_of(job)) == Succeeded(done.result)


async def test_a_restarted_gateway_polls_calls_it_did_not_spawn(
    executor: ModalExecutor,
    standin: ModalStandIn,
    store: JobStore,
    store_url: str,
    store_options: StoreOptions,
) -> None:
    job = await store.create(Create.build(owner="alice", kind="demo_modal", params=LONG))
    call_id = await executor.spawn(job)
    await progressing(store, job.id)
    # A new gateway: a new SDK client and executor, the same Modal.
    other = ModalStandIn(standin.state_dir, store_url, store_options)
    restarted = ModalExecutor(APP_NAME, KINDS, sdk=other, timeout_s=10)
    await restarted.start()
    assert await restarted.poll(call_id) == Running()
    await restarted.cancel(call_id)
    assert await settled(restarted, call_id) == Failed(
        "cancelled", f"call {call_id} was cancelled on Modal"
    )
    assert (await finished(store, job.id)).status is JobStatus.CANCELLED


async def test_cancel_raises_input_cancellation_in_the_worker_and_the_job_ends_cancelled(
    executor: ModalExecutor,
    store: JobStore,
    store_url: str,
    store_options: StoreOptions,
) -> None:
    job = await store.create(Create.build(owner="alice", kind="demo_modal", params=LONG))
    call_id = await executor.spawn(job)
    running = await progressing(store, job.id)
    assert await executor.poll(call_id) == Running()

    await executor.cancel(call_id)  # no cancel_requested flag: only Modal's signal stops it
    done = await finished(store, job.id)
    assert done.status is JobStatus.CANCELLED
    assert done.error is not None
    assert done.error.code == "cancelled"
    assert done.error.message == f"InputCancellation: {CANCELLED_MESSAGE}"
    assert done.progress >= running.progress
    assert await settled(executor, call_id) == Failed(
        "cancelled", f"call {call_id} was cancelled on Modal"
    )

    # A report after the cancellation is rejected and changes nothing.
    with ProgressClient.from_url(store_url, store_options) as worker, pytest.raises(JobFinished):
        worker.update(job.id, progress=99, message="too late")
    assert await store.get(job.id) == done

    # Cancel is idempotent: again, and on a call Modal does not know.
    await executor.cancel(call_id)
    await executor.cancel("fc-00000000000000000000000000")
    assert await store.get(job.id) == done


async def test_owner_cancel_through_the_lifecycle_ends_cancelled_not_failed(
    lifecycle: Lifecycle, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo_modal", LONG)
    await progressing(store, job.id)
    await lifecycle.cancel("alice", job.id)
    done = await finished(store, job.id)
    assert done.status is JobStatus.CANCELLED
    assert done.error is not None and done.error.code == "cancelled"


async def test_a_call_cancelled_on_modal_before_its_worker_started_ends_cancelled(
    lifecycle: Lifecycle, executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    # From Modal's dashboard or `modal app stop`-like tooling: the gateway never asked.
    standin.hold_inputs = True
    job = await lifecycle.create("alice", "demo_modal", LONG)
    call_id = call_id_of(job)
    await standin.FunctionCall.from_id(call_id).cancel.aio()
    with pytest.raises(modal.exception.RemoteError) as raised:
        await standin.FunctionCall.from_id(call_id).get.aio(timeout=0)
    assert str(raised.value) == ""  # what Modal's client raises for a TERMINATED input
    assert await executor.poll(call_id) == Failed(
        "cancelled", f"call {call_id} was cancelled on Modal"
    )
    queued = await store.get(job.id)
    assert queued.status is JobStatus.QUEUED and not queued.cancel_requested
    done = await lifecycle.finalize(queued)
    assert done.status is JobStatus.CANCELLED
    assert done.error is not None and done.error.code == "cancelled"


async def test_a_remote_error_of_a_call_not_terminated_is_a_worker_error(
    executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    standin.hold_inputs = True
    job = await store.create(Create.build(owner="alice", kind="demo_modal", params={}))
    call_id = await executor.spawn(job)
    standin.failures["get"] = modal.exception.RemoteError("Runner terminated: out of memory")
    assert await executor.poll(call_id) == Failed(
        "worker_error", "RemoteError: Runner terminated: out of memory"
    )
    standin.failures["get"] = modal.exception.RemoteError("")
    assert await executor.poll(call_id) == Failed(
        "worker_error",
        f"RemoteError: call {call_id} ended without an output (input status: PENDING)",
    )
    standin.failures["call_graph"] = modal.exception.ConnectionError("unreachable")
    with pytest.raises(ExecutorUnavailable):
        await executor.poll(call_id)


async def test_a_call_that_ignores_its_cancellation_is_terminated(
    store: JobStore, executor: ModalExecutor, standin: ModalStandIn
) -> None:
    # Modal delivers a cancel through the container's heartbeat; a hung container never takes
    # it. The lifecycle asks every cancel_poll_s (not 4 times a second) and, at its deadline,
    # cancels with terminate_containers=True.
    lifecycle = Lifecycle(
        store, {"modal": executor}, KINDS, Metrics(), cancel_timeout_s=3, cancel_poll_s=1
    )
    try:
        job = await lifecycle.create("alice", "demo_modal", LONG)
        call_id = call_id_of(job)
        await progressing(store, job.id)
        pid = standin.pid(call_id)
        standin.freeze(call_id)
        gets = standin.calls.get("get", 0)
        await lifecycle.cancel("alice", job.id)
        done = await finished(store, job.id)
    finally:
        await lifecycle.aclose()
    assert done.status is JobStatus.CANCELLED
    assert standin.calls["get"] - gets <= 5  # 3 s at one poll a second, not 12 at 0.25 s
    assert standin.calls["cancel"] == 2  # the cooperative cancel, then the terminating one

    async def killed() -> bool:
        return not standin.alive(pid)

    await eventually(killed, 10, "the hung container to be killed")
    assert await executor.poll(call_id) == Failed(
        "cancelled", f"call {call_id} was cancelled on Modal"
    )


async def test_worker_exception_fails_the_job_and_poll_reports_it(
    lifecycle: Lifecycle, executor: ModalExecutor, store: JobStore
) -> None:
    job = await lifecycle.create(
        "alice", "demo_modal", {"steps": 5, "step_s": 0, "fail_at_step": 2}
    )
    done = await finished(store, job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error.code == "worker_error"
    expected = "DemoFailure: failed at step 2 as asked (fail_at_step=2)"
    assert done.error.message == expected
    assert await settled(executor, call_id_of(job)) == Failed("worker_error", expected)


async def test_function_timeout_is_failed_timeout(
    lifecycle: Lifecycle, executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    standin.deploy(APP_NAME, "demo", "demo_modal", timeout_s=1.5)
    job = await lifecycle.create("alice", "demo_modal", LONG)
    await progressing(store, job.id)
    state = await settled(executor, call_id_of(job))
    assert state == Failed("timeout", "FunctionTimeoutError: Function timed out after 1.5s")
    # Modal killed the container: nothing recorded the end, the executor's answer does.
    stale = await store.get(job.id)
    assert stale.status is JobStatus.RUNNING
    done = await lifecycle.finalize(stale)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error.code == "timeout"


async def test_expired_output_and_unknown_call_are_unknown(
    lifecycle: Lifecycle, executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo_modal", {"steps": 2, "step_s": 0})
    await finished(store, job.id)
    assert isinstance(await settled(executor, call_id_of(job)), Succeeded)
    standin.expire(call_id_of(job))
    state = await executor.poll(call_id_of(job))
    assert isinstance(state, Unknown) and call_id_of(job) in state.reason
    assert isinstance(await executor.poll("fc-00000000000000000000000000"), Unknown)


async def test_outage_is_unavailable_and_never_finalizes_a_job(
    lifecycle: Lifecycle, executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo_modal", LONG)
    running = await progressing(store, job.id)
    standin.outage = True
    with pytest.raises(ExecutorUnavailable) as polled:
        await executor.poll(call_id_of(job))
    assert isinstance(polled.value.__cause__, modal.exception.ConnectionError)
    assert call_id_of(job) in polled.value.message
    with pytest.raises(ExecutorUnavailable):
        await executor.cancel(call_id_of(job))
    assert (await lifecycle.finalize(running)).status is JobStatus.RUNNING

    with pytest.raises(ExecutorUnavailable) as spawned:
        await lifecycle.create("alice", "demo_modal", {"steps": 1})
    assert isinstance(spawned.value.__cause__, modal.exception.ConnectionError)
    assert spawned.value.job_id is not None and spawned.value.job_id in spawned.value.message
    failed = await store.get(spawned.value.job_id)
    assert failed.status is JobStatus.FAILED
    assert failed.error is not None and failed.error.code == "spawn_error"

    standin.outage = False
    assert await executor.poll(call_id_of(job)) == Running()


async def test_spawn_failure_is_an_executor_error(
    executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    job = await store.create(Create.build(owner="alice", kind="demo_modal", params={}))
    refused = modal.exception.InvalidError("function input is too large")
    standin.failures["spawn"] = refused
    with pytest.raises(ExecutorError) as raised:
        await executor.spawn(job)
    assert not isinstance(raised.value, ExecutorUnavailable)
    assert raised.value.__cause__ is refused
    assert job.id in raised.value.message and "too large" in raised.value.message

    local = await store.create(Create.build(owner="alice", kind="demo", params={}))
    with pytest.raises(ExecutorError, match="does not run on the modal executor"):
        await executor.spawn(local)


async def test_the_worker_records_its_call_id_when_the_spawner_could_not(
    standin: ModalStandIn, store: JobStore
) -> None:
    job = await store.create(
        Create.build(owner="alice", kind="demo_modal", params={"steps": 3}, executor="modal")
    )
    assert job.call_id is None
    # Spawned, and the gateway died before storing the id.
    function = standin.Function.from_name(APP_NAME, "demo")
    call = await function.spawn.aio(job_id=job.id, params=job.params)

    async def recorded() -> bool:
        return (await store.get(job.id)).call_id == call.object_id

    await eventually(recorded, 30, "the worker to record its call id")
    done = await finished(store, job.id)
    assert done.status is JobStatus.SUCCEEDED
    assert (done.executor, done.call_id) == ("modal", call.object_id)


async def test_a_preempted_input_runs_again_as_a_new_attempt(
    lifecycle: Lifecycle, executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo_modal", {"steps": 60, "step_s": 0.05})
    call_id = call_id_of(job)
    first = await progressing(store, job.id, above=20)
    first_pid = standin.pid(call_id)
    # The container exits on SIGINT rather than waiting out Modal's grace period for SIGKILL.
    assert not await standin.preempt(call_id, grace_s=20)
    assert standin.pid(call_id) != first_pid
    assert (await store.get(job.id)).status is JobStatus.RUNNING

    done = await finished(store, job.id)
    # SIGINT did not cancel it; the re-run started a new attempt on the same call.
    assert done.status is JobStatus.SUCCEEDED
    assert done.attempt == first.attempt + 1 == 2
    assert done.call_id == call_id
    # Progress held at the first attempt's high-water mark while the retry caught up.
    progress = [event.progress for event in await store.history(job.id)]
    assert progress == sorted(progress) and progress[-1] == 100.0
    assert await settled(executor, call_id) == Succeeded(done.result)


async def test_a_preempted_input_resumes_from_its_checkpoint(
    lifecycle: Lifecycle, standin: ModalStandIn, store: JobStore
) -> None:
    job = await lifecycle.create("alice", "demo_modal", {"steps": 60, "step_s": 0.05})
    call_id = call_id_of(job)

    async def checkpointed() -> bool:
        data = await store.last_checkpoint(job.id)
        return isinstance(data, dict) and int(str(data["step"])) >= 10

    await eventually(checkpointed, 30, "the first attempt to checkpoint step 10")
    assert not await standin.preempt(call_id, grace_s=20)

    done = await finished(store, job.id)
    assert done.status is JobStatus.SUCCEEDED and done.attempt == 2
    history = await store.history(job.id)
    progress = [event.progress for event in history]
    assert progress == sorted(progress) and progress[-1] == 100.0  # the bar never went back
    # Attempt 2 read the checkpoint and went on after it: no step at or before it ran again.
    messages = [event.message or "" for event in history]
    resumes = [
        (index, int(found.group(1)))
        for index, message in enumerate(messages)
        if (found := re.fullmatch(r"attempt 2 resumes after step (\d+) of 60", message))
    ]
    assert len(resumes) == 1
    index, resumed_after = resumes[0]
    assert resumed_after >= 10
    later_steps = [
        int(found.group(1))
        for message in messages[index + 1 :]
        if (found := re.match(r"step (\d+) of 60", message))
    ]
    assert later_steps and min(later_steps) > resumed_after


async def test_a_call_still_running_past_the_function_timeout_with_a_silent_worker_is_lost(
    standin: ModalStandIn, store: JobStore
) -> None:
    # A worker whose own TimeoutError escaped unwrapped (an older deploy), with the store out of
    # its reach: get() says "no output yet" for ever. Modal kills any input at its timeout, so
    # past it (plus a margin) with no report, nothing can be running.
    executor = ModalExecutor(APP_NAME, KINDS, sdk=standin, function_timeout_s=2, timeout_margin_s=1)
    lifecycle = Lifecycle(store, {"modal": executor}, KINDS, Metrics())
    job = await store.create(
        Create.build(owner="alice", kind="demo_modal", params={}, executor="modal")
    )
    job = await store.apply(job.id, AttachCall.build(executor="modal", call_id="fc-01"))
    standin.failures["get"] = TimeoutError()
    assert await executor.poll("fc-01") == Running()
    try:
        assert (await lifecycle.finalize(job)).status is JobStatus.QUEUED

        async def lost() -> bool:
            return (await lifecycle.finalize(await store.get(job.id))).terminal

        await eventually(lost, 30, "the silent call to be finalized")
    finally:
        await lifecycle.aclose()
    done = await store.get(job.id)
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error.code == "worker_lost"
    assert "still reports call fc-01 running" in done.error.message


async def test_a_dead_container_runs_again_as_a_new_attempt_up_to_the_cap(
    lifecycle: Lifecycle, executor: ModalExecutor, standin: ModalStandIn, store: JobStore
) -> None:
    # A deterministic crash: every container of the input dies. Modal would run it again up to
    # ~8 times; the job stops after executor.max_attempts (3) runs.
    assert executor.max_attempts == 3
    job = await lifecycle.create("alice", "demo_modal", LONG)
    call_id = call_id_of(job)
    for attempt in (1, 2, 3):

        async def running(attempt: int = attempt) -> bool:
            # Progress carries over between attempts; a re-run announces itself first.
            if attempt == 1:
                return (await store.get(job.id)).progress > 0
            restarted = f"restarted: attempt {attempt} of 3"
            return any((e.message or "").startswith(restarted) for e in await store.history(job.id))

        await eventually(running, 30, f"attempt {attempt} to report progress")
        standin.kill(call_id)
    done = await finished(store, job.id)
    assert done.status is JobStatus.FAILED and done.attempt == 3
    assert done.error is not None and done.error.code == "worker_lost"
    assert done.error.message.startswith("gave up after 3 attempts (the cap is 3)")
    history = await store.history(job.id)
    messages = [event.message or "" for event in history]
    for attempt in (2, 3):
        assert any(m.startswith(f"restarted: attempt {attempt} of 3") for m in messages)
    progress = [event.progress for event in history]
    assert progress == sorted(progress)  # the bar never went back
    assert (await standin.FunctionCall.from_id(call_id).get.aio(timeout=30)) is None
    assert int(standin.state_dir.joinpath(f"{call_id}.retries").read_text()) == 3


# -- start -------------------------------------------------------------------------------------


def offline_standin(tmp_path: Path) -> ModalStandIn:
    """A stand-in for tests that never run an input: no store behind it."""
    return ModalStandIn(tmp_path / "modal", "sqlite:///unused.db", StoreOptions())


async def test_start_fails_fast_when_the_app_is_not_deployed(tmp_path: Path) -> None:
    standin = offline_standin(tmp_path)
    with pytest.raises(ExecutorUnavailable) as raised:
        await ModalExecutor(APP_NAME, KINDS, sdk=standin).start()
    message = raised.value.message
    assert f"'demo' of app '{APP_NAME}' is not deployed" in message
    assert "modal deploy -m progress_workers.modal_app" in message
    assert isinstance(raised.value.__cause__, modal.exception.NotFoundError)

    standin.deploy(APP_NAME, "other", "demo_modal")  # the app exists, the function does not
    with pytest.raises(ExecutorUnavailable, match="Function 'demo' not found"):
        await ModalExecutor(APP_NAME, KINDS, sdk=standin).start()


async def test_start_looks_up_functions_in_the_configured_environment(tmp_path: Path) -> None:
    standin = offline_standin(tmp_path)
    standin.deploy(APP_NAME, "demo", "demo_modal", environment_name="staging")
    await ModalExecutor(APP_NAME, KINDS, sdk=standin, environment_name="staging").start()
    with pytest.raises(ExecutorUnavailable, match="not found in environment 'main'"):
        await ModalExecutor(APP_NAME, KINDS, sdk=standin).start()


async def test_start_fails_fast_without_credentials(tmp_path: Path) -> None:
    standin = offline_standin(tmp_path)
    standin.deploy(APP_NAME, "demo", "demo_modal")
    standin.credentials = False
    with pytest.raises(ExecutorUnavailable, match="MODAL_TOKEN_ID") as raised:
        await ModalExecutor(APP_NAME, KINDS, sdk=standin).start()
    assert "Token missing" in raised.value.message
    assert f"'demo' of app '{APP_NAME}'" in raised.value.message


async def test_every_call_is_bounded_by_timeout_s(tmp_path: Path, store: JobStore) -> None:
    standin = offline_standin(tmp_path)
    standin.deploy(APP_NAME, "demo", "demo_modal")
    executor = ModalExecutor(APP_NAME, KINDS, sdk=standin, timeout_s=0.2)
    job = await store.create(Create.build(owner="alice", kind="demo_modal", params={}))
    standin.hang = True
    await executor.start()  # degraded, not fatal: see the outage test below
    assert executor.unavailable_reason is not None
    assert "within 0.2s" in executor.unavailable_reason
    await executor.aclose()
    executor = ModalExecutor(APP_NAME, KINDS, sdk=standin, timeout_s=0.2)
    with pytest.raises(ExecutorUnavailable, match=r"within 0\.2s") as spawned:
        await executor.spawn(job)
    assert spawned.value.job_id == job.id and job.id in spawned.value.message
    with pytest.raises(ExecutorUnavailable, match=r"within 0\.2s"):
        await executor.poll("fc-01")
    with pytest.raises(ExecutorUnavailable, match=r"within 0\.2s"):
        await executor.cancel("fc-01")


async def test_start_with_modal_unreachable_runs_degraded_until_modal_answers(
    tmp_path: Path, store: JobStore
) -> None:
    standin = offline_standin(tmp_path)
    standin.deploy(APP_NAME, "demo", "demo_modal")
    standin.outage = True
    executor = ModalExecutor(APP_NAME, KINDS, sdk=standin, retry_min_s=0.05, retry_max_s=0.2)
    lifecycle = Lifecycle(store, {"modal": executor}, KINDS, Metrics())
    try:
        await executor.start()
        assert executor.unavailable_reason is not None
        assert "Modal is unavailable" in executor.unavailable_reason
        with pytest.raises(ExecutorUnavailable, match="'modal' executor, which is unavailable"):
            await lifecycle.create("alice", "demo_modal", {})
        listed = await store.owner_jobs("alice")
        assert listed.active == [] and listed.recent == []

        standin.outage = False

        async def answered() -> bool:
            return executor.unavailable_reason is None

        await eventually(answered, 10, "the background lookup to reach Modal")
        assert standin.calls["hydrate"] >= 2
    finally:
        await lifecycle.aclose()
        await executor.aclose()


def test_every_extra_that_installs_modal_requires_its_typed_errors() -> None:
    # Before 1.3 an RPC failure past the SDK's retries was a raw grpclib.GRPCError, which poll
    # would read as the worker's own exception and fail a live job.
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    floors = {
        name: requirement.removeprefix("modal>=")
        for name, requirements in extras.items()
        for requirement in requirements
        if requirement.startswith("modal")
    }
    assert set(floors) == {"modal", "test"}
    for name, floor in floors.items():
        assert tuple(int(part) for part in floor.split(".")[:2]) >= (1, 3) == MODAL_MIN_VERSION, (
            name
        )
    check_sdk_version(modal.__version__)
    check_sdk_version("1.3.0")
    with pytest.raises(ExecutorUnavailable, match=r"modal>=1\.3 \(installed: 1\.2\.9\)"):
        check_sdk_version("1.2.9")


def test_a_modal_kind_must_name_its_function(tmp_path: Path) -> None:
    broken = dataclasses.replace(KINDS["demo_modal"], name="x", modal_function=None)
    with pytest.raises(ValueError, match="'x' runs on modal but names no modal_function"):
        ModalExecutor(APP_NAME, {"x": broken}, sdk=offline_standin(tmp_path))


# -- poll: every answer of get(timeout=0) --------------------------------------------------------

POLL_ANSWERS: list[tuple[BaseException, CallState]] = [
    (TimeoutError(), Running()),
    (
        modal.exception.FunctionTimeoutError("Function timed out after 3600s"),
        Failed("timeout", "FunctionTimeoutError: Function timed out after 3600s"),
    ),
    (
        modal.exception.ExecutionError("Could not deserialize remote exception"),
        Failed("worker_error", "ExecutionError: Could not deserialize remote exception"),
    ),
    (ValueError("bad frame in clip 3"), Failed("worker_error", "ValueError: bad frame in clip 3")),
    # The deployed function wraps its own exceptions: a worker's TimeoutError or Modal
    # ConnectionError is its failure, not "running" or "Modal is down".
    (WorkerFailed("TimeoutError: timed out"), Failed("worker_error", "TimeoutError: timed out")),
    (
        WorkerFailed("ConnectionError: Could not connect to the Modal server."),
        Failed("worker_error", "ConnectionError: Could not connect to the Modal server."),
    ),
]

POLL_UNKNOWN: list[BaseException] = [
    modal.exception.OutputExpiredError(),
    modal.exception.NotFoundError("Function call not found"),
    modal.exception.InternalFailure("input lost"),
]

POLL_UNAVAILABLE: list[BaseException] = [
    modal.exception.ConnectionError("Could not connect to the Modal server."),
    modal.exception.ServiceError("UNAVAILABLE"),
    modal.exception.AuthError("Token missing."),
    # Transient: none of these says the call is gone (FAILED_PRECONDITION / ABORTED are a
    # ConflictError, a subclass of InvalidError; modal's own TimeoutError is an RPC deadline).
    modal.exception.ConflictError("aborted, try again"),
    modal.exception.InvalidError("Invalid argument"),
    modal.exception.ResourceExhaustedError("rate limited"),
    modal.exception.InternalError("internal"),
    modal.exception.TimeoutError("deadline exceeded"),
    modal.exception.ClientClosed(),
]


@pytest.mark.parametrize(("raised", "state"), POLL_ANSWERS, ids=lambda v: type(v).__name__)
async def test_poll_maps_what_get_raises(
    tmp_path: Path, raised: BaseException, state: CallState
) -> None:
    standin = offline_standin(tmp_path)
    standin.failures["get"] = raised
    executor = ModalExecutor(APP_NAME, KINDS, sdk=standin)
    assert await executor.poll("fc-01") == state


@pytest.mark.parametrize("raised", POLL_UNKNOWN, ids=lambda v: type(v).__name__)
async def test_poll_answers_unknown_when_modal_no_longer_knows_the_call(
    tmp_path: Path, raised: BaseException
) -> None:
    standin = offline_standin(tmp_path)
    standin.failures["get"] = raised
    state = await ModalExecutor(APP_NAME, KINDS, sdk=standin).poll("fc-01")
    assert isinstance(state, Unknown) and "fc-01" in state.reason


@pytest.mark.parametrize("raised", POLL_UNAVAILABLE, ids=lambda v: type(v).__name__)
async def test_poll_raises_unavailable_on_an_outage(tmp_path: Path, raised: BaseException) -> None:
    standin = offline_standin(tmp_path)
    standin.failures["get"] = raised
    with pytest.raises(ExecutorUnavailable) as polled:
        await ModalExecutor(APP_NAME, KINDS, sdk=standin).poll("fc-01")
    assert polled.value.__cause__ is raised
