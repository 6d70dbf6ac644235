"""Both WebSocket protocols (``GATEWAY_WS_IMPL``) under a real gateway, and which one is chosen.

The lean protocol subclasses uvicorn internals; uvicorn's own stays selectable. The core of the
WebSocket contract (auth, limits, subscribe, live updates, resume, drain) runs on each, and
scripts/test-min-deps runs this file on the lowest uvicorn the `server` extra allows.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import tomllib
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import ConnectionClosed

from progress_gateway import wsproto
from progress_gateway.server import uvicorn_config
from progress_gateway.settings import Settings
from progress_gateway.wsproto import (
    TESTED_UVICORN,
    FrameWriterProtocol,
    protocol_class,
    release,
    uvicorn_tested,
)
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import ROOT, GatewayServer, embedded_gateway
from tests.support.ws_client import WsClient

IMPLS = {"lean": FrameWriterProtocol, "uvicorn": WebSocketsSansIOProtocol}


@pytest.fixture(scope="module", params=list(IMPLS))
def impl(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(scope="module")
def gateway(impl: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp(f"ws-{impl}")
    with embedded_gateway(
        directory, ws_impl=impl, auth_timeout_s="0.5", max_subscriptions="3"
    ) as server:
        yield server


@pytest.fixture(scope="module")
def worker(gateway: GatewayServer) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(gateway.store_url) as client:
        yield client


async def read_until_closed(client: WsClient) -> None:
    while True:
        await client.recv(10)


async def closed_with(client: WsClient) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed(client)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


def test_the_gateway_runs_the_chosen_protocol(gateway: GatewayServer, impl: str) -> None:
    protocol = IMPLS[impl]
    assert f"WebSocket protocol: {protocol.__module__}.{protocol.__name__} " in gateway.log()


async def test_bad_token_closes_4401_and_no_auth_in_time_4408(gateway: GatewayServer) -> None:
    forged = await WsClient.connect(gateway.ws_url, token_for("alice")[:-4] + "AAAA")
    assert await closed_with(forged) == 4401
    silent = await WsClient.connect(gateway.ws_url)
    assert await closed_with(silent) == 4408


async def test_frame_too_large_closes_1009(gateway: GatewayServer) -> None:
    client = await WsClient.connect(gateway.ws_url, token_for("gina"))
    await client.ready()
    await client.send({"op": "ping", "pad": "x" * 70_000})
    assert await closed_with(client) == 1009


async def test_live_updates_to_the_terminal_snapshot(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    client = await WsClient.connect(gateway.ws_url, token_for("alice"))
    await client.ready()
    frames = await client.subscribe("r1", [job.id])
    assert [frame["op"] for frame in frames] == ["update", "ack"]

    def work() -> None:
        worker.start(job.id)
        for step in range(1, 51):
            worker.update(job.id, progress=step * 2, message=f"step {step}")
        worker.succeed(job.id, result={"url": "done"})

    await asyncio.to_thread(work)
    final = await client.wait_for_job(job.id, lambda j: j["status"] == "succeeded")
    assert (final["seq"], final["result"]) == (53, {"url": "done"})
    await client.close()
    # The same job over HTTP, as the gateway serves it beside the WebSocket.
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as http:
        response = await http.get(
            f"/exports/{job.id}", headers={"Authorization": f"Bearer {token_for('alice')}"}
        )
    assert response.status_code == 200
    assert (response.json()["status"], response.headers["etag"]) == ("succeeded", '"53"')


async def test_resume_from_seq_and_subscription_limit(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    jobs = [worker.create_job(owner="jack", kind="demo").id for _ in range(4)]
    worker.update(jobs[0], progress=30)
    client = await WsClient.connect(gateway.ws_url, token_for("jack"))
    await client.ready()
    frames = await client.subscribe("r", [{"id": jobs[0], "seq": 2}, *jobs[1:]])
    assert [f["op"] for f in frames if f.get("job", {}).get("id") == jobs[0]] == []
    errors = [(f["code"], f["job_id"]) for f in frames if f["op"] == "error"]
    assert errors == [("too_many_subscriptions", jobs[3])]
    worker.update(jobs[0], progress=60)
    newer = await client.wait_for_job(jobs[0], lambda j: j["seq"] == 3)
    assert newer["progress"] == 60
    await client.close()


async def test_drain_closes_1001(impl: str, tmp_path: Path) -> None:
    with embedded_gateway(tmp_path, ws_impl=impl, drain_s="0.5") as gateway:
        client = await WsClient.connect(gateway.ws_url, token_for("dora"))
        await client.ready()
        assert gateway.process is not None
        gateway.process.terminate()  # SIGTERM: drain, then stop
        assert await closed_with(client) == 1001
        # uvicorn re-raises the signal it drained on: a clean exit reads -SIGTERM.
        assert gateway.process.wait(timeout=30) in (0, -signal.SIGTERM)


def test_stock_protocol_pings_every_heartbeat_lean_only_when_asked() -> None:
    app = Starlette()
    lean = uvicorn_config(app, Settings(ws_impl="lean", ws_heartbeat_s=7), "warning")
    stock = uvicorn_config(app, Settings(ws_impl="uvicorn", ws_heartbeat_s=7), "warning")
    assert (lean.ws, lean.ws_ping_interval) == (FrameWriterProtocol, None)
    assert (stock.ws, stock.ws_ping_interval) == (WebSocketsSansIOProtocol, 7)
    pinging = uvicorn_config(app, Settings(ws_impl="lean", ws_ping_s=30), "warning")
    assert pinging.ws_ping_interval == 30


@pytest.mark.parametrize(
    ("version", "tested"),
    [
        ("0.52.0", False),  # no close timer nor `disconnected` yet
        ("0.52.1", True),
        ("0.55.0", True),
        ("0.55.9rc1", True),
        ("0.56.0", False),
        ("0.56.0.dev1", False),
        ("1.0", False),
    ],
)
def test_lean_only_on_a_tested_uvicorn_else_stock_with_a_warning(
    version: str, tested: bool, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=wsproto.logger.name):
        chosen = protocol_class("lean", version)
    assert chosen is (FrameWriterProtocol if tested else WebSocketsSansIOProtocol)
    warnings = [record.getMessage() for record in caplog.records]
    if tested:
        assert warnings == []
    else:
        [warning] = warnings
        assert f"uvicorn {version} is outside the range" in warning
    # Asking for uvicorn's own protocol never warns.
    caplog.clear()
    assert protocol_class("uvicorn", version) is WebSocketsSansIOProtocol
    assert caplog.records == []


def test_installed_uvicorn_is_tested_and_pinned() -> None:
    assert uvicorn_tested(uvicorn.__version__), uvicorn.__version__
    with (ROOT / "pyproject.toml").open("rb") as file:
        server = tomllib.load(file)["project"]["optional-dependencies"]["server"]
    [pin] = [requirement for requirement in server if requirement.startswith("uvicorn")]
    lowest, above = TESTED_UVICORN
    assert pin == f"uvicorn>={lowest},<{above}"
    with pytest.raises(ValueError, match="not a version"):
        release("latest")


def test_unknown_impl_is_refused_at_startup() -> None:
    with pytest.raises(ValueError, match="ws_impl"):
        Settings(ws_impl="websockets")  # type: ignore[arg-type]
