"""``create_app(settings)``: the Starlette application of one gateway process.

Settings are passed in, never imported. The store, broker and hub open in the lifespan and are
shared through ``request.state.gateway``: the app puts its running ``Gateway`` into every scope's
state, so it also works mounted under a prefix in another app (docs/mounting.md).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from progress_core.errors import BadRequest
from progress_core.store import JobStore, open_store
from progress_core.store.redis import RedisJobStore
from progress_core.store.sqlite import SqliteJobStore
from progress_gateway.auth import TokenVerifier
from progress_gateway.broker.base import Broker
from progress_gateway.broker.redis import RedisBroker
from progress_gateway.broker.sqlite import SqliteBroker
from progress_gateway.executors.base import Executor
from progress_gateway.executors.local import LocalExecutor
from progress_gateway.gateway import Gateway
from progress_gateway.http import routes as http_routes
from progress_gateway.http.middleware import middleware
from progress_gateway.http.openapi import Doc, openapi_document
from progress_gateway.http.problems import exception_handlers, upgrade_required
from progress_gateway.hub import Hub
from progress_gateway.lifecycle import Lifecycle
from progress_gateway.metrics import Metrics
from progress_gateway.protocol import Limits
from progress_gateway.reaper import FileLeadership, Leadership, Reaper, RedisLeadership
from progress_gateway.settings import Settings
from progress_gateway.ws import websocket_endpoint
from progress_workers.kinds import KINDS

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


def child_environment(settings: Settings) -> dict[str, str]:
    """The store settings a local job process needs to write where this gateway reads."""
    environment = {
        "GATEWAY_KEY_PREFIX": settings.key_prefix,
        "GATEWAY_RETENTION_S": str(settings.retention_s),
        "GATEWAY_HISTORY_MAXLEN": str(settings.history_maxlen),
    }
    if settings.redis_url is not None:
        environment["GATEWAY_REDIS_URL"] = settings.redis_url
    else:
        environment["GATEWAY_SQLITE_PATH"] = str(settings.sqlite_path.expanduser().absolute())
    return environment


async def start_executors(settings: Settings, gateway: Gateway) -> dict[str, Executor]:
    async def on_exit(job_id: str, call_id: str, code: int | None) -> None:
        await gateway.lifecycle.on_local_exit(job_id, call_id, code)

    executors: dict[str, Executor] = {
        "local": LocalExecutor(
            child_environment(settings),
            settings.slots_dir(),
            concurrency=settings.local_concurrency,
            cancel_grace_s=settings.cancel_grace_s,
            heartbeat_s=settings.worker_heartbeat_s,
            on_exit=on_exit,
        )
    }
    if settings.modal_app is not None:
        from progress_gateway.executors.modal import ModalExecutor

        executors["modal"] = ModalExecutor(
            settings.modal_app,
            KINDS,
            environment_name=settings.modal_environment,
            timeout_s=settings.modal_timeout_s,
            function_timeout_s=settings.modal_function_timeout_s,
            timeout_margin_s=settings.modal_timeout_margin_s,
            max_attempts=settings.modal_max_attempts,
        )
    for executor in executors.values():
        await executor.start()
    return executors


def make_leadership(store: JobStore, settings: Settings) -> Leadership:
    if isinstance(store, RedisJobStore):
        assert settings.redis_url is not None
        key = f"{settings.key_prefix}:reaper:leader"
        return RedisLeadership(settings.redis_url, key, ttl_s=3 * settings.reap_interval_s)
    return FileLeadership(settings.sqlite_path.expanduser().absolute().with_suffix(".reaper.lock"))


@asynccontextmanager
async def run_gateway(settings: Settings, verifier: TokenVerifier) -> AsyncIterator[Gateway]:
    """Open the store, broker and hub, start the executors and the reaper; close all on exit."""
    metrics = Metrics()
    store = open_store(settings.store_url(), settings.store_options())
    broker = make_broker(store, settings, metrics)
    hub = Hub(
        store,
        broker,
        metrics,
        resync_s=settings.resync_s,
        sweep_s=max(settings.sweep_s, settings.resync_s),
        max_subscriptions=settings.max_subscriptions,
    )
    gateway = Gateway(
        settings=settings,
        store=store,
        broker=broker,
        hub=hub,
        metrics=metrics,
        verifier=verifier,
        limits=Limits(
            max_frame_bytes=settings.max_frame_bytes,
            max_subscriptions=settings.max_subscriptions,
            heartbeat_s=settings.ws_heartbeat_s,
        ),
    )
    executors = await start_executors(settings, gateway)
    gateway.lifecycle = Lifecycle(
        store,
        executors,
        KINDS,
        metrics,
        cancel_timeout_s=3 * settings.cancel_grace_s + 5,
        orphan_after_s=settings.orphan_after_s,
    )
    reaper = Reaper(
        store,
        gateway.lifecycle,
        make_leadership(store, settings),
        stale_after_s=settings.stale_after_s,
        interval_s=settings.reap_interval_s,
        metrics=metrics,
    )
    await verifier.start()  # fetches the JWKS when one is configured; a failure is only logged
    await hub.start()
    reaper.start()
    logger.info("gateway ready: store %s, executors %s", type(store).__name__, sorted(executors))
    try:
        yield gateway
    finally:
        if not gateway.draining:
            await gateway.drain(0)
        await reaper.aclose()
        await gateway.lifecycle.aclose()
        for executor in executors.values():
            await executor.aclose()
        await hub.aclose()
        await store.aclose()
        await verifier.aclose()


class GatewayApp(Starlette):
    """The gateway's ASGI app: served on its own, or mounted under a prefix in another app.

    Served on its own (``progress-gateway serve``), its lifespan runs the gateway. Mounted
    (``Mount("/progress", app=progress)``), the outer app's lifespan enters ``lifespan()``, since
    a mounted app gets no lifespan events. Either way every request finds the running gateway as
    ``scope["state"]["gateway"]`` (``request.state.gateway``): the app sets it from its own
    reference, whatever the outer app keeps in its state.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._verifier = settings.token_verifier()
        self.gateway: Gateway | None = None
        super().__init__(
            routes=[
                *http_routes(demo=settings.demo_page),
                WebSocketRoute("/ws", _WebSocketApp()),
                # /ws over plain HTTP: 426 for GET (and HEAD), 405 for any other method, not 404.
                Route("/ws", upgrade_required, methods=["GET"]),
            ],
            middleware=middleware(settings),
            exception_handlers=exception_handlers(),
            lifespan=_own_lifespan,
        )

    @asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Gateway]:
        """Run the gateway while the block runs: enter it in the lifespan of the outer app."""
        if self.gateway is not None:
            raise RuntimeError("this gateway is already running: enter its lifespan() once")
        async with run_gateway(self.settings, self._verifier) as gateway:
            self.gateway = gateway
            self.state.gateway = gateway  # for the draining server's signal handler
            try:
                yield gateway
            finally:
                self.gateway = None
                del self.state.gateway

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Coroutine[Any, Any, None]:
        # Not a coroutine function: no frame of this method stays suspended per open WebSocket.
        if scope["type"] != "lifespan":
            if self.gateway is None:
                raise RuntimeError(
                    "the progress gateway is not running: mounted in another app, enter "
                    "`progress.lifespan()` in that app's lifespan (docs/mounting.md)"
                )
            # A copy: the outer app's scope and state stay as they were.
            scope = {**scope, "state": {**scope.get("state", {}), "gateway": self.gateway}}
        return super().__call__(scope, receive, send)


@asynccontextmanager
async def _own_lifespan(app: GatewayApp) -> AsyncIterator[dict[str, Any]]:
    """The lifespan when served on its own: the process is the gateway's, so tune its GC too."""
    async with app.lifespan() as gateway:
        # Everything loaded so far lives as long as the process: keep it out of every
        # collection, and collect the young generations less often. A full collection then
        # only scans what connections created, and runs far less often (tail latency).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 100)
        # uvicorn copies this into every scope: server.WebSocketFirst's /ws reads it there.
        yield {"gateway": gateway}


def create_app(settings: Settings) -> GatewayApp:
    """The gateway's app; to mount it in another app, see ``GatewayApp`` and docs/mounting.md."""
    return GatewayApp(settings)


def openapi_for(settings: Settings) -> Doc:
    """The OpenAPI document ``create_app(settings)`` serves at ``/openapi.json``."""
    return openapi_document(settings, create_app(settings).routes)
