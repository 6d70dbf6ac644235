"""Who may do what, exhaustively: every HTTP route and every WebSocket way in and op, against
every shape of bad token, on both stores (one real gateway per store for the module).

Bad tokens get 401 (WebSocket: close 4401) on every route whatever the id; a valid token on
another owner's job gets 403, on a missing job 404 (existence first); the health routes need no
token. Nothing a refused request asked for happens (no job created, nothing cancelled)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import jwt
import pytest
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from progress_core.store import StoreOptions
from progress_gateway.auth import issue_token
from progress_workers import ProgressClient
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.http import assert_problem, bearer
from tests.support.redis_server import RedisServer
from tests.support.ws_client import WsClient

OTHER_SECRET = "another-secret-" + "y" * 40
OWNER, OTHER = "alice", "bob"
JOB_ROUTES = [
    ("GET", "/exports/{id}"),
    ("GET", "/exports/{id}/events"),
    ("GET", "/exports/{id}/history"),
    ("POST", "/exports/{id}/cancel"),
]
ROUTES = [*JOB_ROUTES, ("GET", "/exports/active"), ("POST", "/exports")]
OPEN_ROUTES = ["/healthz", "/readyz", "/metrics", "/openapi.json"]


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unsigned(payload: dict[str, object]) -> str:
    header = {"alg": "none", "typ": "JWT"}
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}."


def signed(payload: dict[str, object]) -> str:
    """Signed with the gateway's own secret: only the claims are wrong."""
    return jwt.encode(payload, SECRET, algorithm="HS256")


def bad_tokens() -> dict[str, str]:
    later = int(time.time()) + 3600
    deep_header = b64url(b"[" * 10_000 + b"]" * 10_000)
    return {
        "garbage": "not-a-jwt",
        "wrong signature": issue_token(OTHER_SECRET, OWNER),
        "alg none": unsigned({"sub": OWNER, "exp": later}),
        "expired": issue_token(SECRET, OWNER, 60, now=time.time() - 3600),
        "no sub": signed({"exp": later}),
        "no exp": signed({"sub": OWNER}),
        "empty sub": signed({"sub": "", "exp": later}),
        "sub not a string": signed({"sub": ["alice"], "exp": later}),
        "huge sub": signed({"sub": "a" * 4000, "exp": later}),
        "huge garbage": "x" * 6000,
        "deeply nested header": f"{deep_header}.{b64url(b'{}')}.",
        "exp not a number": signed({"sub": OWNER, "exp": "9999999999"}),
    }


@dataclass
class Deployment:
    gateway: GatewayServer
    worker: ProgressClient
    mine: str  # a job of OWNER
    theirs: str  # a job of OTHER


