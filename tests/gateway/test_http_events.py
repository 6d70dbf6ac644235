"""``GET /exports/{id}/events``: Server-Sent Events from a real gateway process, read as a
stream by a real HTTP client, on both backends."""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import AsyncIterator
from pathlib import Path

from progress_core.store import StoreOptions
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import GatewayServer
from tests.support.http import (
    SseItem,
    api_client,
    assert_problem,
    bearer,
    eventually_metric,
    metric,
    sse_items,
)


def alice() -> dict[str, str]:
    return bearer(token_for("alice"))


async def read_events(
    stream: AsyncIterator[SseItem], until_seq: int | None = None
) -> list[SseItem]:
    """Every item up to the end of the stream, or up to the event with ``until_seq``."""
    items: list[SseItem] = []
    async for item in stream:
        items.append(item)
        if until_seq is not None and item.id == str(until_seq):
            break
    return items


def snapshots(items: list[SseItem]) -> list[dict[str, object]]:
    events = [item for item in items if item.comment is None]
    for event in events:
        assert event.event == "update"
        assert event.data is not None
        assert json.loads(event.data)["seq"] == int(event.id or "0")
    return [json.loads(event.data or "") for event in events]


async def test_events_stream_the_job_and_end_after_the_terminal_snapshot(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    url = f"/exports/{job.id}/events"
    async with (
        api_client(gateway) as client,
        # ?token= is how a browser's EventSource authenticates.
        client.stream("GET", url, params={"token": token_for("alice")}) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        events = sse_items(response)
        first = snapshots(await read_events(events, until_seq=1))
        assert [(s["seq"], s["status"]) for s in first] == [(1, "queued")]

        def work() -> None:
            worker.start(job.id)
            for step in range(1, 21):
                worker.update(job.id, progress=step * 4.5, message=f"step {step}")
            worker.succeed(job.id, result={"url": "done"})

        await asyncio.to_thread(work)
        # read_events returns only when the server ends the stream.
        rest = snapshots(await read_events(events))
    seqs = [s["seq"] for s in rest]
    assert seqs == sorted(set(seqs)), seqs  # strictly increasing; skipping is allowed
    assert (rest[-1]["seq"], rest[-1]["status"], rest[-1]["result"]) == (
        23,
        "succeeded",
        {"url": "done"},
    )
    async with api_client(gateway) as client:
        await eventually_metric(client, "pgw_subscriptions", 0)


async def test_last_event_id_sends_only_newer_snapshots(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    worker.start(job.id)
    worker.update(job.id, progress=10)
    url = f"/exports/{job.id}/events"
    async with api_client(gateway) as client:
        async with client.stream("GET", url, headers={**alice(), "Last-Event-ID": "2"}) as response:
            events = sse_items(response)
            assert response.status_code == 200
            assert [s["seq"] for s in snapshots(await read_events(events, until_seq=3))] == [3]
        async with client.stream("GET", url, headers={**alice(), "Last-Event-ID": "3"}) as response:
            events = sse_items(response)
            # The headers arrive once the gateway watches the job: this change cannot be missed.
            assert response.status_code == 200
            await asyncio.to_thread(worker.update, job.id, progress=20)
            items = await read_events(events, until_seq=4)
            assert [s["seq"] for s in snapshots(items)] == [4]  # nothing at or below 3 came first
        worker.succeed(job.id)
        # The client has the terminal snapshot: 204 makes an EventSource stop reconnecting.
        response = await client.get(url, headers={**alice(), "Last-Event-ID": "5"})
        assert response.status_code == 204
        # A new EventSource cannot set the header: the query parameter stands in for it.
        response = await client.get(f"{url}?last_event_id=5", headers=alice())
        assert response.status_code == 204
        async with client.stream("GET", url, headers={**alice(), "Last-Event-ID": "4"}) as response:
            events = sse_items(response)
            ending = snapshots(await read_events(events))
            assert [(s["seq"], s["status"]) for s in ending] == [(5, "succeeded")]
        # HEAD answers with the stream's headers and no stream.
        head = await client.head(url, headers=alice())
        assert (head.status_code, head.content) == (200, b"")
        assert head.headers["content-type"].startswith("text/event-stream")
        for bad in ("abc", "-1", "1.5"):
            response = await client.get(url, headers={**alice(), "Last-Event-ID": bad})
            body = assert_problem(response, 400, "bad_request")
            assert "Last-Event-ID" in body["detail"]


async def test_an_idle_stream_gets_keep_alive_comments(
    store_url: str, store_options: StoreOptions, worker: ProgressClient, tmp_path: Path
) -> None:
    server = GatewayServer(
        store_url, tmp_path / "gateway.log", key_prefix=store_options.prefix, sse_keepalive_s="1"
    )
    server.start()
    try:
        job = worker.create_job(owner="alice", kind="demo")
        url = f"/exports/{job.id}/events"
        async with (
            api_client(server) as client,
            client.stream("GET", url, headers={**alice(), "Last-Event-ID": "1"}) as response,
        ):
            assert response.status_code == 200
            items = sse_items(response)
            comments = [await anext(items), await anext(items)]
            assert comments == [SseItem(comment="keep-alive")] * 2
            # The stream is still live after the keep-alives.
            await asyncio.to_thread(worker.update, job.id, progress=1)
            update = await anext(items)
            assert (update.id, update.event) == ("2", "update")
    finally:
        server.stop()


async def test_a_client_that_goes_away_leaves_the_hub(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    url = f"/exports/{job.id}/events"
    async with api_client(gateway) as client:
        async with client.stream("GET", url, headers=alice()) as response:
            events = sse_items(response)
            assert [s["seq"] for s in snapshots(await read_events(events, until_seq=1))] == [1]
            assert await metric(client, "pgw_subscriptions") == 1
        # Closed by the client; with a 15 s keep-alive only reading the request side notices.
        await eventually_metric(client, "pgw_subscriptions", 0)
        # And the gateway still serves the job to the next stream.
        async with client.stream("GET", url, headers=alice()) as response:
            events = sse_items(response)
            assert [s["seq"] for s in snapshots(await read_events(events, until_seq=1))] == [1]


async def test_draining_ends_streams_so_clients_reconnect_elsewhere(
    store_url: str, store_options: StoreOptions, worker: ProgressClient, tmp_path: Path
) -> None:
    server = GatewayServer(
        store_url, tmp_path / "gateway.log", key_prefix=store_options.prefix, drain_s="1"
    )
    server.start()
    try:
        job = worker.create_job(owner="alice", kind="demo")
        url = f"/exports/{job.id}/events"
        async with (
            api_client(server) as client,
            client.stream("GET", url, headers=alice()) as response,
        ):
            events = sse_items(response)
            assert len(snapshots(await read_events(events, until_seq=1))) == 1
            exit_code = asyncio.create_task(asyncio.to_thread(server.terminate))
            # The stream ends (it would otherwise stay open for the job's lifetime).
            assert snapshots(await read_events(events)) == []
        # uvicorn re-raises the signal it handled once it has shut down cleanly.
        assert await exit_code in (0, -signal.SIGTERM)
        assert "Application shutdown complete" in server.log()
    finally:
        server.stop()
