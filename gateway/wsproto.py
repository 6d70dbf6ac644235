"""uvicorn's sans-I/O WebSocket protocol plus one extension: writing a pre-encoded frame.

A snapshot's server frame (unmasked, so identical for every client) is encoded once by the hub;
``scope["extensions"]["pgw.write_frame"](frame)`` hands those bytes straight to the transport when
the connection is open and not pushing back, and returns False otherwise (the caller then uses
the ordinary ASGI send, which waits for the transport).
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.protocol import State

EXTENSION = "pgw.write_frame"


class FrameWriterProtocol(WebSocketsSansIOProtocol):
    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is not None:
            scope["extensions"][EXTENSION] = self.write_frame

    async def send(self, message: Any) -> None:
        await super().send(message)
        if self.handshake_complete and getattr(self, "response", None) is not None:
            # The handshake is over: do not keep its request and response (and their header
            # objects) for the lifetime of the connection.
            self.request = self.response = None  # type: ignore[assignment]

    def write_frame(self, frame: bytes) -> bool:
        if (
            not self.handshake_complete
            or self.close_sent
            or self.disconnected
            or self.initial_response is not None
            or not self.writable.is_set()
            or self.conn.state is not State.OPEN
            or self.transport.is_closing()
        ):
            return False
        self.transport.write(frame)
        return True
