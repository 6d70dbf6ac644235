"""``create_app(settings)``: the Starlette application of one gateway process.

Settings are passed in, never imported. The store, broker and hub open in the lifespan and are
shared through ``request.state.gateway`` (uvicorn copies lifespan state into every scope).
"""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from progress_core.errors import BadRequest
from progress_core.store import JobStore, open_store
from progress_core.store.redis import RedisJobStore
from progress_core.store.sqlite import SqliteJobStore
from progress_workers.kinds import KINDS
from starlette.applications import Starlette
from starlette.routing import Route, WebSocketRoute
from starlette.types import Receive, Scope, Send

from progress_gateway.broker.base import Broker
from progress_gateway.broker.redis import RedisBroker
from progress_gateway.broker.sqlite import SqliteBroker
from progress_gateway.executors.base import Executor
from progress_gateway.executors.local import LocalExecutor
from progress_gateway.gateway import Gateway
from progress_gateway.http import routes as http_routes
from progress_gateway.http.middleware import middleware
from progress_gateway.http.problems import exception_handlers, upgrade_required
from progress_gateway.hub import Hub
from progress_gateway.lifecycle import Lifecycle
from progress_gateway.metrics import Metrics
from progress_gateway.protocol import Limits
from progress_gateway.reaper import FileLeadership, Leadership, Reaper, RedisLeadership
from progress_gateway.settings import Settings
from progress_gateway.ws import websocket_endpoint

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
            settings.modal_app, KINDS, environment_name=settings.modal_environment
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


def create_app(settings: Settings) -> Starlette:
    if settings.secret is None:
        raise BadRequest("GATEWAY_SECRET is not set: the gateway cannot verify tokens without it")
    secret = settings.secret.get_secret_value()

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
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
            secret=secret,
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
        await hub.start()
        # Everything loaded so far lives as long as the process: keep it out of every
        # collection, and collect the young generations less often. A full collection then
        # only scans what connections created, and runs far less often (tail latency).
        gc.collect()
        gc.freeze()
        gc.set_threshold(20_000, 20, 100)
        reaper.start()
        app.state.gateway = gateway  # for the draining server's signal handler
        logger.info(
            "gateway ready: store %s, executors %s", type(store).__name__, sorted(executors)
        )
        try:
            yield {"gateway": gateway}
        finally:
            if not gateway.draining:
                await gateway.drain(0)
            await reaper.aclose()
            await gateway.lifecycle.aclose()
            for executor in executors.values():
                await executor.aclose()
            await hub.aclose()
            await store.aclose()

    return Starlette(
        routes=[
            *http_routes(demo=settings.demo_page),
            WebSocketRoute("/ws", _WebSocketApp()),
            # /ws over plain HTTP: 426 for GET (and HEAD), 405 for any other method, not 404.
            Route("/ws", upgrade_required, methods=["GET"]),
        ],
        middleware=middleware(settings),
        exception_handlers=exception_handlers(),
        lifespan=lifespan,
    )
