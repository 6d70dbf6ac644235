"""Jobs survive gateway restarts; a returning user sees the truth; one reaper leads."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest

from progress_core.store import StoreOptions
from progress_gateway.executors.local import parse_call_id, process_start_ticks
from tests.gateway.conftest import token_for
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer
from tests.support.http import bearer, metric
from tests.support.redis_server import RedisServer
from tests.support.ws_client import WsClient

LIVELY = {
    "resync_s": "1",
    "worker_heartbeat_s": "0.2",
    "stale_after_s": "1",
    "reap_interval_s": "0.25",
}


def gateway_for(store_url: str, options: StoreOptions, log: Path, **settings: str) -> GatewayServer:
    return GatewayServer(store_url, log, key_prefix=options.prefix, **{**LIVELY, **settings})


async def create(url: str, owner: str, params: dict[str, Any]) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as client:
        response = await client.post(
            "/exports", json={"kind": "demo", "params": params}, headers=bearer(token_for(owner))
        )
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def until_running(url: str, owner: str, job_id: str) -> None:
    async def running() -> bool:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:
            job = (await client.get(f"/exports/{job_id}", headers=bearer(token_for(owner)))).json()
        return bool(job["status"] == "running" and job["progress"] > 0)

    await eventually(running, 30, f"job {job_id} to run")


async def test_jobs_keep_running_through_a_gateway_restart_and_are_seen(
    store_url: str, store_options: StoreOptions, tmp_path: Path
) -> None:
    gateway = gateway_for(store_url, store_options, tmp_path / "gateway.log")
    gateway.start()
    try:
        job = await create(gateway.url, "alice", {"steps": 30, "step_s": 0.1})
        await until_running(gateway.url, "alice", job["id"])
        gateway.kill()
        pid, ticks = parse_call_id(job["call_id"])
        assert process_start_ticks(pid) == ticks  # the job's process outlived the gateway
        gateway.start()
        client = await WsClient.connect(gateway.ws_url, token_for("alice"))
        await client.ready()
        await client.subscribe("r", [job["id"]])
        done = await client.wait_for_job(job["id"], lambda j: j["status"] != "running", 60)
        assert done["status"] == "succeeded" and done["result"]["steps"] == 30
        await client.close()
    finally:
        gateway.stop()


async def test_worker_killed_while_the_gateway_was_restarted_is_reaped_as_worker_lost(
    store_url: str, store_options: StoreOptions, tmp_path: Path
) -> None:
    gateway = gateway_for(store_url, store_options, tmp_path / "gateway.log")
    gateway.start()
    try:
        job = await create(gateway.url, "bob", {"steps": 1000, "step_s": 0.05})
        await until_running(gateway.url, "bob", job["id"])
        gateway.kill()
        gateway.start()  # the new gateway is not the job process's parent: only the reaper knows
        pid, _ = parse_call_id(job["call_id"])
        os.kill(pid, signal.SIGKILL)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:

            async def reaped() -> bool:
                return await metric(client, "pgw_jobs_finalized_total", reason="worker_lost") == 1

            await eventually(reaped, 30, "the reaper to finalize the lost job")
            final = await client.get(f"/exports/{job['id']}", headers=bearer(token_for("bob")))
        assert final.json()["status"] == "failed"
        assert final.json()["error"]["code"] == "worker_lost"
    finally:
        gateway.stop()


async def test_a_returning_user_sees_jobs_that_ended_while_no_gateway_ran(
    store_url: str, store_options: StoreOptions, tmp_path: Path
) -> None:
    gateway = gateway_for(store_url, store_options, tmp_path / "gateway.log")
    gateway.start()
    finishing = await create(gateway.url, "carol", {"steps": 20, "step_s": 0.05})
    dying = await create(gateway.url, "carol", {"steps": 1000, "step_s": 0.05})
    await until_running(gateway.url, "carol", dying["id"])
    gateway.kill()
    # While no gateway runs: one job finishes on its own, the other's worker dies.
    os.kill(parse_call_id(dying["call_id"])[0], signal.SIGKILL)
    pid, ticks = parse_call_id(finishing["call_id"])
    await eventually(
        _gone(pid, ticks), 30, "the finishing job's process to end while no gateway runs"
    )
    # No reaper sweeps on the new gateway for an hour: only lazy finalization can help.
    gateway.settings["reap_interval_s"] = "3600"
    gateway.start()
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
            response = await client.get("/exports/active", headers=bearer(token_for("carol")))
        body = response.json()
        assert body["active"] == []
        by_id = {job["id"]: job for job in body["recent"]}
        assert by_id[finishing["id"]]["status"] == "succeeded"
        assert by_id[dying["id"]]["status"] == "failed"
        assert by_id[dying["id"]]["error"]["code"] == "worker_lost"
    finally:
        gateway.stop()


def _gone(pid: int, ticks: int) -> Any:
    async def gone() -> bool:
        return process_start_ticks(pid) != ticks

    return gone


@pytest.fixture
def durable_redis(tmp_path: Path) -> RedisServer:
    server = RedisServer(tmp_path / "redis", appendonly=True)
    server.start()
    return server


async def test_exactly_one_reaper_leads_and_another_takes_over(
    durable_redis: RedisServer, tmp_path: Path
) -> None:
    options = StoreOptions(prefix="lead")
    gateways = [
        gateway_for(durable_redis.url, options, tmp_path / f"g{n}.log", reap_interval_s="0.5")
        for n in range(2)
    ]
    try:
        for gateway in gateways:
            gateway.start()

        async def leaders() -> list[float]:
            values = []
            for gateway in gateways:
                if gateway.process is None:
                    continue
                async with httpx.AsyncClient(base_url=gateway.url, timeout=5) as client:
                    values.append(await metric(client, "pgw_reaper_leader"))
            return values

        async def one_leader() -> bool:
            return sorted(await leaders()) == [0.0, 1.0]

        await eventually(one_leader, 10, "exactly one reaper leader")
        leader = next(
            gateway for gateway, value in zip(gateways, await leaders(), strict=True) if value
        )
        follower = next(gateway for gateway in gateways if gateway is not leader)
        leader.kill()

        async def follower_leads() -> bool:
            async with httpx.AsyncClient(base_url=follower.url, timeout=5) as client:
                return await metric(client, "pgw_reaper_leader") == 1.0

        # The lock expires 3 reap intervals (1.5 s) after the leader's last renewal.
        await eventually(follower_leads, 10, "the follower to take over")
    finally:
        for gateway in gateways:
            gateway.stop()
        durable_redis.stop()
