"""``/healthz`` (the process runs), ``/readyz`` (it can serve), ``/metrics`` (Prometheus).

These are the only routes without authentication: they reveal no job data.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from gateway.errors import StoreUnavailable
from gateway.gateway import Gateway


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    problems: list[str] = []
    try:
        await gateway.store.ping()
    except StoreUnavailable as exc:
        problems.append(f"store: {exc.message}")
    if not gateway.broker.connected:
        problems.append("subscriber: not connected")
    if gateway.draining:
        problems.append("draining: shutting down")
    if problems:
        return JSONResponse(
            {"status": "unavailable", "problems": problems},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
