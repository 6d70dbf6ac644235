"""Running the app under uvicorn, with a graceful drain on SIGTERM/SIGINT.

uvicorn's own shutdown closes every WebSocket in the same instant (1012), which sends all clients
to the remaining replicas at once. The first signal here instead marks the gateway draining
(``/readyz`` → 503, new WebSockets refused), closes connections with 1001 spread over
``drain_s``, and only then lets uvicorn stop. A second signal stops at once.
"""

from __future__ import annotations

import asyncio
import importlib.util
import logging
from collections.abc import Awaitable
from types import FrameType
from typing import cast

import uvicorn
from starlette.applications import Starlette
from starlette.types import Receive, Scope, Send

from progress_gateway import log_redaction
from progress_gateway.app import create_app
from progress_gateway.gateway import Gateway
from progress_gateway.httpproto import header_timeout_protocol
from progress_gateway.settings import Settings
from progress_gateway.ws import websocket_endpoint
from progress_gateway.wsproto import FrameWriterProtocol, protocol_class

logger = logging.getLogger("progress_gateway.server")


class DrainingServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, app: Starlette, drain_s: float) -> None:
        super().__init__(config)
        self._app = app
        self._drain_s = drain_s
        self._drain_task: asyncio.Task[None] | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        gateway: Gateway | None = getattr(self._app.state, "gateway", None)
        if self._drain_task is not None or gateway is None or self._drain_s <= 0:
            super().handle_exit(sig, frame)
            return
        loop = asyncio.get_event_loop()
        self._drain_task = loop.create_task(self._drain_then_exit(gateway, sig, frame))

    async def _drain_then_exit(self, gateway: Gateway, sig: int, frame: FrameType | None) -> None:
        try:
            await gateway.drain(self._drain_s)
        finally:
            super().handle_exit(sig, frame)


def uvicorn_config(app: Starlette, settings: Settings, log_level: str) -> uvicorn.Config:
    # Deliberate: the sans-I/O websockets implementation honours transport flow control.
    ws = protocol_class(settings.ws_impl)
    if ws is FrameWriterProtocol:
        # None: no server pings (see FrameWriterProtocol.connection_made for dead peers).
        ping_interval = settings.ws_ping_s or None
    else:
        # uvicorn's own protocol sets no TCP keepalive: its pings are what finds dead peers.
        ping_interval = settings.ws_ping_s or settings.ws_heartbeat_s
    return uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        ws=ws,
        # Per-message deflate costs ~50 KiB and CPU per connection for ~300-byte frames.
        ws_per_message_deflate=False,
        ws_max_size=settings.max_frame_bytes,
        ws_ping_interval=ping_interval,
        ws_ping_timeout=settings.ws_heartbeat_s,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "asyncio",
        # httptools with a deadline on request headers (slow clients); the body's is BodyLimit's.
        http=header_timeout_protocol(settings.header_timeout_s),
        lifespan="on",
        interface="asgi3",  # WebSocketFirst returns awaitables: not detectable as ASGI 3
        # Bounded: uvicorn otherwise waits forever for open handlers (SSE, long-poll).
        timeout_graceful_shutdown=max(1, int(settings.drain_s) + 5),
        log_level=log_level,
        access_log=False,
        server_header=False,
    )


class WebSocketFirst:
    """``/ws`` straight to its endpoint: no Starlette wrapper around every frame sent.

    Not a coroutine function: it returns the endpoint's (or the app's) coroutine for uvicorn to
    await, so an open WebSocket holds no suspended frame of this router (300 bytes each).
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def __call__(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            return websocket_endpoint(scope, receive, send)
        return self.app(scope, receive, send)


def serve(settings: Settings, log_level: str = "info") -> None:
    app = create_app(settings)
    config = uvicorn_config(WebSocketFirst(app), settings, log_level)  # type: ignore[arg-type]
    log_redaction.install()  # after the config: it (re)configures uvicorn's loggers
    ws = cast(type, config.ws)
    logger.info(
        "WebSocket protocol: %s.%s (uvicorn %s)", ws.__module__, ws.__name__, uvicorn.__version__
    )
    server = DrainingServer(config, app, settings.drain_s)
    server.run()
