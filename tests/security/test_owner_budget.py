"""Issue 11 finding 7: one per-owner connection budget across WebSocket, SSE and long-poll.

Before, only WebSockets counted: an owner at its WebSocket limit could still open any number of
SSE streams and long-polls. Here the limit is 3 and every transport draws from it; past it HTTP
answers 429 (``too_many_connections``, ``Retry-After``) and a WebSocket closes with 4429. Every
way a connection ends gives its unit back: the count returns to zero.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, suppress
from pathlib import Path

import httpx
import pytest
from websockets.exceptions import ConnectionClosed

from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer, embedded_gateway
from tests.support.http import api_client, assert_problem, bearer, eventually_metric, metric
from tests.support.ws_client import WsClient

LIMIT = 3
TRANSPORTS = ("ws", "sse", "long_poll")


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with embedded_gateway(
        tmp_path_factory.mktemp("budget"), max_connections_per_owner=str(LIMIT), body_timeout_s="3"
    ) as server:
        yield server


@pytest.fixture
def worker(gateway: GatewayServer) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(gateway.store_url) as client:
        yield client


@pytest.fixture
async def client(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(gateway) as opened:
        yield opened


async def held(client: httpx.AsyncClient, transport: str) -> float:
    return await metric(client, "pgw_owner_connections", transport=transport)


async def held_becomes(client: httpx.AsyncClient, expected: dict[str, int]) -> None:
    async def reached() -> bool:
        return all([await held(client, t) == expected.get(t, 0) for t in TRANSPORTS])

    await eventually(reached, 10.0, f"pgw_owner_connections == {expected}")


async def open_sse(stack: AsyncExitStack, client: httpx.AsyncClient, url: str) -> None:
    response = await stack.enter_async_context(
        client.stream("GET", url, headers=bearer(token_for("alice")))
    )
    assert response.status_code == 200


async def read_until_closed(connection: WsClient) -> None:
    while True:
        await connection.recv(10)


async def ws_close_code(connection: WsClient) -> int:
    with pytest.raises(ConnectionClosed) as closed:
        await read_until_closed(connection)
    assert closed.value.rcvd is not None
    return closed.value.rcvd.code


async def test_websocket_sse_and_long_poll_share_one_budget_and_give_it_back(
    gateway: GatewayServer, worker: ProgressClient, client: httpx.AsyncClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    alice = bearer(token_for("alice"))
    events = f"/exports/{job.id}/events"
    async with AsyncExitStack() as stack:
        ws = await WsClient.connect(gateway.ws_url, token_for("alice"))
        await ws.ready()
        await ws.subscribe("r1", [job.id])
        await open_sse(stack, client, events)
        poll = asyncio.create_task(client.get(f"/exports/{job.id}?wait=30", headers=alice))
        await eventually_metric(client, "pgw_subscriptions", 3)  # all three are watching

        # The budget is spent, whatever the transport asks.
        for over in (
            await client.get(events, headers=alice),
            await client.get(f"/exports/{job.id}?wait=30", headers=alice),
        ):
            assert_problem(over, 429, "too_many_connections")
            assert int(over.headers["Retry-After"]) > 0
        refused = await WsClient.connect(gateway.ws_url, token_for("alice"))
        assert await ws_close_code(refused) == 4429
        await held_becomes(client, {"ws": 1, "sse": 1, "long_poll": 1})
        # Short requests are not streams: they are not refused.
        assert (await client.get(f"/exports/{job.id}", headers=alice)).status_code == 200
        # Another owner has a budget of its own.
        bob_job = worker.create_job(owner="bob", kind="demo")
        async with client.stream(
            "GET", f"/exports/{bob_job.id}/events", headers=bearer(token_for("bob"))
        ) as bob_stream:
            assert bob_stream.status_code == 200
        assert await metric(client, "pgw_owner_budget_refused_total", transport="sse") >= 1

        # Given back on each way out: a long-poll answered by an update, a WebSocket the client
        # closes, an SSE stream the client leaves.
        worker.update(job.id, progress=10)
        assert (await poll).status_code == 200
        await ws.connection.close()
    await held_becomes(client, {})

    # And the whole budget is usable again.
    async with AsyncExitStack() as stack:
        for _ in range(LIMIT):
            await open_sse(stack, client, events)
        await held_becomes(client, {"sse": LIMIT})
        assert_problem(await client.get(events, headers=alice), 429, "too_many_connections")
    await held_becomes(client, {})


async def test_a_long_poll_the_client_abandons_gives_its_unit_back(
    worker: ProgressClient, client: httpx.AsyncClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    alice = bearer(token_for("alice"))
    polls = [
        asyncio.create_task(client.get(f"/exports/{job.id}?wait=30", headers=alice))
        for _ in range(LIMIT)
    ]
    await held_becomes(client, {"long_poll": LIMIT})
    for poll in polls:
        poll.cancel()  # closes the request's connection: the gateway sees the client leave
    await asyncio.gather(*polls, return_exceptions=True)
    await held_becomes(client, {})
    answered = await client.get(f"/exports/{job.id}?wait=0.1", headers=alice)
    assert answered.status_code == 304


async def test_refused_and_failed_requests_hold_nothing(
    worker: ProgressClient, client: httpx.AsyncClient
) -> None:
    """A 404, a 403 and a job that is already over never take a unit (or take it and give it
    back), so an owner cannot lose its budget to requests that fail."""
    alice = bearer(token_for("alice"))
    bob_job = worker.create_job(owner="bob", kind="demo")
    done = worker.create_job(owner="alice", kind="demo")
    worker.start(done.id)
    last_seq = worker.succeed(done.id, result={}).seq
    for _ in range(2 * LIMIT):
        missing = "00000000-0000-4000-8000-000000000000"
        assert_problem(
            await client.get(f"/exports/{missing}/events", headers=alice), 404, "not_found"
        )
        assert_problem(
            await client.get(f"/exports/{bob_job.id}?wait=5", headers=alice), 403, "forbidden"
        )
        finished = await client.get(
            f"/exports/{done.id}/events?last_event_id={last_seq}", headers=alice
        )
        assert finished.status_code == 204
    await held_becomes(client, {})


async def test_a_long_poll_that_fails_while_waiting_gives_its_unit_back(
    gateway: GatewayServer, worker: ProgressClient, client: httpx.AsyncClient
) -> None:
    """The error path: a long-poll announcing a body it never sends fails with 408 after the
    body timeout, while it waits on the job."""
    job = worker.create_job(owner="alice", kind="demo")
    reader, writer = await asyncio.open_connection("127.0.0.1", gateway.port)
    try:
        writer.write(
            (
                f"GET /exports/{job.id}?wait=30 HTTP/1.1\r\nHost: localhost\r\n"
                f"Authorization: Bearer {token_for('alice')}\r\nContent-Length: 10\r\n\r\n"
            ).encode()
        )
        await held_becomes(client, {"long_poll": 1})  # waiting, and its body still due
        status_line = await asyncio.wait_for(reader.readline(), 15)
        assert status_line.startswith(b"HTTP/1.1 408"), status_line
    finally:
        writer.close()
        with suppress(ConnectionError):  # the server closes after a 408: a reset is expected
            await writer.wait_closed()
    await held_becomes(client, {})


async def test_streams_ended_by_a_drain_give_their_units_back(tmp_path: Path) -> None:
    """The drain path: while a gateway drains, a stream or long-poll opened then ends at once
    (the client goes to another replica) and gives its unit back. Bob's 20 WebSockets keep the
    drain going: their 1001 closes are spread over the 30 s window."""
    server = GatewayServer(
        f"sqlite:///{tmp_path / 'jobs.db'}", tmp_path / "gateway.log", drain_s="30"
    )
    server.start()
    try:
        with ProgressClient.from_url(server.store_url) as worker:
            job = worker.create_job(owner="alice", kind="demo")
        alice = bearer(token_for("alice"))
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(api_client(server))
            for _ in range(20):
                connection = await WsClient.connect(server.ws_url, token_for("bob"))
                stack.push_async_callback(connection.connection.close)
                await connection.ready()
            assert server.process is not None
            server.process.send_signal(signal.SIGTERM)
            await eventually(lambda: not_ready(client), 10.0, "the gateway to drain")

            polled = await client.get(f"/exports/{job.id}?wait=30", headers=alice)
            assert polled.status_code == 304  # ended by the drain, not by its 30 s
            events = f"/exports/{job.id}/events?last_event_id={job.seq}"
            async with client.stream("GET", events, headers=alice) as sse:
                assert sse.status_code == 200
                assert [chunk async for chunk in sse.aiter_bytes()] == []  # ended at once

            async def given_back() -> bool:
                return [await held(client, "sse"), await held(client, "long_poll")] == [0, 0]

            await eventually(given_back, 10.0, "the drained streams' units to come back")
            assert await held(client, "ws") > 0  # still draining: the check above was live
    finally:
        server.stop()


async def not_ready(client: httpx.AsyncClient) -> bool:
    return (await client.get("/readyz")).status_code == 503
