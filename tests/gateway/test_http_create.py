"""``POST /exports`` and the job lifecycle end to end: real gateway, real job processes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from progress_core.store import StoreOptions
from progress_gateway.executors.local import parse_call_id
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer
from tests.support.http import api_client, assert_problem, bearer, metric
from tests.support.ws_client import WsClient

FAST = {"steps": 5, "step_s": 0}


@pytest.fixture
def lively(store_url: str, store_options: StoreOptions, tmp_path: Path) -> Iterator[GatewayServer]:
    """A gateway with a time-scaled lifecycle: heartbeat 0.2 s, stale after 1 s."""
    server = GatewayServer(
        store_url,
        tmp_path / "gateway.log",
        key_prefix=store_options.prefix,
        resync_s="1",
        worker_heartbeat_s="0.2",
        stale_after_s="1",
        reap_interval_s="0.25",
        cancel_grace_s="1",
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
async def api(lively: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with api_client(lively) as client:
        yield client


async def create(api: httpx.AsyncClient, owner: str, body: dict[str, Any]) -> dict[str, Any]:
    response = await api.post("/exports", json=body, headers=bearer(token_for(owner)))
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    assert response.headers["location"] == f"/exports/{job['id']}"
    return job


async def wait_status(
    api: httpx.AsyncClient, owner: str, job_id: str, statuses: set[str], within: float = 30
) -> dict[str, Any]:
    seen: dict[str, Any] = {}

    async def reached() -> bool:
        response = await api.get(f"/exports/{job_id}", headers=bearer(token_for(owner)))
        seen.update(response.json())
        return seen["status"] in statuses

    await eventually(reached, within, f"job {job_id} to reach {statuses}")
    return seen


async def test_create_answers_201_with_the_call_id_stored(
    api: httpx.AsyncClient, worker: ProgressClient
) -> None:
    job = await create(api, "alice", {"kind": "demo", "params": FAST})
    assert (job["owner"], job["kind"], job["executor"]) == ("alice", "demo", "local")
    assert job["call_id"].startswith("local:")
    assert job["params"] == {"steps": 5, "step_s": 0.0, "fail_at_step": None}
    # What the client was told is what the store holds: the id is never lost.
    assert worker.get(job["id"]).call_id == job["call_id"]
    done = await wait_status(api, "alice", job["id"], {"succeeded"})
    assert done["result"]["steps"] == 5 and done["progress"] == 100


async def test_create_rejects_bad_requests_and_writes_nothing(api: httpx.AsyncClient) -> None:
    headers = bearer(token_for("bob"))
    assert_problem(
        await api.post("/exports", json={"kind": "nope"}, headers=headers), 422, "unprocessable"
    )
    assert_problem(
        await api.post("/exports", json={"kind": "demo", "params": {"steps": 0}}, headers=headers),
        422,
        "unprocessable",
    )
    assert_problem(
        await api.post("/exports", content=b"{not json", headers=headers), 400, "bad_request"
    )
    assert_problem(
        await api.post("/exports", json={"kind": "demo", "extra": 1}, headers=headers),
        400,
        "bad_request",
    )
    assert_problem(
        await api.post("/exports", json={"kind": "demo", "params": [1]}, headers=headers),
        400,
        "bad_request",
    )
    huge = json.dumps({"kind": "demo", "params": {"pad": "x" * 300_000}})
    assert_problem(
        await api.post("/exports", content=huge, headers=headers), 413, "payload_too_large"
    )
    assert_problem(await api.post("/exports", json={"kind": "demo"}), 401, "unauthorized")
    active = (await api.get("/exports/active", headers=headers)).json()
    assert active == {"active": [], "recent": []}


async def test_failure_and_its_message_reach_the_client(
    lively: GatewayServer, api: httpx.AsyncClient
) -> None:
    client = await WsClient.connect(lively.ws_url, token_for("carol"))
    await client.ready()
    await client.send({"op": "subscribe", "ref": "m", "scope": "mine"})
    await client.recv_until(lambda frame: frame["op"] == "ack")
    job = await create(api, "carol", {"kind": "demo", "params": {**FAST, "fail_at_step": 2}})
    failed = await client.wait_for_job(job["id"], lambda j: j["status"] == "failed", timeout=30)
    assert failed["error"]["code"] == "worker_error"
    assert "step 2" in failed["error"]["message"]
    await client.close()


async def test_cancel_end_to_end(api: httpx.AsyncClient, worker: ProgressClient) -> None:
    job = await create(api, "dana", {"kind": "demo", "params": {"steps": 1000, "step_s": 0.05}})
    await wait_status(api, "dana", job["id"], {"running"})
    response = await api.post(f"/exports/{job['id']}/cancel", headers=bearer(token_for("dana")))
    assert response.status_code == 200 and response.json()["cancel_requested"] is True
    cancelled = await wait_status(api, "dana", job["id"], {"cancelled", "failed", "succeeded"})
    assert cancelled["status"] == "cancelled"
    # A worker report after the cancellation is refused and changes nothing.
    from progress_workers import JobFinished

    with pytest.raises(JobFinished):
        worker.update(job["id"], progress=99)
    assert worker.get(job["id"]).seq == cancelled["seq"]
    again = await api.post(f"/exports/{job['id']}/cancel", headers=bearer(token_for("dana")))
    assert again.status_code == 200 and again.json()["seq"] == cancelled["seq"]


async def test_forty_minute_job_time_scaled_is_never_marked_stale(
    api: httpx.AsyncClient, worker: ProgressClient
) -> None:
    # heartbeat 0.2 s, stale after 1 s, the job runs ~20 s: 20x the stale timeout, like a
    # 40-minute export against a 2-minute timeout.
    job = await create(api, "erin", {"kind": "demo", "params": {"steps": 80, "step_s": 0.25}})
    done = await wait_status(api, "erin", job["id"], {"succeeded", "failed", "cancelled"}, 90)
    assert done["status"] == "succeeded", done
    assert await metric(api, "pgw_jobs_finalized_total", reason="worker_lost") == 0


async def test_killed_worker_ends_worker_lost(
    api: httpx.AsyncClient,
) -> None:
    job = await create(api, "fred", {"kind": "demo", "params": {"steps": 1000, "step_s": 0.05}})
    await wait_status(api, "fred", job["id"], {"running"})
    pid, _ = parse_call_id(job["call_id"])
    os.kill(pid, signal.SIGKILL)
    lost = await wait_status(api, "fred", job["id"], {"failed", "succeeded", "cancelled"})
    assert lost["status"] == "failed" and lost["error"]["code"] == "worker_lost"
