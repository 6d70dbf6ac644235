"""Hostile JSON is bad input, never a crash: deep nesting, huge numbers, NaN and lone surrogates
answer 400 over HTTP and a ``bad_request`` error frame over WebSocket (the connection stays and
the frame counts against its bad-frame budget), against a real gateway process."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from progress_gateway.auth import issue_token
from progress_gateway.jsonlimits import MAX_DEPTH
from progress_workers import ProgressClient
from tests.support.gateway_server import SECRET, GatewayServer, embedded_gateway
from tests.support.http import assert_problem, bearer
from tests.support.ws_client import WsClient

UNCLOSED = "[" * 60_000  # under the 64 KiB frame limit, so it reaches the decoder
DEEP = "[" * 10_000 + "]" * 10_000  # valid JSON, 10,000 levels
HUGE_INT = "9" * 5_000  # over CPython's 4,300-digit int conversion limit


def nested(levels: int) -> str:
    return "[" * levels + "]" * levels


# The same hostile values where a client puts JSON: a whole document, or inside a valid one.
HOSTILE_DOCUMENTS = {
    "unclosed nesting": UNCLOSED,
    "10,000-deep arrays": DEEP,
    "deep params": '{"kind":"demo","params":{"a":' + DEEP + "}}",
    "one level too deep": '{"kind":"demo","params":{"a":' + nested(MAX_DEPTH - 1) + "}}",
    "huge integer": HUGE_INT,
    "huge integer in params": '{"kind":"demo","params":{"steps":' + HUGE_INT + "}}",
    "huge float in params": '{"kind":"demo","params":{"steps":1' + "0" * 5_000 + ".5}}",
    "NaN": '{"kind":"demo","params":{"steps":NaN}}',
    "overflowing float": '{"kind":"demo","params":{"steps":1e999}}',
    "lone surrogate": '{"kind":"demo\\ud800","params":{}}',
}


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with embedded_gateway(tmp_path_factory.mktemp("malformed")) as server:
        yield server


@pytest.fixture(scope="module")
def job_id(gateway: GatewayServer) -> str:
    with ProgressClient.from_url(gateway.store_url) as worker:
        return worker.create_job(owner="mallory", kind="demo").id


def token() -> str:
    return issue_token(SECRET, "mallory")


@pytest.mark.parametrize("name", sorted(HOSTILE_DOCUMENTS))
async def test_a_hostile_body_is_400_never_500(gateway: GatewayServer, name: str) -> None:
    headers = {**bearer(token()), "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        response = await client.post("/exports", content=HOSTILE_DOCUMENTS[name], headers=headers)
        assert_problem(response, 400, "bad_request")
        # The gateway still parses a well-formed body afterwards (422: no such kind).
        response = await client.post("/exports", json={"kind": "nope"}, headers=headers)
        assert_problem(response, 422, "unprocessable")


async def test_nesting_up_to_the_limit_is_accepted(gateway: GatewayServer) -> None:
    body = '{"kind":"nope","params":{"a":' + nested(MAX_DEPTH - 2) + "}}"
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        response = await client.post("/exports", content=body, headers=bearer(token()))
        assert_problem(response, 422, "unprocessable")


async def test_a_body_that_is_not_utf8_is_400(gateway: GatewayServer) -> None:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        response = await client.post(
            "/exports", content=b'{"kind":"\xff"}', headers=bearer(token())
        )
        assert_problem(response, 400, "bad_request")


async def test_numbers_in_ids_query_and_headers_are_bounded(
    gateway: GatewayServer, job_id: str
) -> None:
    long_number = "9" * 5_000
    alice = bearer(token())
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        for params in ({"wait": long_number}, {"wait": f"1e{long_number}"}, {"wait": "nan"}):
            response = await client.get(f"/exports/{job_id}", params=params, headers=alice)
            assert_problem(response, 400, "bad_request")
        response = await client.get(
            "/exports/active", params={"recent_s": long_number}, headers=alice
        )
        assert_problem(response, 400, "bad_request")
        for last_event_id in (long_number, "-1", "1e3"):
            response = await client.get(
                f"/exports/{job_id}/events", headers={**alice, "Last-Event-ID": last_event_id}
            )
            assert_problem(response, 400, "bad_request")
        response = await client.get(f"/exports/{long_number}", headers=alice)
        assert_problem(response, 400, "bad_request")


async def test_hostile_frames_get_an_error_and_the_connection_stays(
    gateway: GatewayServer, job_id: str
) -> None:
    client = await WsClient.connect(gateway.ws_url, token())
    await client.ready()
    frames = [
        UNCLOSED,
        DEEP,
        HUGE_INT,
        '{"op":"ping","pad":' + DEEP + "}",
        '{"op":"subscribe","jobs":[{"id":"' + job_id + '","seq":' + HUGE_INT + "}]}",
        '{"op":"ping","n":NaN}',
        '{"op":"ping","ref":"\\udc00"}',
    ]
    for frame in frames:
        await client.send(frame)
        error = await client.recv()
        assert (error["op"], error["code"]) == ("error", "bad_request"), frame[:60]
        await client.send({"op": "ping"})
        assert await client.recv() == {"op": "pong"}
    # A seq that is large but a sane literal is an ordinary (if optimistic) subscription.
    frames_seen = await client.subscribe("big", [{"id": job_id, "seq": 10**30}])
    assert not [frame for frame in frames_seen if frame["op"] == "error"], frames_seen
    await client.send({"op": "ping"})
    assert await client.recv_until(lambda frame: frame["op"] == "pong")
    # Each hostile frame counted as a bad frame: the budget (10) runs out as documented.
    for _ in range(10 - len(frames)):
        await client.send(DEEP)
        assert (await client.recv())["code"] == "bad_request"
    await client.send(DEEP)
    assert await close_code(client) == 1008


async def close_code(client: WsClient) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed(client)
    assert closed.value.rcvd is not None, "closed without a close frame (1006)"
    return closed.value.rcvd.code


async def read_until_closed(client: WsClient) -> None:
    while True:
        await client.recv(5)


def test_the_log_has_no_tracebacks(gateway: GatewayServer) -> None:
    log = gateway.log_path.read_text(errors="replace")
    assert "Traceback" not in log
    assert '" 500' not in log
