"""``/healthz`` (the process runs), ``/readyz`` (it can serve), ``/metrics`` (Prometheus).

These are the only routes without authentication: they reveal no job data, and ``/readyz`` no
store address or driver message either (those go to the log).
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from progress_core.errors import StoreUnavailable
from progress_gateway.executors.base import Degradable
from progress_gateway.gateway import Gateway

logger = logging.getLogger("progress_gateway.http.health")

# A store that has not answered a ping by then is not ready: a readiness probe must not hang on a
# stalled one (orchestrators time probes out after ~1 s).
READY_PING_TIMEOUT_S = 0.5


async def healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


async def readyz(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    problems: list[str] = []
    try:
        async with asyncio.timeout(READY_PING_TIMEOUT_S):
            await gateway.store.ping()
    except StoreUnavailable as exc:
        logger.warning("not ready: %s", exc.message)
        problems.append("store: unavailable")
    except TimeoutError:
        logger.warning(
            "not ready: the store did not answer a ping within %ss", READY_PING_TIMEOUT_S
        )
        problems.append("store: unavailable")
    if not gateway.broker.connected:
        problems.append("subscriber: not connected")
    if gateway.draining:
        problems.append("draining: shutting down")
    # Still ready: jobs of other executors, watching and WebSockets work; the executor's own kinds
    # answer 503 executor_unavailable until its service answers (the reason goes to the log).
    degraded = [
        f"executor {name}: unavailable"
        for name, executor in gateway.lifecycle.executors.items()
        if isinstance(executor, Degradable) and executor.unavailable_reason is not None
    ]
    if problems:
        return JSONResponse(
            {"status": "unavailable", "problems": problems, "degraded": degraded},
            status_code=503,
            headers={"Retry-After": "2"},
        )
    if degraded:
        return JSONResponse({"status": "ready", "degraded": degraded})
    return JSONResponse({"status": "ready"})


async def metrics(request: Request) -> Response:
    gateway: Gateway = request.state.gateway
    return Response(generate_latest(gateway.metrics.registry), media_type=CONTENT_TYPE_LATEST)


routes = [
    Route("/healthz", healthz, methods=["GET"]),
    Route("/readyz", readyz, methods=["GET"]),
    Route("/metrics", metrics, methods=["GET"]),
]
