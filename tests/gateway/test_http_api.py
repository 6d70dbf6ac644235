"""The HTTP surface as a whole: routing, request metrics by route template, and the OpenAPI
document matching the app's routes."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
from starlette.routing import Route, WebSocketRoute

from progress_gateway.app import create_app, openapi_for
from progress_gateway.settings import Settings
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import SECRET, GatewayServer
from tests.support.http import api_client, assert_problem, bearer, metric

REQUESTS = "pgw_http_requests_total"


def alice() -> dict[str, str]:
    return bearer(token_for("alice"))


async def test_active_is_a_route_of_its_own_not_a_job_id(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    async with api_client(gateway) as client:
        response = await client.get("/exports/active", headers=alice())
        assert response.status_code == 200
        assert set(response.json()) == {"active", "recent"}
        assert_problem(
            await client.post("/exports/active", headers=alice()), 405, "method_not_allowed"
        )
        assert_problem(await client.get("/nowhere", headers=alice()), 404, "not_found")


async def test_metrics_count_requests_by_route_template_never_by_raw_path(
    gateway: GatewayServer, worker: ProgressClient
) -> None:
    job = worker.create_job(owner="alice", kind="demo")
    missing = str(uuid.uuid4())
    async with api_client(gateway) as client:
        for job_id in (job.id, job.id, missing):
            await client.get(f"/exports/{job_id}", headers=alice())
        await client.get("/exports/active")
        await client.post(f"/exports/{job.id}/cancel", content=b"x" * 300_000, headers=alice())
        await client.get(f"/nowhere/{missing}")
        text = (await client.get("/metrics")).text
        assert job.id not in text and missing not in text
        counted = {
            ("GET", "/exports/{id}", "200"): 2,
            ("GET", "/exports/{id}", "404"): 1,
            ("GET", "/exports/active", "401"): 1,
            ("POST", "/exports/{id}/cancel", "413"): 1,
            ("GET", "unmatched", "404"): 1,
        }
        for (method, route, status), count in counted.items():
            value = await metric(client, REQUESTS, method=method, route=route, status=status)
            assert value == count, (method, route, status)


def settings() -> Settings:
    return Settings(secret=SECRET)


def documented_operations(document: dict[str, Any]) -> set[tuple[str, str]]:
    return {(path, method) for path, item in document["paths"].items() for method in item}


def test_openapi_describes_every_route_of_the_app_and_nothing_else() -> None:
    app = create_app(settings())
    served: set[tuple[str, str]] = set()
    for route in app.routes:
        if isinstance(route, Route):
            served |= {(route.path, m.lower()) for m in route.methods or () if m != "HEAD"}
        elif isinstance(route, WebSocketRoute):
            served.add((route.path, "get"))  # the upgrade request
        else:
            raise AssertionError(f"a route the OpenAPI test does not know: {route!r}")
    document = openapi_for(settings())
    assert documented_operations(document) == served
    assert document["openapi"] == "3.1.0"


def test_every_reference_in_the_openapi_document_resolves() -> None:
    document = openapi_for(settings())
    references: list[str] = []

    def collect(node: object) -> None:
        if isinstance(node, dict):
            if isinstance(node.get("$ref"), str):
                references.append(node["$ref"])
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    collect(document)
    assert len(references) > 20
    for reference in references:
        target: Any = document
        for part in reference.removeprefix("#/").split("/"):
            assert part in target, reference
            target = target[part]
    problem = document["components"]["schemas"]["Problem"]
    assert problem["required"] == ["type", "title", "status", "detail", "code"]
    assert {"store_unavailable", "not_found", "forbidden"} <= set(
        problem["properties"]["code"]["enum"]
    )


def test_openapi_json_is_served_without_a_token(gateway: GatewayServer) -> None:
    response = httpx.get(f"{gateway.url}/openapi.json", timeout=10)
    assert response.status_code == 200
    served = response.json()
    assert documented_operations(served) == documented_operations(openapi_for(settings()))
    statuses = served["paths"]["/exports/{id}"]["get"]["responses"]
    assert set(statuses) == {"200", "304", "400", "401", "403", "404", "429", "503"}
