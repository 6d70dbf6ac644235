"""``create_app(settings)``: the Starlette application of one gateway process.

Settings are passed in, never imported. The store, broker and hub open in the lifespan and are
shared through ``request.state.gateway`` (uvicorn copies lifespan state into every scope).
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import WebSocketRoute
from starlette.types import Receive, Scope, Send

from gateway.broker.base import Broker
from gateway.broker.redis import RedisBroker
from gateway.broker.sqlite import SqliteBroker
from gateway.errors import BadRequest
from gateway.gateway import Gateway
from gateway.http import routes as http_routes
from gateway.http.middleware import middleware
from gateway.http.problems import exception_handlers
from gateway.hub import Hub
from gateway.metrics import Metrics
from gateway.protocol import Limits
from gateway.settings import Settings
from gateway.store import JobStore, open_store
from gateway.store.redis import RedisJobStore
from gateway.store.sqlite import SqliteJobStore
from gateway.ws import websocket_endpoint

logger = logging.getLogger("gateway")


class _WebSocketApp:
    """A plain ASGI app, so Starlette hands ``/ws`` the raw scope, receive and send."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await websocket_endpoint(scope, receive, send)


def make_broker(store: JobStore, settings: Settings, metrics: Metrics) -> Broker:
    if isinstance(store, RedisJobStore):
        assert settings.redis_url is not None
        return RedisBroker(settings.redis_url, store.keys, metrics, probe_s=settings.probe_s)
    if isinstance(store, SqliteJobStore):
        return SqliteBroker(store)
    raise BadRequest(f"no broker for store {type(store).__name__}")


def create_app(settings: Settings) -> Starlette:
    if settings.secret is None:
        raise BadRequest("GATEWAY_SECRET is not set: the gateway cannot verify tokens without it")
    secret = settings.secret.get_secret_value()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        metrics = Metrics()
        store = open_store(settings.store_url(), settings.store_options())
        broker = make_broker(store, settings, metrics)
        hub = Hub(store, broker, metrics, resync_s=settings.resync_s)
        gateway = Gateway(
            settings=settings,
            store=store,
            broker=broker,
            hub=hub,
            metrics=metrics,
            secret=secret,
            limits=Limits(
                max_frame_bytes=settings.max_frame_bytes,
                max_subscriptions=settings.max_subscriptions,
                heartbeat_s=settings.ws_heartbeat_s,
            ),
        )
        await hub.start()
        app.state.gateway = gateway  # for the draining server's signal handler
        logger.info("gateway ready on store %s", type(store).__name__)
        try:
            yield {"gateway": gateway}
        finally:
            if not gateway.draining:
                await gateway.drain(0)
            await hub.aclose()
            await store.aclose()

    return Starlette(
        routes=[*http_routes(), WebSocketRoute("/ws", _WebSocketApp())],
        middleware=middleware(settings),
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
