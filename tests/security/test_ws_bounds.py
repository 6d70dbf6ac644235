"""Issue 11 findings 6, 9 and 11: what one WebSocket connection may hold, against real gateways.

6. A client that does not read is closed with 1008 "client does not read": when frames wait and
   its socket accepts nothing for ``GATEWAY_SEND_STALL_S``, or when more than
   ``GATEWAY_MAX_PENDING_BYTES`` of updates wait. Before, 40 such clients grew the gateway by
   180 MiB in 20 s and none was closed. The clients here never read: a 4 KiB receive buffer and
   the ``websockets`` library's own buffer of one frame, so the gateway's socket fills at once.
9. A lone surrogate in an id or ``ref`` killed the writer task: no frame was sent again, not even
   a pong. Any writer failure now closes the connection with 1011, logged once.
11. The answers to one frame are not an unread backlog: 300 expired ids get 300 errors and an
   ack, and the connection stays (before, the 257th error closed it with 1008).
"""

from __future__ import annotations

import asyncio
import logging
import re
import socket
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import websockets
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from progress_core.codes import CloseCode
from progress_core.store import StoreOptions
from progress_gateway.metrics import Metrics
from progress_gateway.protocol import Limits
from progress_gateway.ws import Connection
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.contract import eventually
from tests.support.gateway_server import GatewayServer
from tests.support.http import metric
from tests.support.redis_server import RedisServer
from tests.support.ws_client import WsClient

STALL_S = 1.0
# The smallest bound the settings allow: 16 KiB.
SMALL_BOUND = 16 * 1024
MESSAGE = "m" * 1000  # the longest message a job may carry: frames of ~1.3 KB


def start_gateway(redis_server: RedisServer, directory: Path, **settings: str) -> GatewayServer:
    server = GatewayServer(
        redis_server.url,
        directory / "gateway.log",
        key_prefix=f"b{uuid.uuid4().hex[:10]}",
        ws_heartbeat_s="300",  # the server's pings must not be what closes a silent client
        **settings,
    )
    server.start()
    return server


