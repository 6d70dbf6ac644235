"""Middleware: request metrics, the body size limit, and CORS from the explicit allow-list.

Both of ours are plain ASGI (no ``BaseHTTPMiddleware``), so streaming responses (SSE, long-poll)
pass through untouched and a client disconnect still reaches the endpoint. Order, outermost
first: metrics (so it also counts the 413s and CORS preflights), body limit, CORS.
"""

from __future__ import annotations

import logging
import re

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import PayloadTooLarge
from gateway.gateway import Gateway
from gateway.http.problems import problem
from gateway.settings import Settings

logger = logging.getLogger("gateway.http")

UNMATCHED = "unmatched"
_DIGITS = re.compile(r"[0-9]{1,20}")
# Any other method is counted as "other": a client must not be able to mint label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def middleware(settings: Settings) -> list[Middleware]:
    stack = [
        Middleware(RequestMetrics),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
    ]
    if settings.allowed_origins:
        stack.append(
            Middleware(
                CORSMiddleware,
                allow_origins=settings.allowed_origins,
                allow_methods=["GET", "POST"],
                allow_headers=["Authorization", "Content-Type", "If-None-Match", "Last-Event-ID"],
                expose_headers=["ETag", "Location", "Retry-After"],
                max_age=600,
            )
        )
    return stack


class RequestMetrics:
    """Counts ``pgw_http_requests`` by route template, method and status.

    The template (``/exports/{id}``), never the raw path: one label value per route, however
    many job ids are requested. Counted when the response starts, so a stream shows up at once.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def counting_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start" and not started:
                started = True
                self._count(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counting_send)
        except Exception:
            # ServerErrorMiddleware (outside us) answers 500 on the original send.
            if not started:
                self._count(scope, 500)
            raise

    @staticmethod
    def _count(scope: Scope, status: int) -> None:
        gateway = scope.get("state", {}).get("gateway")
        if not isinstance(gateway, Gateway):
            return
        method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
        gateway.metrics.http_requests.labels(route_template(scope), method, str(status)).inc()


def route_template(scope: Scope) -> str:
    """The path template of the route that handled (or would handle) the request."""
    route = scope.get("route")
    if route is None:
        # Answered before routing (a 413 from the body limit): match the routes ourselves.
        routes: list[BaseRoute] = getattr(scope.get("app"), "routes", [])
        matches = [(candidate, candidate.matches(scope)[0]) for candidate in routes]
        route = next((r for r, m in matches if m is Match.FULL), None) or next(
            (r for r, m in matches if m is Match.PARTIAL), None
        )
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else UNMATCHED


class BodyLimit:
    """Answers 413 to a request body over ``max_bytes``.

    A declared ``Content-Length`` over the limit is refused before the endpoint runs, so nothing
    is written. A chunked body is counted as the endpoint reads it; ``PayloadTooLarge`` from
    ``receive`` then becomes the same 413 problem through the exception handlers.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > self.max_bytes:
            detail = f"request body is {declared} bytes, the limit is {self.max_bytes}"
            logger.info("%s %s: %s", scope["method"], scope["path"], detail)
            await problem(413, detail, PayloadTooLarge.code)(scope, receive, send)
            return
        received = 0
        limit = self.max_bytes

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
            return message

        await self.app(scope, limited_receive, send)
