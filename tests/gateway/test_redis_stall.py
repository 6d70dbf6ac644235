"""Redis that stops answering without closing anything (SIGSTOP, a silent network path): the
gateway answers 503 within ~2 s, ``/readyz`` within 1 s without naming the store's address, and
a silent pub/sub subscriber is replaced within the resync bound without holding subscribes.

Real redis-server, real gateway processes, real WebSocket clients; the silent subscriber comes
from the chaos suite's fault proxy, which drops Redis's bytes to the subscriber connection only.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
import time
from collections.abc import Awaitable, Iterator
from pathlib import Path

import httpx
import pytest

from progress_core.models import HistoryEvent
from progress_core.store import StoreOptions
from progress_core.store.redis import RedisJobStore
from progress_workers import JobStatus, ProgressClient
from tests.chaos.fault_proxy import FaultProxy
from tests.gateway.conftest import token_for
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer
from tests.support.http import api_client, assert_problem, bearer
from tests.support.redis_server import RedisServer
from tests.support.ws_client import WsClient

# The bounds (503 within ~2 s, /readyz within 1 s, silent subscriber replaced within the
# 5 s resync interval), asserted at twice their value so a loaded CI machine does not flake.
REQUEST_BOUND_S = 4.0
READY_BOUND_S = 2.0
CONVERGE_BOUND_S = 10.0
BURST = 100


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server: these tests freeze it."""
    server = RedisServer(tmp_path / "redis")
    server.start()
    yield server
    server.stop()


