"""The deployable Modal app: importable without credentials, one function per modal kind, and its
functions' body works against a real Redis (run here with ``Function.local``)."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import modal
import pytest
from pydantic import BaseModel, ConfigDict

from progress_core.models import Create, JobStatus
from progress_core.store import StoreOptions, open_store
from progress_workers import modal_app
from progress_workers.kinds import KINDS, JobKind
from progress_workers.runner import WorkerFailed
from progress_workers.sync import ProgressClient, Reporter
from tests.support.redis_server import RedisServer


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


ROOT = Path(__file__).resolve().parents[2]


def test_importing_the_app_needs_no_credentials_and_does_no_work(tmp_path: Path) -> None:
    environment = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("MODAL_", "GATEWAY_")) and key != "REDIS_URL"
    }
    environment["HOME"] = str(tmp_path)  # no ~/.modal.toml either
    environment["MODAL_CONFIG_PATH"] = str(tmp_path / "absent.toml")
    script = "import progress_workers.modal_app as m; print(m.app.name)"
    completed = subprocess.run(
        [sys.executable, "-W", "error", "-c", script],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == modal_app.APP_NAME
    assert list(tmp_path.iterdir()) == []  # nothing written, not even Modal's config


def test_every_modal_kind_has_its_function_in_the_app() -> None:
    modal_kinds = [kind for kind in KINDS.values() if kind.executor == "modal"]
    assert modal_kinds
    for kind in modal_kinds:
        assert kind.modal_function is not None
        assert isinstance(getattr(modal_app, kind.modal_function), modal.Function)


def test_the_image_ships_python_sources_and_the_stores_lua_scripts() -> None:
    ignore = modal_app.SOURCE_IGNORE
    assert not ignore(Path("core/progress_core/store/lua/apply.lua"))
    assert not ignore(Path("workers/progress_workers/runner.py"))
    assert ignore(Path("gateway/README.md"))
    assert (ROOT / "core/progress_core/store/lua/apply.lua").exists()


def test_a_function_refuses_to_run_without_the_redis_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("GATEWAY_REDIS_URL", raising=False)
    monkeypatch.delenv("REDIS_URL", raising=False)
    with pytest.raises(
        WorkerFailed, match=r"^RuntimeError: GATEWAY_REDIS_URL is not set.*progress-gateway-redis"
    ):
        modal_app.demo.local("00000000-0000-4000-8000-000000000000", {})


async def test_the_deployed_function_body_runs_a_job_against_redis(
    redis_server: RedisServer, store_options: StoreOptions, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What the Modal secret provides in a container.
    monkeypatch.setenv("GATEWAY_REDIS_URL", redis_server.url)
    monkeypatch.setenv("GATEWAY_KEY_PREFIX", store_options.prefix)
    store = open_store(redis_server.url, store_options)
    try:
        job = await store.create(
            Create.build(owner="alice", kind="demo_modal", params={"steps": 3, "step_s": 0})
        )
        result = modal_app.demo.local(job.id, dict(job.params))
        done = await store.get(job.id)
    finally:
        await store.aclose()
    assert done.status is JobStatus.SUCCEEDED
    assert done.result == result
    assert done.call_id is None  # outside a container Modal has no call id to record


def time_out(reporter: Reporter, params: NoParams) -> None:
    """A worker whose own call times out (a socket, an HTTP client): the builtin TimeoutError."""
    reporter.update(10)
    raise TimeoutError("read from the object store timed out")


def lose_modal(reporter: Reporter, params: NoParams) -> None:
    """A worker that calls Modal itself and cannot reach it."""
    raise modal.exception.ConnectionError("Could not connect to the Modal server.")


@pytest.mark.parametrize(
    ("function", "message"),
    [
        ("time_out", "TimeoutError: read from the object store timed out"),
        ("lose_modal", "ConnectionError: Could not connect to the Modal server."),
    ],
)
async def test_every_exception_leaving_a_function_is_wrapped_in_worker_failed(
    store_url: str, store_options: StoreOptions, function: str, message: str
) -> None:
    # get() re-raises the function's exception on the gateway: unwrapped, these two would read
    # as "still running" and "Modal is down" forever.
    kind = JobKind("raiser", NoParams, f"tests.workers.test_modal_app:{function}", "modal", "x")
    store = open_store(store_url, store_options)
    try:
        job = await store.create(Create.build(owner="alice", kind="raiser", params={}))
        with (
            ProgressClient.from_url(store_url, store_options) as client,
            pytest.raises(WorkerFailed) as raised,
        ):
            await asyncio.to_thread(modal_app.run_input, client, job.id, kind, {}, call_id=None)
        done = await store.get(job.id)
    finally:
        await store.aclose()
    assert type(raised.value) is WorkerFailed and str(raised.value) == message
    assert done.status is JobStatus.FAILED
    assert done.error is not None and done.error.message == message
