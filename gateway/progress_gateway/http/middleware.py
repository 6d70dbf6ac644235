"""Middleware: request metrics, the body's size and time limits, and CORS from the allow-list.

Both of ours are plain ASGI (no ``BaseHTTPMiddleware``), so streaming responses (SSE, long-poll)
pass through untouched and a client disconnect still reaches the endpoint. Order, outermost
first: metrics (so it also counts the 408s, 413s and CORS preflights), body limit, CORS.
"""

from __future__ import annotations

import asyncio
import logging
import re

from starlette.datastructures import Headers
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from progress_core.errors import PayloadTooLarge, RequestTimeout
from progress_gateway.gateway import Gateway
from progress_gateway.http.problems import problem
from progress_gateway.settings import Settings

logger = logging.getLogger("progress_gateway.http")

UNMATCHED = "unmatched"
# Counted for a request whose client left before it was answered (nginx's convention).
CLIENT_CLOSED = 499
_DIGITS = re.compile(r"[0-9]{1,20}")
# After a 413, up to this much more of the refused body is read and dropped (within
# ``_DRAIN_S``) before the answer, so the client reads the 413 instead of a connection reset:
# closing a socket with unread bytes in its receive buffer sends a TCP RST, which can destroy the
# answer before the client has read it. A larger body still gets the answer and a close.
_DRAIN_BYTES = 1024 * 1024
_DRAIN_S = 2.0
# Any other method is counted as "other": a client must not be able to mint label values.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def middleware(settings: Settings) -> list[Middleware]:
    stack = [
        Middleware(RequestMetrics),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes, timeout_s=settings.body_timeout_s),
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
    A client that leaves before its request is read (``ClientDisconnect``) did nothing wrong on
    our side: it is logged at info and counted as 499, not raised into a 500 and a traceback.
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
        except ClientDisconnect:
            state = scope.get("state", {})
            logger.info(
                "%s %s owner=%s job=%s: the client left before sending its whole request",
                scope["method"],
                scope["path"],
                state.get("owner"),
                scope.get("path_params", {}).get("id"),
            )
            if not started:
                self._count(scope, CLIENT_CLOSED)
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
    """Answers 413 to a request body over ``max_bytes``, 408 to one slower than ``timeout_s``.

    A declared ``Content-Length`` over the limit is refused before the endpoint runs, so nothing
    is written. A chunked body is counted as the endpoint reads it; ``PayloadTooLarge`` from
    ``receive`` then becomes the same 413 problem through the exception handlers. The whole body
    must arrive within ``timeout_s`` of the headers (a client dribbling bytes would otherwise
    hold the connection forever): ``RequestTimeout`` from ``receive`` becomes a 408 problem. The
    rest of a refused body is read and dropped, within bounds (``_DRAIN_BYTES``, ``_DRAIN_S``),
    before the 413 is sent; a response sent before the body was read to its end closes the
    connection, so the rest of the body is neither parsed as a next request nor waited for.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, timeout_s: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout_s = timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        declared = headers.get("content-length")
        if declared is not None and _DIGITS.fullmatch(declared) and int(declared) > self.max_bytes:
            detail = f"request body is {declared} bytes, the limit is {self.max_bytes}"
            logger.info("%s %s: %s", scope["method"], scope["path"], detail)
            drained = int(declared) <= self.max_bytes + _DRAIN_BYTES and await _drain(
                receive, int(declared), _DRAIN_S
            )
            answer = problem(413, detail, PayloadTooLarge.code)
            await answer(scope, receive, send if drained else _closing(send))
            return
        if declared in (None, "0") and "transfer-encoding" not in headers:
            await self.app(scope, receive, send)  # no body: nothing to bound
            return
        received = 0
        complete = False
        too_large = False
        limit, timeout_s = self.max_bytes, self.timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s

        async def limited_receive() -> Message:
            nonlocal received, complete, too_large
            if complete:
                return await receive()  # only the disconnect is left to wait for
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise RequestTimeout(
                    f"request body not received within {timeout_s:g} seconds"
                ) from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    too_large = True
                    complete = not message.get("more_body", False)
                    raise PayloadTooLarge(f"request body is over the limit of {limit} bytes")
                complete = not message.get("more_body", False)
            return message

        async def closing_send(message: Message) -> None:
            nonlocal complete
            if message["type"] == "http.response.start" and too_large and not complete:
                complete = await _drain(receive, _DRAIN_BYTES, _DRAIN_S)
            if message["type"] == "http.response.start" and not complete:
                message = _with_close(message)
            await send(message)

        await self.app(scope, limited_receive, closing_send)


async def _drain(receive: Receive, max_bytes: int, timeout_s: float) -> bool:
    """Read and drop the rest of a request body: True once it ended, False if it is larger than
    ``max_bytes``, slower than ``timeout_s`` or the client left."""
    dropped = 0
    try:
        async with asyncio.timeout(timeout_s):
            while dropped <= max_bytes:
                message = await receive()
                if message["type"] != "http.request":
                    return False
                dropped += len(message.get("body", b""))
                if not message.get("more_body", False):
                    return True
    except TimeoutError:
        return False
    return False


def _with_close(start: Message) -> Message:
    return {**start, "headers": [*start.get("headers", []), (b"connection", b"close")]}


def _closing(send: Send) -> Send:
    """``send`` with ``Connection: close`` on the response: the request's body was not read."""

    async def closing_send(message: Message) -> None:
        await send(_with_close(message) if message["type"] == "http.response.start" else message)

    return closing_send