@pytest.fixture(scope="module")
def stall_gateway(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    """Closes a client whose socket takes nothing for 1 s; the byte bound stays at its default."""
    server = start_gateway(redis_server, tmp_path_factory.mktemp("stall"), send_stall_s="1")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def bytes_gateway(
    redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayServer]:
    """Holds at most 16 KiB of frames per connection; the stall bound (60 s) never fires here."""
    server = start_gateway(
        redis_server,
        tmp_path_factory.mktemp("bytes"),
        send_stall_s="60",
        max_pending_bytes=str(SMALL_BOUND),
    )
    yield server
    server.stop()


def worker_for(gateway: GatewayServer) -> ProgressClient:
    return ProgressClient.from_url(
        gateway.store_url, StoreOptions(prefix=gateway.settings["key_prefix"])
    )


async def closes(gateway: GatewayServer, code: int) -> float:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as client:
        return await metric(client, "pgw_ws_closes_total", code=str(code))


async def connect_non_reader(gateway: GatewayServer, owner: str) -> ClientConnection:
    """A real client that reads nothing once ``ready`` has arrived: a 4 KiB socket receive
    buffer, and the library stops reading its socket as soon as one frame waits for ``recv``."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", gateway.port))
    sock.setblocking(False)
    connection = await websockets.connect(
        f"{gateway.ws_url}?token={token_for(owner)}", sock=sock, compression=None, max_queue=1
    )
    assert '"ready"' in str(await connection.recv())
    return connection


async def close_code_once_read(connection: ClientConnection) -> tuple[int, str]:
    """Start reading: everything buffered arrives, then the gateway's close frame."""
    try:
        async with asyncio.timeout(20):
            while True:
                await connection.recv()
    except ConnectionClosed as closed:
        assert closed.rcvd is not None, "the gateway dropped the socket without a close frame"
        return closed.rcvd.code, closed.rcvd.reason


@asynccontextmanager
async def updating(worker: ProgressClient, job_ids: list[str]) -> AsyncIterator[list[int]]:
    """Updates the jobs round-robin, as fast as the store takes them, until the block ends."""
    stop = threading.Event()
    count = [0]

    def run() -> None:
        while not stop.is_set():
            job_id = job_ids[count[0] % len(job_ids)]
            worker.update(job_id, message=f"{count[0]:08d}{MESSAGE}"[:1000])
            count[0] += 1

    thread = threading.Thread(target=run, name="hot-job-updates")
    thread.start()
    try:
        yield count
    finally:
        stop.set()
        await asyncio.to_thread(thread.join, 30)


def running_job(worker: ProgressClient, owner: str) -> str:
    job_id = worker.create_job(owner=owner, kind="bench").id
    worker.start(job_id)
    return job_id


def assert_stalled_for_about(gateway: GatewayServer, stall_s: float) -> None:
    """The gateway logged the close of the last non-reader: its socket took nothing for at
    least ``stall_s``, and for well under twice that (the close is timed from the stall)."""
    idle = re.findall(r"its socket took nothing for ([0-9.]+)s", gateway.log_path.read_text())
    assert idle, "no stall close in the gateway's log"
    assert stall_s <= float(idle[-1]) < 2 * stall_s


# -- finding 6 ----------------------------------------------------------------------------------


async def test_a_client_that_stops_reading_is_closed_within_the_stall_bound(
    stall_gateway: GatewayServer,
) -> None:
    with worker_for(stall_gateway) as worker:
        job_id = running_job(worker, "sloth")
        before = await closes(stall_gateway, CloseCode.POLICY)
        connection = await connect_non_reader(stall_gateway, "sloth")
        await connection.send(f'{{"op":"subscribe","ref":"r","jobs":["{job_id}"]}}')
        async with updating(worker, [job_id]):

            async def closed_by_gateway() -> bool:
                return await closes(stall_gateway, CloseCode.POLICY) > before

            # One hot job conflates to one pending frame: only the stall bound can close it.
            # The kernel takes a few MB first (at a few hundred updates/s on a loaded machine).
            await eventually(closed_by_gateway, 60, "the gateway closing a non-reader")
        assert await close_code_once_read(connection) == (
            CloseCode.POLICY,
            "client does not read",
        )
        assert_stalled_for_about(stall_gateway, STALL_S)


async def test_a_client_that_falls_behind_on_many_jobs_is_closed_at_the_byte_bound(
    bytes_gateway: GatewayServer,
) -> None:
    with worker_for(bytes_gateway) as worker:
        jobs = [running_job(worker, "hoarder") for _ in range(40)]
        before = await closes(bytes_gateway, CloseCode.POLICY)
        connection = await connect_non_reader(bytes_gateway, "hoarder")
        await connection.send(
            '{"op":"subscribe","ref":"r","jobs":[' + ",".join(f'"{j}"' for j in jobs) + "]}"
        )
        async with updating(worker, jobs):

            async def closed_by_gateway() -> bool:
                return await closes(bytes_gateway, CloseCode.POLICY) > before

            # 40 jobs of ~1.3 KB each wait once the socket is full: over 16 KiB, long before
            # the 60 s stall bound.
            await eventually(closed_by_gateway, 20, "the gateway closing at 16 KiB pending")
        assert await close_code_once_read(connection) == (
            CloseCode.POLICY,
            "client does not read",
        )
        assert f"over {SMALL_BOUND} bytes of frames wait" in bytes_gateway.log_path.read_text()


async def test_a_client_that_sends_but_does_not_read_is_closed(
    stall_gateway: GatewayServer,
) -> None:
    """Every frame's answers are exempt in turn, but the gateway reads no further frame while
    earlier answers wait past the bound, and the stall bound closes it."""
    before = await closes(stall_gateway, CloseCode.POLICY)
    connection = await connect_non_reader(stall_gateway, "chatterbox")
    missing = ",".join(f'"{uuid.uuid4()}"' for _ in range(300))
    frame = '{"op":"subscribe","ref":"r","jobs":[' + missing + "]}"

    async def flood() -> None:
        while True:
            await connection.send(frame)
            # Once the gateway closes, it reads and drops everything, so a send no longer waits:
            # without a yield the flood starves the poll below, which then sees the close only
            # after the gateway's 10 s close timeout has aborted the socket (a reset, no frame).
            await asyncio.sleep(0)

    flooding = asyncio.create_task(flood())
    try:

        async def closed_by_gateway() -> bool:
            return await closes(stall_gateway, CloseCode.POLICY) > before

        await eventually(closed_by_gateway, 60, "the gateway closing a flooder")
    finally:
        flooding.cancel()
        await asyncio.gather(flooding, return_exceptions=True)
    code, _ = await close_code_once_read(connection)
    assert code == CloseCode.POLICY
    assert_stalled_for_about(stall_gateway, STALL_S)


# -- finding 11 ---------------------------------------------------------------------------------


async def test_restoring_300_expired_ids_gets_300_errors_and_stays_connected(
    bytes_gateway: GatewayServer,
) -> None:
    """300 ``not_found`` errors are ~45 KB, far over the 16 KiB bound: answers to one frame."""
    client = await WsClient.connect(bytes_gateway.ws_url, token_for("returning"))
    await client.ready()
    expired = [str(uuid.uuid4()) for _ in range(300)]
    frames = await client.subscribe("restore", [{"id": job_id, "seq": 7} for job_id in expired])
    errors = [frame for frame in frames if frame["op"] == "error"]
    assert sorted(frame["job_id"] for frame in errors) == sorted(expired)
    assert {frame["code"] for frame in errors} == {"not_found"}
    # A client that sends its next frames without waiting for the answers is answered too.
    await client.send({"op": "subscribe", "ref": "again", "jobs": expired})
    await client.send({"op": "ping"})
    await client.recv_until(lambda frame: frame["op"] == "ack" and frame["ref"] == "again")
    assert await client.recv() == {"op": "pong"}
    await client.close()


# -- finding 9 ----------------------------------------------------------------------------------


async def test_a_lone_surrogate_in_an_id_or_ref_does_not_silence_the_connection(
    bytes_gateway: GatewayServer,
) -> None:
    with worker_for(bytes_gateway) as worker:
        job_id = running_job(worker, "surrogate")
        client = await WsClient.connect(bytes_gateway.ws_url, token_for("surrogate"))
        await client.ready()
        # Refused as bad frames by the decoder now; before, echoed back and fatal to the writer.
        await client.send('{"op":"subscribe","ref":"\\ud800","jobs":["\\ud800",{"id":"\\udfff"}]}')
        await client.send('{"op":"ping","ref":"\\ud800"}')
        await client.send({"op": "ping"})
        await client.recv_until(lambda frame: frame["op"] == "pong")
        assert [frame["op"] for frame in client.frames[1:]] == ["error", "error", "pong"]
        await client.subscribe("real", [job_id])
        worker.succeed(job_id, {"done": True})
        final = await client.wait_for_job(job_id, lambda job: job["status"] == "succeeded")
        assert final["result"] == {"done": True}
        await client.close()


class Sent:
    """The ASGI ``send`` of a connection whose transport cannot encode a frame."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    async def __call__(self, message: Any) -> None:
        if message["type"] == "websocket.send":
            message["text"].encode("utf-8")  # uvicorn's encoding: a lone surrogate raises
            self.texts.append(message["text"])


async def test_a_writer_that_fails_closes_the_connection_with_1011_and_logs_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever breaks the writer (here a frame that has no UTF-8 form, which no path produces
    any more), the connection closes at once instead of staying open and silent."""
    settings = SimpleNamespace(max_pending_bytes=SMALL_BOUND, send_stall_s=60.0)
    gateway: Any = SimpleNamespace(
        settings=settings, limits=Limits(), verify=None, metrics=Metrics()
    )
    sent, closed = Sent(), asyncio.Event()
    codes: list[tuple[int, str]] = []

    def close_now(code: int, reason: str) -> None:
        codes.append((code, reason))
        closed.set()

    async def receive() -> Any:
        await asyncio.Event().wait()

    connection = Connection(gateway, receive, sent, close_now=close_now)
    connection.owner = "mallory"
    with caplog.at_level(logging.ERROR, logger="progress_gateway.ws"):
        connection.outbox.offer_control('{"op":"pong"}')
        connection.outbox.offer_control('{"op":"error","ref":"\ud800"}')
        connection.outbox.offer_control('{"op":"pong"}')
        async with asyncio.timeout(5):
            await closed.wait()
    assert codes == [(CloseCode.INTERNAL_ERROR, "internal error")]
    assert sent.texts == ['{"op":"pong"}']
    errors = [record for record in caplog.records if record.name == "progress_gateway.ws"]
    assert len(errors) == 1 and "mallory" in errors[0].getMessage()
    assert errors[0].exc_info is not None
