"""HTTP helpers for the end-to-end tests: a client that checks every answer against the served
OpenAPI document, problem+json assertions, a Server-Sent Events reader and metric reads."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def api_client(gateway: GatewayServer) -> httpx.AsyncClient:
    """An async client whose every response must be one the OpenAPI document lists for its
    route: the document cannot drift from what the server does without a test failing."""
    document: dict[str, Any] = httpx.get(f"{gateway.url}/openapi.json", timeout=10).json()

    async def check(response: httpx.Response) -> None:
        assert_documented(document, response)

    return httpx.AsyncClient(base_url=gateway.url, timeout=10, event_hooks={"response": [check]})


def assert_documented(document: dict[str, Any], response: httpx.Response) -> None:
    path, method = response.request.url.path, response.request.method.lower()
    if method == "head":
        method = "get"  # HEAD is GET without the body (RFC 9110 §9.3.2)
    template = _template(document, path)
    if template is None:
        assert response.status_code == 404, f"{path} is not in the OpenAPI document"
        return
    operations = document["paths"][template]
    assert method in operations or response.status_code == 405, (method, template)
    if method in operations:
        listed = operations[method]["responses"]
        assert str(response.status_code) in listed, (
            f"{method.upper()} {template} answered {response.status_code}, "
            f"the OpenAPI document lists {sorted(listed)}"
        )


def _template(document: dict[str, Any], path: str) -> str | None:
    # A literal path wins over a template (/exports/active over /exports/{id}), like the router.
    if path in document["paths"]:
        return path
    for template in document["paths"]:
        pattern = re.sub(r"\{[^/]+\}", "[^/]+", template)
        if re.fullmatch(pattern, path):
            return str(template)
    return None


def assert_problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    """A problem+json answer with ``status`` and ``code``; returns the body."""
    assert response.status_code == status, (response.status_code, response.text)
    assert response.headers["content-type"] == "application/problem+json"
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code, body
    assert body["type"] == "about:blank"
    assert body["title"] and body["detail"]
    return body


@dataclass(frozen=True)
class SseItem:
    """One event of a stream (``comment`` is ``None``), or one comment line."""

    id: str | None = None
    event: str | None = None
    data: str | None = None
    comment: str | None = None


async def sse_items(response: httpx.Response) -> AsyncIterator[SseItem]:
    """Parse ``text/event-stream`` as it arrives (WHATWG HTML §9.2.6, the parts we use)."""
    fields: dict[str, str] = {}
    async for line in response.aiter_lines():
        if not line:
            if fields:
                yield SseItem(fields.get("id"), fields.get("event"), fields.get("data"))
                fields = {}
            continue
        if line.startswith(":"):
            yield SseItem(comment=line[1:].strip())
            continue
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        fields[name] = f"{fields[name]}\n{value}" if name == "data" and name in fields else value


async def metric(client: httpx.AsyncClient, name: str, **labels: str) -> float:
    """The value of one sample on ``/metrics`` (0 when absent)."""
    response = await client.get("/metrics")
    assert response.status_code == 200
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


async def eventually_metric(
    client: httpx.AsyncClient, name: str, expected: float, within: float = 10.0
) -> None:
    """Poll ``/metrics`` until the sample equals ``expected``."""

    async def reached() -> bool:
        return await metric(client, name) == expected

    await eventually(reached, within, f"{name} == {expected}")
