"""The served ``/openapi.json`` is what the gateway does: schemathesis generates requests from the
document (bounded examples per operation) against a real gateway process and checks every answer
against it (status listed, problem ``code`` in its enum, headers, body schema, SSE events, 405 for
an undeclared method); plus the drifts it found, pinned as plain regressions."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema_rs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from progress_gateway.app import openapi_for
from progress_gateway.auth import issue_token
from progress_gateway.settings import Settings
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.http import assert_problem, bearer
from tests.support.redis_server import wait_until

OWNER = "conformance"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    directory = tmp_path_factory.mktemp("conformance")
    server = GatewayServer(
        f"sqlite:///{directory / 'jobs.db'}",
        directory / "gateway.log",
        # Generated creates queue behind one running job; long-polls end within the client's
        # timeout.
        local_concurrency="1",
        max_wait_s=str(gateway_settings().max_wait_s),
        # The demo page too, so every route of the app is generated against.
        demo_page="1",
    )
    server.start()
    yield server
    try:
        cancel_every_job(server)
    finally:
        server.stop()


def cancel_every_job(server: GatewayServer) -> None:
    """Generated creates start real demo jobs: none may outlive the test."""
    headers = bearer(token())
    with httpx.Client(base_url=server.url, timeout=10) as client:
        active = client.get("/exports/active", headers=headers).json()["active"]
        for job in active:
            client.post(f"/exports/{job['id']}/cancel", headers=headers)

        def all_finished() -> bool:
            return not client.get("/exports/active", headers=headers).json()["active"]

        wait_until(all_finished, 30, "every generated job cancelled")


def token() -> str:
    return issue_token(SECRET, OWNER)


@pytest.fixture(scope="module")
def document(gateway: GatewayServer) -> dict[str, Any]:
    served: dict[str, Any] = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()
    return served


def gateway_settings() -> Settings:
    return Settings(secret=SECRET, max_wait_s=2, demo_page=True)


# The document the gateway below serves (checked by test_the_served_document_is_this_one): built
# here so schemathesis can make one test per operation at collection, before any server runs.
schema = schemathesis.openapi.from_dict(openapi_for(gateway_settings()))


@schema.parametrize()
@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
def test_every_answer_is_the_documented_one(case: Any, gateway: GatewayServer) -> None:
    # ``/ws`` takes WebSocket upgrades only; a generated plain GET is refused with 426 by design.
    excluded = [positive_data_acceptance] if case.operation.path == "/ws" else []
    case.call_and_validate(
        base_url=gateway.url, headers=bearer(token()), excluded_checks=excluded, timeout=10
    )


def test_the_served_document_is_this_one(document: dict[str, Any]) -> None:
    assert document == openapi_for(gateway_settings())


def test_ws_without_an_upgrade_is_426_and_other_methods_405(gateway: GatewayServer) -> None:
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        for method in ("GET", "HEAD"):
            response = client.request(method, "/ws")
            assert response.status_code == 426, method
            assert response.headers["upgrade"] == "websocket"
        assert_problem(client.get("/ws"), 426, "upgrade_required")
        for method in ("TRACE", "POST", "DELETE", "PUT"):
            response = client.request(method, "/ws")
            assert_problem(response, 405, "method_not_allowed")
            assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD"}


def test_every_problem_code_is_in_the_enum(document: dict[str, Any]) -> None:
    codes = set(document["components"]["schemas"]["Problem"]["properties"]["code"]["enum"])
    assert {"unprocessable", "executor_error", "executor_unavailable"} <= codes
    assert {"upgrade_required", "method_not_allowed", "too_many_connections"} <= codes
    ws = document["paths"]["/ws"]["get"]["responses"]
    assert {"101", "403", "426"} <= set(ws)


def test_a_create_body_names_a_kind_this_gateway_runs(document: dict[str, Any]) -> None:
    create = {"$ref": "#/components/schemas/CreateExport", "components": document["components"]}
    validator = jsonschema_rs.validator_for(create)
    assert validator.is_valid({"kind": "demo"})
    assert validator.is_valid({"kind": "demo", "params": {"steps": 3, "step_s": 0}})
    for body in (
        {"kind": ""},
        {"kind": "nope"},
        {"kind": "demo_modal"},  # no Modal app configured here
        {"kind": "demo", "params": {"steps": "3"}},
        {"kind": "demo", "params": {"step_s": False}},
        {"kind": "demo", "extra": 1},
    ):
        assert not validator.is_valid(body), body


def test_last_event_id_bounds_match_the_server(
    gateway: GatewayServer, document: dict[str, Any]
) -> None:
    pattern = document["components"]["parameters"]["LastEventId"]["schema"]
    validator = jsonschema_rs.validator_for(pattern)
    assert validator.is_valid("9" * 18)
    assert not validator.is_valid("9" * 19)
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        missing = "00000000-0000-4000-8000-000000000000"
        headers = {**bearer(token()), "Last-Event-ID": "9" * 18}
        # Accepted as a seq (the job does not exist: 404, not 400)...
        assert_problem(client.get(f"/exports/{missing}/events", headers=headers), 404, "not_found")
        headers["Last-Event-ID"] = "9" * 19
        # ...and one digit more is outside both the document and the server.
        response = client.get(f"/exports/{missing}/events", headers=headers)
        assert_problem(response, 400, "bad_request")
