"""uvicorn's httptools protocol with a deadline on a request's line and headers.

uvicorn bounds the idle time between two requests (keep-alive) but not the time a client takes
to send one request's headers: a client that opens a connection and sends nothing, or dribbles a
header byte every few seconds (slowloris), holds a socket and a file descriptor for as long as
it likes. Here a timer starts when the connection opens and when a request begins, and stops
when the request's headers are complete; if it fires first, the client gets a 408 and the
connection is closed. The body is the app's to bound (``BodyLimit`` in
``gateway/progress_gateway/http/middleware.py``), where the answer can be an ordinary problem+json.
"""

from __future__ import annotations

import asyncio
import json
import logging

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HeaderTimeoutProtocol", "header_timeout_protocol"]

logger = logging.getLogger("progress_gateway.http")

_DETAIL = "request headers not received in time"
_BODY = json.dumps(
    {
        "type": "about:blank",
        "title": "Request Timeout",
        "status": 408,
        "detail": _DETAIL,
        "code": "request_timeout",
    }
).encode()
REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: application/problem+json\r\n"
    b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
    b"connection: close\r\n\r\n" + _BODY
)


class HeaderTimeoutProtocol(HttpToolsProtocol):
    """Closes a connection whose request line and headers take over ``header_timeout_s``."""

    header_timeout_s = 10.0
    _header_timer: asyncio.TimerHandle | None = None
    _request_begun = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_header_timer()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._request_begun = True
        if self._header_timer is None:  # a later request on a kept-alive connection
            self._arm_header_timer()

    def on_headers_complete(self) -> None:
        self._cancel_header_timer()
        self._request_begun = False
        super().on_headers_complete()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_header_timer()
        super().connection_lost(exc)

    def _arm_header_timer(self) -> None:
        self._header_timer = self.loop.call_later(self.header_timeout_s, self._headers_timed_out)

    def _cancel_header_timer(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _headers_timed_out(self) -> None:
        self._header_timer = None
        transport = self.transport
        if transport.is_closing():
            return
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "unknown client"
        cycle = self.cycle
        responding = cycle is not None and cycle.response_started and not cycle.response_complete
        logger.info(
            "closing the connection of %s: %s within %.1fs",
            client,
            "request headers not complete" if self._request_begun else "no request",
            self.header_timeout_s,
        )
        # Not in the middle of another response's bytes, and only to a client that began a
        # request: a connection that never sent anything is simply closed.
        if self._request_begun and not responding:
            transport.write(REQUEST_TIMEOUT)
        transport.close()


def header_timeout_protocol(header_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """The protocol class for uvicorn's ``http=``, with this process's header deadline."""
    return type(
        "HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": header_timeout_s}
    )
