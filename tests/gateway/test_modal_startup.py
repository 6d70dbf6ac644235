"""A gateway configured for Modal starts while Modal cannot be reached: the real ``modal`` SDK
against a closed local port stands for an outage. Local jobs, watching and ``/readyz`` keep
working; Modal kinds answer 503 ``executor_unavailable`` until Modal answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from progress_core.store import StoreOptions
from progress_workers.modal_app import APP_NAME
from tests.gateway.conftest import token_for
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer
from tests.support.http import api_client, assert_problem, bearer
from tests.support.redis_server import free_port


@pytest.fixture
def modal_down(
    store_url: str, store_options: StoreOptions, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[GatewayServer]:
    # Credentials that look valid (so no AuthError) and a Modal server nobody listens on.
    monkeypatch.setenv("MODAL_TOKEN_ID", "ak-0000000000000000000000")
    monkeypatch.setenv("MODAL_TOKEN_SECRET", "as-0000000000000000000000")
    monkeypatch.setenv("MODAL_SERVER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MODAL_CONFIG_PATH", str(tmp_path / "absent.toml"))
    server = GatewayServer(
        store_url,
        tmp_path / "gateway.log",
        key_prefix=store_options.prefix,
        modal_app=APP_NAME,
        modal_timeout_s="2",
    )
    server.start()
    yield server
    server.stop()


async def test_a_modal_outage_at_startup_leaves_the_gateway_serving_degraded(
    modal_down: GatewayServer,
) -> None:
    headers = bearer(token_for("alice"))
    async with api_client(modal_down) as api:
        ready = await api.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "degraded": ["executor modal: unavailable"]}

        refused = await api.post("/exports", json={"kind": "demo_modal"}, headers=headers)
        assert_problem(refused, 503, "executor_unavailable")
        # No job was created for work that could not be attempted.
        listed = await api.get("/exports/active", headers=headers)
        assert listed.json()["active"] == []

        created = await api.post(
            "/exports", json={"kind": "demo", "params": {"steps": 2, "step_s": 0}}, headers=headers
        )
        assert created.status_code == 201, created.text
        job_id = created.json()["id"]

        async def succeeded() -> bool:
            job = await api.get(f"/exports/{job_id}", headers=headers)
            return bool(job.json()["status"] == "succeeded")

        await eventually(succeeded, 30, "the local job to finish while Modal is down")
    assert "modal executor starts degraded" in modal_down.log()
