"""The WebSocket protocol over a real socket: auth, limits, close codes, errors, Origin."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from progress_gateway.auth import issue_token
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.redis_server import wait_until
from tests.support.ws_client import WsClient

GOOD_ORIGIN = "http://app.example"


@pytest.fixture(scope="module")
def strict_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp("strict")
    server = GatewayServer(
        f"sqlite:///{directory / 'jobs.db'}",
        directory / "gateway.log",
        auth_timeout_s="0.5",
        max_connections_per_owner="2",
        max_subscriptions="3",
        allowed_origins=GOOD_ORIGIN,
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def strict_worker(strict_gateway: GatewayServer) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(strict_gateway.store_url) as client:
        yield client


async def read_until_closed(client: WsClient) -> None:
    while True:
        await client.recv(5)


async def closed_with(client: WsClient) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed(client)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_auth_by_query_header_and_first_frame(strict_gateway: GatewayServer) -> None:
    by_query = await WsClient.connect(strict_gateway.ws_url, token_for("alice"))
    ready = await by_query.ready()
    assert ready["heartbeat_s"] == 20.0 and ready["server_time"].endswith("Z")
    await by_query.close()
    by_header = await WsClient.connect(
        strict_gateway.ws_url, additional_headers={"Authorization": f"Bearer {token_for('bob')}"}
    )
    await by_header.ready()
    await by_header.close()
    by_frame = await WsClient.connect(strict_gateway.ws_url)
    await by_frame.send({"op": "auth", "token": token_for("carol")})
    await by_frame.ready()
    await by_frame.send({"op": "ping"})
    assert await by_frame.recv() == {"op": "pong"}
    await by_frame.close()


def forged_none_token(owner: str) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part({'sub': owner, 'exp': 4_000_000_000})}."


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(issue_token(SECRET, "alice", 60, now=time.time() - 3600), id="expired"),
        pytest.param(token_for("alice")[:-4] + "AAAA", id="forged"),
        pytest.param(forged_none_token("alice"), id="alg-none"),
    ],
)
async def test_bad_tokens_close_4401(strict_gateway: GatewayServer, token: str) -> None:
    client = await WsClient.connect(strict_gateway.ws_url, token)
    assert await closed_with(client) == 4401


async def test_no_auth_frame_in_time_closes_4408(strict_gateway: GatewayServer) -> None:
    client = await WsClient.connect(strict_gateway.ws_url)
    assert await closed_with(client) == 4408


async def test_origin_allow_list(strict_gateway: GatewayServer) -> None:
    with pytest.raises(InvalidStatus) as refused:
        await websockets.connect(strict_gateway.ws_url, origin="http://evil.example")
    assert refused.value.response.status_code == 403
    allowed = await WsClient.connect(strict_gateway.ws_url, token_for("alice"), origin=GOOD_ORIGIN)
    await allowed.ready()
    await allowed.close()
    # A page served by the gateway itself is same-origin: always allowed.
    same_origin = await WsClient.connect(
        strict_gateway.ws_url, token_for("alice"), origin=strict_gateway.url
    )
    await same_origin.ready()
    await same_origin.close()


async def test_connection_limit_per_owner_closes_4429(strict_gateway: GatewayServer) -> None:
    first = await WsClient.connect(strict_gateway.ws_url, token_for("dave"))
    second = await WsClient.connect(strict_gateway.ws_url, token_for("dave"))
    await first.ready()
    await second.ready()
    third = await WsClient.connect(strict_gateway.ws_url, token_for("dave"))
    assert await closed_with(third) == 4429
    other_owner = await WsClient.connect(strict_gateway.ws_url, token_for("erin"))
    await other_owner.ready()
    await first.close()
    # A slot frees once the gateway has processed the close: poll for it with a deadline.
    deadline = time.monotonic() + 10
    while True:
        fourth = await WsClient.connect(strict_gateway.ws_url, token_for("dave"))
        try:
            await fourth.ready()
            break
        except ConnectionClosed as closed:
            assert closed.rcvd is not None and closed.rcvd.code == 4429
            assert time.monotonic() < deadline, "the closed connection's slot never freed"
    for client in (second, other_owner, fourth):
        await client.close()


async def test_malformed_frames_keep_the_connection_until_too_many(
    strict_gateway: GatewayServer,
) -> None:
    client = await WsClient.connect(strict_gateway.ws_url, token_for("frank"))
    await client.ready()
    await client.send("{not json")
    error = await client.recv()
    assert (error["op"], error["code"]) == ("error", "bad_request")
    await client.send({"op": "teleport", "ref": "t"})
    error = await client.recv()
    assert (error["code"], error["ref"]) == ("bad_request", "t")
    await client.send({"op": "ping"})
    assert await client.recv() == {"op": "pong"}
    for _ in range(9):
        await client.send("junk")
    assert await closed_with(client) == 1008


async def test_frame_too_large_closes_1009(strict_gateway: GatewayServer) -> None:
    client = await WsClient.connect(strict_gateway.ws_url, token_for("gina"))
    await client.ready()
    await client.send(json.dumps({"op": "ping", "pad": "x" * 70_000}))
    assert await closed_with(client) == 1009


async def test_errors_per_job_then_ack(
    strict_gateway: GatewayServer, strict_worker: ProgressClient
) -> None:
    mine = strict_worker.create_job(owner="hank", kind="demo")
    theirs = strict_worker.create_job(owner="someone-else", kind="demo")
    missing = "00000000-0000-4000-8000-000000000000"
    client = await WsClient.connect(strict_gateway.ws_url, token_for("hank"))
    await client.ready()
    frames = await client.subscribe("r", [mine.id, {"id": theirs.id}, {"id": missing}, "bad"])
    by_job = {frame.get("job_id") or frame.get("job", {}).get("id"): frame for frame in frames}
    assert by_job[mine.id]["op"] == "update"
    assert by_job[theirs.id]["code"] == "forbidden"
    assert "job" not in by_job[theirs.id]  # nothing of the other owner's job leaks
    assert by_job[missing]["code"] == "not_found"
    assert by_job["bad"]["code"] == "bad_request"
    assert frames[-1] == {"op": "ack", "ref": "r"}
    await client.close()


async def test_subscription_limit_counts_only_watched_jobs(
    strict_gateway: GatewayServer, strict_worker: ProgressClient
) -> None:
    jobs = [strict_worker.create_job(owner="ivy", kind="demo").id for _ in range(4)]
    client = await WsClient.connect(strict_gateway.ws_url, token_for("ivy"))
    await client.ready()
    frames = await client.subscribe("r", jobs)
    errors = [frame for frame in frames if frame["op"] == "error"]
    assert [(error["code"], error["job_id"]) for error in errors] == [
        ("too_many_subscriptions", jobs[3])
    ]
    await client.send({"op": "unsubscribe", "ref": "u", "jobs": [jobs[0]]})
    assert await client.recv() == {"op": "ack", "ref": "u"}
    frames = await client.subscribe("again", [jobs[3]])
    assert [frame["op"] for frame in frames] == ["update", "ack"]
    await client.close()


async def test_resubscribe_with_seq_sends_only_newer(
    strict_gateway: GatewayServer, strict_worker: ProgressClient
) -> None:
    job = strict_worker.create_job(owner="jack", kind="demo")
    strict_worker.update(job.id, progress=30)
    client = await WsClient.connect(strict_gateway.ws_url, token_for("jack"))
    await client.ready()
    frames = await client.subscribe("r", [{"id": job.id, "seq": 2}])
    assert frames == [{"op": "ack", "ref": "r"}]
    strict_worker.update(job.id, progress=60)
    newer = await client.wait_for_job(job.id, lambda j: j["seq"] == 3)
    assert newer["progress"] == 60
    await client.close()


async def test_unsubscribed_job_sends_nothing_more(
    strict_gateway: GatewayServer, strict_worker: ProgressClient
) -> None:
    quiet = strict_worker.create_job(owner="kim", kind="demo")
    loud = strict_worker.create_job(owner="kim", kind="demo")
    client = await WsClient.connect(strict_gateway.ws_url, token_for("kim"))
    await client.ready()
    await client.subscribe("r", [quiet.id])
    await client.send({"op": "unsubscribe", "ref": "u", "jobs": [quiet.id]})
    assert await client.recv() == {"op": "ack", "ref": "u"}
    strict_worker.update(quiet.id, progress=50)
    await client.subscribe("r2", [loud.id])
    strict_worker.update(loud.id, progress=70)
    await client.wait_for_job(loud.id, lambda j: j["progress"] == 70)
    # Changes are delivered in commit order: had the quiet job been sent, it would be here.
    assert client.latest[quiet.id]["seq"] == 1
    await client.close()


def test_log_has_no_tracebacks(strict_gateway: GatewayServer, tmp_path: Path) -> None:
    assert "Traceback" not in strict_gateway.log()


async def test_tokens_in_the_query_string_never_reach_the_log(
    strict_gateway: GatewayServer,
) -> None:
    accepted_token = token_for("alice", ttl_s=601)
    refused_token = token_for("alice", ttl_s=602)
    accepted = await WsClient.connect(strict_gateway.ws_url, accepted_token)
    await accepted.ready()
    with pytest.raises(InvalidStatus):
        await WsClient.connect(strict_gateway.ws_url, refused_token, origin="http://evil.example")
    await accepted.close()

    def both_logged() -> bool:
        return strict_gateway.log().count('/ws?token=[redacted]"') >= 2

    wait_until(both_logged, 10, "both handshakes in the log")
    log = strict_gateway.log()
    assert accepted_token not in log and refused_token not in log
    assert accepted_token.split(".")[2] not in log  # not even the signature