@pytest.fixture(scope="module", params=["redis", "sqlite"])
def deployment(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    directory = tmp_path_factory.mktemp(f"auth-{request.param}")
    prefix = f"auth{uuid.uuid4().hex[:10]}"
    if request.param == "redis":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        store_url = redis_server.url
    else:
        store_url = f"sqlite:///{directory / 'jobs.db'}"
    gateway = GatewayServer(store_url, directory / "gateway.log", key_prefix=prefix)
    gateway.start()
    with ProgressClient.from_url(store_url, StoreOptions(prefix=prefix)) as worker:
        mine = worker.create_job(owner=OWNER, kind="demo").id
        theirs = worker.create_job(owner=OTHER, kind="demo").id
        worker.start(mine)
        worker.start(theirs)
        yield Deployment(gateway, worker, mine, theirs)
    gateway.stop()


def send(
    client: httpx.Client,
    method: str,
    route: str,
    job_id: str,
    headers: dict[str, str] | None = None,
    params: dict[str, str] | None = None,
) -> httpx.Response:
    """One request; a 200 event stream is closed after its headers."""
    url = route.replace("{id}", job_id)
    body = {"json": {"kind": "demo", "params": {"steps": 1}}} if route == "/exports" else {}
    with client.stream(method, url, headers=headers, params=params, **body) as response:
        if "event-stream" not in response.headers.get("content-type", ""):
            response.read()
    return response


def test_every_route_refuses_every_bad_token(deployment: Deployment) -> None:
    job_id = deployment.mine
    with httpx.Client(base_url=deployment.gateway.url, timeout=10) as client:
        for method, route in ROUTES:
            case = f"{method} {route}"
            for headers, params in (
                (None, None),
                ({"Authorization": "Bearer"}, None),
                ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, None),
                ({"Authorization": ""}, None),
                (None, {"token": ""}),
            ):
                response = send(client, method, route, job_id, headers, params)
                assert_problem(response, 401, "unauthorized")
                assert response.headers["www-authenticate"].startswith("Bearer"), case
            for name, token in bad_tokens().items():
                for how in ("header", "query"):
                    response = (
                        send(client, method, route, job_id, bearer(token))
                        if how == "header"
                        else send(client, method, route, job_id, None, {"token": token})
                    )
                    assert response.status_code == 401, (case, name, how, response.text[:200])
                    assert_problem(response, 401, "unauthorized")
                    assert 'error="invalid_token"' in response.headers["www-authenticate"]
            # A bad token is 401 whatever the id: nothing about ids is revealed first.
            for bad_id in ("not-a-uuid", deployment.theirs, str(uuid.uuid4())):
                response = send(client, method, route, bad_id, bearer("not-a-jwt"))
                assert_problem(response, 401, "unauthorized")
    untouched(deployment)


def test_another_owners_job_is_403_and_a_missing_job_404(deployment: Deployment) -> None:
    token = bearer(issue_token(SECRET, OWNER))
    missing = str(uuid.uuid4())
    with httpx.Client(base_url=deployment.gateway.url, timeout=10) as client:
        for method, route in JOB_ROUTES:
            body = assert_problem(
                send(client, method, route, deployment.theirs, token), 403, "forbidden"
            )
            assert OTHER not in body["detail"]  # whose job it is stays unsaid
            assert_problem(send(client, method, route, missing, token), 404, "not_found")
        # The query names no one: the token's owner is the only owner.
        response = client.get("/exports/active", headers=token, params={"owner": OTHER})
        ids = [job["id"] for job in response.json()["active"]]
        assert deployment.theirs not in ids
        assert deployment.mine in ids
    untouched(deployment)


def test_health_routes_need_no_token(deployment: Deployment) -> None:
    with httpx.Client(base_url=deployment.gateway.url, timeout=10) as client:
        for path in OPEN_ROUTES:
            assert client.get(path).status_code == 200, path
            # A bad token changes nothing on an open route.
            assert client.get(path, headers=bearer("not-a-jwt")).status_code == 200, path


async def closed_with(client: WsClient) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed(client)
    assert closed.value.rcvd is not None, "closed without a close frame"
    return closed.value.rcvd.code


async def read_until_closed(client: WsClient) -> None:
    while True:
        frame = await client.recv(10)
        assert frame["op"] not in ("update", "ready", "pong"), frame


async def test_every_websocket_way_in_refuses_every_bad_token(deployment: Deployment) -> None:
    url = deployment.gateway.ws_url
    for name, token in {**bad_tokens(), "empty": ""}.items():
        for how in ("query", "header", "auth frame"):
            if how == "header" and not token:
                continue  # httpx and websockets refuse to send an empty credential
            if how != "auth frame" and len(token) > 8000:
                # Over the handshake parser's 8 KiB line limit: refused before any upgrade,
                # 414 for the request line, 431 for a header.
                assert await refused_handshake(url, how, token) == (414 if how == "query" else 431)
                continue
            if how == "query":
                client = await WsClient.connect(f"{url}?token={token}")
                if not token:  # ?token= names no token: the gateway waits for an auth frame
                    await client.send({"op": "auth", "token": token})
            elif how == "header":
                client = WsClient(
                    await websockets.connect(
                        url, compression=None, additional_headers=bearer(token)
                    )
                )
            else:
                client = await WsClient.connect(url)
                await client.send({"op": "auth", "token": token})
            assert await closed_with(client) == 4401, (name, how)


