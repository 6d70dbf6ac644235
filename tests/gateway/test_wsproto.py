"""The WebSocket protocol class under a real uvicorn server: what an open connection keeps."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send
from websockets.asyncio.client import connect

from progress_gateway.wsproto import EXTENSION, FrameWriterProtocol
from tests.support.contract import eventually
from tests.support.redis_server import free_port


@dataclass
class Accepted:
    """What the app saw of the connection it accepted."""

    scope: Scope | None = None
    write_frame: Callable[[bytes], bool] | None = None
    ready: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class Server:
    port: int
    server: uvicorn.Server
    accepted: Accepted

    def protocols(self) -> list[FrameWriterProtocol]:
        connections = self.server.server_state.connections
        return [c for c in connections if isinstance(c, FrameWriterProtocol)]


@pytest.fixture
async def server() -> AsyncIterator[Server]:
    accepted = Accepted()

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        assert (await receive())["type"] == "websocket.connect"
        accepted.write_frame = scope["extensions"][EXTENSION]
        await send({"type": "websocket.accept"})
        accepted.scope = scope
        accepted.ready.set()
        await accepted.release.wait()
        await send({"type": "websocket.close", "code": 1000})

    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=FrameWriterProtocol,
        ws_per_message_deflate=False,
        lifespan="off",
        interface="asgi3",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())

    async def started() -> bool:
        return server.started

    await eventually(started, 10, "uvicorn started")
    try:
        yield Server(port, server, accepted)
    finally:
        accepted.release.set()
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_an_open_connection_keeps_no_instance_dict_handshake_or_token(
    server: Server,
) -> None:
    url = f"ws://127.0.0.1:{server.port}/ws?token=secret-token-value"
    async with connect(url, additional_headers={"Authorization": "Bearer secret"}) as client:
        await asyncio.wait_for(server.accepted.ready.wait(), 10)
        [protocol] = server.protocols()
        # Every attribute uvicorn sets is a slot: no per-instance dict (1.6 KiB otherwise).
        assert vars(protocol) == {}
        # The handshake is dropped; the scope keeps nothing that was in the request.
        assert protocol.request is None
        assert protocol.response is None
        assert server.accepted.scope == {"type": "websocket"}
        # websockets' parser generator keeps the request alive: it holds no token any more.
        parser_request = protocol.conn.parser.gi_frame.f_locals["request"]
        assert "secret" not in parser_request.path
        assert not parser_request.headers

        # The connection still works both ways after all that was dropped.
        write_frame = server.accepted.write_frame
        assert write_frame is not None
        assert write_frame(b"\x81\x05hello")  # one unmasked text frame, as the hub encodes it
        assert await asyncio.wait_for(client.recv(), 10) == "hello"
        server.accepted.release.set()
        await asyncio.wait_for(client.wait_closed(), 10)
        assert client.close_code == 1000
