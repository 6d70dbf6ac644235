"""A store outage over HTTP: 503 with ``Retry-After`` on every route, never 404, and recovery
without restarting the gateway, against a real Redis that is killed and restarted."""

from __future__ import annotations

from pathlib import Path

from progress_core.store import StoreOptions
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer
from tests.support.http import api_client, assert_problem, bearer
from tests.support.redis_server import RedisServer


async def test_a_store_outage_is_503_with_retry_after_never_404_and_recovers(
    tmp_path: Path,
) -> None:
    redis = RedisServer(tmp_path / "redis", appendonly=True)
    redis.start()
    gateway = GatewayServer(redis.url, tmp_path / "gateway.log", resync_s="1", probe_s="0.5")
    gateway.start()
    try:
        with ProgressClient.from_url(redis.url, StoreOptions()) as worker:
            job = worker.create_job(owner="alice", kind="demo")
        alice = bearer(token_for("alice"))
        async with api_client(gateway) as client:
            assert (await client.get(f"/exports/{job.id}", headers=alice)).status_code == 200
            redis.kill()
            for method, path in [
                ("GET", f"/exports/{job.id}"),
                ("GET", f"/exports/{job.id}?wait=5"),
                ("GET", f"/exports/{job.id}/events"),
                ("GET", f"/exports/{job.id}/history"),
                ("POST", f"/exports/{job.id}/cancel"),
                ("GET", "/exports/active"),
            ]:
                response = await client.request(method, path, headers=alice)
                body = assert_problem(response, 503, "store_unavailable")
                assert response.headers["retry-after"] == "2", path
                # No host or port of the store reaches the client; the log has them.
                assert body["detail"] == "the job store is unavailable; retry later"
            ready = await client.get("/readyz")
            assert ready.status_code == 503
            # Unauthenticated: that the store is down, not where it is ("Error 111 connecting
            # to 127.0.0.1:<port>" before).
            assert "store: unavailable" in ready.json()["problems"]
            assert str(redis.port) not in ready.text and "127.0.0.1" not in ready.text

            redis.start()  # same port, same directory: the append-only file brings the job back

            async def serves_the_job() -> bool:
                response = await client.get(f"/exports/{job.id}", headers=alice)
                return response.status_code == 200 and response.json()["id"] == job.id

            async def ready() -> bool:
                return (await client.get("/readyz")).status_code == 200

            await eventually(serves_the_job, 20.0, "the job served again after Redis came back")
            await eventually(ready, 20.0, "/readyz 200 after Redis came back")
            response = await client.post(f"/exports/{job.id}/cancel", headers=alice)
            assert (response.status_code, response.json()["status"]) == (200, "cancelled")
    finally:
        gateway.stop()
        redis.stop()