async def refused_handshake(url: str, how: str, token: str) -> int:
    """The HTTP status of a WebSocket handshake the gateway refuses."""
    connect = (
        websockets.connect(f"{url}?token={token}")
        if how == "query"
        else websockets.connect(url, additional_headers=bearer(token))
    )
    with pytest.raises(InvalidStatus) as refused:
        await connect
    return refused.value.response.status_code


async def test_no_op_works_before_authentication(deployment: Deployment) -> None:
    client = await WsClient.connect(deployment.gateway.ws_url)
    for frame in (
        {"op": "subscribe", "ref": "a", "jobs": [deployment.mine, deployment.theirs]},
        {"op": "subscribe", "ref": "b", "scope": "mine"},
        {"op": "unsubscribe", "ref": "c", "jobs": [deployment.mine]},
        {"op": "ping", "ref": "d"},
    ):
        await client.send(frame)
        error = await client.recv()
        assert (error["op"], error["code"], error["ref"]) == ("error", "bad_request", frame["ref"])
        assert "authenticate first" in error["message"]
    deployment.worker.update(deployment.mine, progress=5)
    # The connection is still unauthenticated: a bad auth frame closes it, and nothing about
    # the job was ever sent.
    await client.send({"op": "auth", "token": "not-a-jwt"})
    assert await closed_with(client) == 4401
    assert not [frame for frame in client.frames if frame["op"] == "update"]


async def test_every_op_on_another_owners_job_is_refused(deployment: Deployment) -> None:
    client = await WsClient.connect(deployment.gateway.ws_url, issue_token(SECRET, OWNER))
    await client.ready()
    missing = str(uuid.uuid4())
    frames = await client.subscribe("s", [deployment.theirs, missing, deployment.mine])
    errors = {frame["job_id"]: frame["code"] for frame in frames if frame["op"] == "error"}
    assert errors == {deployment.theirs: "forbidden", missing: "not_found"}
    seen = {frame["job"]["id"] for frame in frames if frame["op"] == "update"}
    assert seen == {deployment.mine}
    frames = await client.subscribe("again", [{"id": deployment.theirs, "seq": 0}])
    assert [frame.get("code") for frame in frames if frame["op"] == "error"] == ["forbidden"]
    # scope "mine" is the token's owner's jobs only.
    await client.send({"op": "subscribe", "ref": "m", "scope": "mine"})
    await client.recv_until(lambda frame: frame["op"] == "ack" and frame["ref"] == "m")
    # Unsubscribing from someone else's job is harmless and reveals nothing.
    await client.send({"op": "unsubscribe", "ref": "u", "jobs": [deployment.theirs]})
    await client.recv_until(lambda frame: frame["op"] == "ack" and frame["ref"] == "u")
    deployment.worker.update(deployment.theirs, progress=40)
    deployment.worker.update(deployment.mine, progress=41)
    await client.wait_for_job(deployment.mine, lambda job: job["progress"] == 41)
    owners = {frame["job"]["owner"] for frame in client.frames if frame["op"] == "update"}
    assert owners == {OWNER}
    await client.close()


def untouched(deployment: Deployment) -> None:
    """No refused request changed anything: no job cancelled, none created for anyone."""
    for job_id in (deployment.mine, deployment.theirs):
        assert not deployment.worker.get(job_id).cancel_requested
    for owner in (OWNER, OTHER):
        headers = bearer(issue_token(SECRET, owner))
        owned = httpx.get(f"{deployment.gateway.url}/exports/active", headers=headers).json()
        assert len(owned["active"]) + len(owned["recent"]) == 1, owner


def test_the_logs_have_no_tracebacks(deployment: Deployment) -> None:
    log = Path(deployment.gateway.log_path).read_text(errors="replace")
    assert "Traceback" not in log