async def timed(request: Awaitable[httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response: httpx.Response = await request
    return response, time.monotonic() - started


async def test_a_frozen_redis_is_503_within_the_bound_and_readyz_names_no_address(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    gateway = GatewayServer(redis_server.url, tmp_path / "gateway.log")
    gateway.start()
    try:
        with ProgressClient.from_url(redis_server.url) as worker:
            job = worker.create_job(owner="alice", kind="demo")
        alice = bearer(token_for("alice"))
        async with api_client(gateway) as client:
            assert (await client.get(f"/exports/{job.id}", headers=alice)).status_code == 200
            with redis_server.frozen():
                ready, ready_s = await timed(client.get("/readyz"))
                timings = {"/readyz": ready_s}
                # More reads at once than the store has pooled connections (64): none waits for
                # a connection stuck on the frozen server, one timeout after another; and once
                # one has timed out, the next requests fail at once.
                burst = await asyncio.gather(
                    *(timed(client.get("/exports/active", headers=alice)) for _ in range(BURST))
                )
                assert {response.status_code for response, _ in burst} == {503}
                timings[f"{BURST} concurrent reads (slowest)"] = max(s for _, s in burst)
                for method, path, body in [
                    ("GET", f"/exports/{job.id}", None),
                    ("GET", f"/exports/{job.id}/history", None),
                    ("GET", "/exports/active", None),
                    ("POST", f"/exports/{job.id}/cancel", None),
                    ("POST", "/exports", {"kind": "demo", "params": {"steps": 1}}),
                ]:
                    response, elapsed = await timed(
                        client.request(method, path, headers=alice, json=body)
                    )
                    timings[f"{method} {path}"] = elapsed
                    assert_problem(response, 503, "store_unavailable")
                    assert response.headers["retry-after"] == "2", path
                watcher = await WsClient.connect(gateway.ws_url, token_for("alice"))
                await watcher.ready()
                started = time.monotonic()
                frames = await watcher.subscribe("r1", [{"id": job.id}])
                timings["WebSocket subscribe"] = time.monotonic() - started
                await watcher.close()
                assert [(f["op"], f.get("code")) for f in frames] == [
                    ("error", "store_unavailable"),
                    ("ack", None),
                ]
                # The driver's message (host, port) goes to the log, never to a client.
                assert frames[0]["message"] == "the job store is unavailable; retry later"
            print(
                "answer times while Redis is frozen:", {k: round(v, 2) for k, v in timings.items()}
            )
            assert ready.status_code == 503 and ready.headers["retry-after"] == "2"
            assert ready_s < READY_BOUND_S, timings
            # Unauthenticated callers learn that the store is down, never where it is.
            assert str(redis_server.port) not in ready.text and "127.0.0.1" not in ready.text
            assert "store: unavailable" in ready.json()["problems"], ready.text
            slow = {what: s for what, s in timings.items() if s >= REQUEST_BOUND_S}
            assert not slow, timings

            thawed = time.monotonic()

            async def serves() -> bool:
                response = await client.get(f"/exports/{job.id}", headers=alice)
                return response.status_code == 200

            async def is_ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(serves, 20.0, "the gateway to serve again after SIGCONT")
            serving_s = time.monotonic() - thawed
            await eventually(is_ready, 20.0, "/readyz 200 again after SIGCONT")
            ready_again_s = time.monotonic() - thawed
            print(f"after SIGCONT: serving in {serving_s:.2f}s, ready in {ready_again_s:.2f}s")
    finally:
        gateway.stop()


async def test_a_silent_subscriber_is_replaced_within_the_resync_bound(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    # The periodic resync is set far off (60 s): only the probe can find the silent subscriber
    # and only the resync after its replacement can deliver what it swallowed.
    proxy = FaultProxy(redis_server.port)
    proxy.start()
    gateway = GatewayServer(proxy.url, tmp_path / "gateway.log", resync_s="60")
    gateway.start()
    try:
        with ProgressClient.from_url(redis_server.url) as worker:
            first = worker.create_job(owner="alice", kind="demo")
            second = worker.create_job(owner="alice", kind="demo")
            watcher = await WsClient.connect(gateway.ws_url, token_for("alice"))
            await watcher.ready()
            await watcher.subscribe("r1", [{"id": first.id}])
            assert proxy.silence() == 1  # the gateway's one subscriber connection
            silenced = time.monotonic()
            worker.update(first.id, progress=40)

            # (b) A subscribe while the subscriber is silent is answered from the store, not
            # held until the subscription times out (store_unavailable after 5 s before).
            started = time.monotonic()
            frames = await watcher.subscribe("r2", [{"id": second.id}])
            subscribe_s = time.monotonic() - started
            assert [frame["op"] for frame in frames] == ["update", "ack"], frames

            # (a) The swallowed update arrives once the subscriber is replaced and resynced.
            await watcher.wait_for_job(
                first.id, lambda job: job["progress"] == 40, timeout=CONVERGE_BOUND_S + 5
            )
            converged_s = time.monotonic() - silenced
            # The job subscribed during the silence is live on the replacement.
            worker.update(second.id, progress=70)
            await watcher.wait_for_job(second.id, lambda job: job["progress"] == 70, timeout=5)
            await watcher.close()
        print(f"subscribe during silence {subscribe_s:.2f}s; converged after {converged_s:.2f}s")
        assert subscribe_s < REQUEST_BOUND_S
        assert converged_s < CONVERGE_BOUND_S
    finally:
        gateway.stop()
        proxy.close()


class _Seen(logging.Handler):
    """Sets ``event`` when a record containing ``text`` is logged (from any thread)."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.text = text
        self.event = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        if self.text in record.getMessage():
            self.event.set()


def test_a_reporter_writes_its_final_state_through_a_frozen_redis(
    redis_server: RedisServer,
) -> None:
    # Commands now fail after 1 s instead of retrying a silent server: the worker SDK's own
    # retry of the final state must carry it through, applied once.
    assert redis_server.process is not None
    pid = redis_server.process.pid
    retrying = _Seen("final state of job")
    logging.getLogger("progress_workers.reporter").addHandler(retrying)

    def thaw_once_retrying() -> None:
        retrying.event.wait(30)
        os.kill(pid, signal.SIGCONT)

    try:
        with ProgressClient.from_url(redis_server.url) as worker:
            job = worker.create_job(owner="alice", kind="demo")
            with worker.reporter(job.id) as reporter:
                reporter.update(progress=50)
                with redis_server.frozen():
                    thawer = threading.Thread(target=thaw_once_retrying)
                    thawer.start()
                    reporter.succeed(result={"ok": True})
                    thawer.join()
            assert retrying.event.is_set()
            done = worker.get(job.id)
    finally:
        logging.getLogger("progress_workers.reporter").removeHandler(retrying)
    assert (done.status, done.result) == (JobStatus.SUCCEEDED, {"ok": True})
    statuses = [event.status for event in asyncio.run(history(redis_server.url, job.id))]
    assert statuses.count(JobStatus.SUCCEEDED) == 1, statuses


async def history(url: str, job_id: str) -> list[HistoryEvent]:
    store = RedisJobStore.from_url(url, StoreOptions())
    try:
        return await store.history(job_id)
    finally:
        await store.aclose()
