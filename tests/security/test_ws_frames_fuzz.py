"""Hypothesis-generated WebSocket frames against one real gateway (issue 11: 156 of 2,000 random
frames used to wedge a connection).

Each example sends a batch of frames: protocol-shaped objects with random fields, ids and refs
holding lone surrogates, huge and negative numbers, deep and wide JSON, non-JSON text, binary
frames and, now and then, an oversized one. After each batch the connection must still answer
``ping`` with ``pong``, and every frame it sends must be a JSON object. Or the gateway closed it
with a documented code (1008 after too many bad frames, 1009 for a frame over the limit): then a
fresh connection must answer ``ping``. A close without a frame (1006) or with 1011 fails. Before,
a lone surrogate silenced the connection, and uvicorn reset it on an oversized frame followed by
more input, so the client saw 1006 instead of 1009.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import ExitStack

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.sync.client import ClientConnection, connect
from websockets.uri import parse_uri

from progress_core.codes import CloseCode
from progress_workers import ProgressClient
from tests.gateway.conftest import token_for
from tests.support.gateway_server import GatewayServer, embedded_gateway

OWNER = "fuzzer"
DOCUMENTED_CLOSES = {CloseCode.POLICY, CloseCode.TOO_LARGE}
FRAME_LIMIT = 64 * 1024
# Stands for a frame over the limit (expanded when sent, so a failing example prints short).
OVERSIZED = "<oversized>"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with embedded_gateway(tmp_path_factory.mktemp("fuzz")) as server:
        yield server


@pytest.fixture(scope="module")
def job_ids(gateway: GatewayServer) -> list[str]:
    """Real ids for the frames to name: the fuzzer's own jobs (one finished) and someone else's."""
    with ProgressClient.from_url(gateway.store_url) as worker:
        own = worker.create_job(owner=OWNER, kind="demo").id
        worker.start(own)
        done = worker.create_job(owner=OWNER, kind="demo").id
        worker.succeed(done, {"ok": True})
        foreign = worker.create_job(owner="someone-else", kind="demo").id
    return [own, done, foreign]


class Session:
    """One connection kept across examples; replaced when the gateway closes it as documented."""

    def __init__(self, gateway: GatewayServer, timeout: float = 10.0) -> None:
        self.gateway = gateway
        self.timeout = timeout
        self._connections = ExitStack()
        self.connection = self._open()
        self.closes: list[int] = []

    def _open(self) -> ClientConnection:
        connection = self._connections.enter_context(
            connect(
                f"{self.gateway.ws_url}?token={token_for(OWNER)}",
                compression=None,
                max_size=None,
                open_timeout=10,
            )
        )
        assert json.loads(connection.recv(timeout=10))["op"] == "ready"
        return connection

    def send_batch(self, frames: list[str | bytes]) -> None:
        try:
            for frame in frames:
                if frame == OVERSIZED:
                    frame = '{"op":"ping","pad":"' + "x" * FRAME_LIMIT + '"}'
                self.connection.send(frame)
            self.connection.send('{"op":"ping"}')
            self._until_pong()
        except ConnectionClosed as closed:
            self._closed(closed)
            self.connection = self._open()
            self.connection.send('{"op":"ping"}')
            self._until_pong()

    def _until_pong(self) -> None:
        while True:
            text = self.connection.recv(timeout=self.timeout)
            assert isinstance(text, str), "the gateway sends text frames only"
            frame = json.loads(text)
            assert isinstance(frame, dict) and isinstance(frame.get("op"), str), frame
            if frame == {"op": "pong"}:
                return

    def _closed(self, closed: ConnectionClosed) -> None:
        assert closed.rcvd is not None, "the gateway dropped the connection without a close frame"
        assert closed.rcvd.code in DOCUMENTED_CLOSES, closed.rcvd
        self.closes.append(closed.rcvd.code)

    def close(self) -> None:
        self._connections.close()


# -- strategies ----------------------------------------------------------------------------------

# Any code point, lone surrogates included: json.dumps escapes them, so the frame is valid UTF-8
# but decodes to a string no UTF-8 encoder accepts.
any_text = st.text(st.characters(codec=None, exclude_categories=()), max_size=40)
# Up to CPython's 4,300-digit conversion limit here (json.dumps must write them); the raw-text
# frames below go past it.
huge_int = st.integers(min_value=-(10**60), max_value=10**60) | st.integers(
    min_value=1_000, max_value=4_300
).map(lambda digits: int("9" * digits))
scalar = st.none() | st.booleans() | huge_int | st.floats() | any_text
json_value = st.recursive(
    scalar,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(any_text, children, max_size=5)
    ),
    max_leaves=12,
)


def frames(job_ids: list[str]) -> st.SearchStrategy[str | bytes]:
    job_id = st.sampled_from(job_ids) | st.uuids().map(str) | any_text
    seq = st.none() | huge_int | st.floats() | any_text
    job_entry = job_id | st.fixed_dictionaries({}, optional={"id": job_id, "seq": seq})
    message = st.fixed_dictionaries(
        {},
        optional={
            "op": st.sampled_from(["ping", "subscribe", "unsubscribe", "auth", "update", ""])
            | any_text
            | json_value,
            "ref": any_text | json_value,
            "jobs": st.lists(job_entry, max_size=8) | json_value,
            "scope": st.just("mine") | json_value,
            "token": any_text,
            "extra": json_value,
        },
    ).map(lambda fields: json.dumps(fields, default=str))
    text = st.text(max_size=200)
    deep = st.integers(min_value=1, max_value=20_000).map(lambda n: "[" * n + "]" * n)
    huge_number = st.integers(min_value=300, max_value=60_000).map(lambda n: "9" * n)
    oversized = st.just(OVERSIZED)
    binary = st.binary(max_size=200)
    wrapped = json_value.map(lambda value: json.dumps(value, default=str))
    usual = message | message | message | text | deep | huge_number | wrapped | binary
    # One frame in 40 is over the limit: each one ends the connection (1009).
    return st.integers(0, 39).flatmap(lambda n: oversized if n == 0 else usual)


def test_random_frames_never_wedge_or_crash_a_connection(
    gateway: GatewayServer, job_ids: list[str]
) -> None:
    session = Session(gateway)

    @settings(
        max_examples=200,
        deadline=None,
        derandomize=False,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )
    @given(batch=st.lists(frames(job_ids), min_size=1, max_size=8))
    def batches(batch: list[str | bytes]) -> None:
        session.send_batch(batch)

    try:
        batches()
    finally:
        session.close()
    log = gateway.log_path.read_text(errors="replace")
    assert "Exception in ASGI application" not in log
    assert "with 1011" not in log


def test_the_fuzzer_reaches_a_documented_close(gateway: GatewayServer) -> None:
    """The harness sees closes: eleven bad frames end a connection with 1008, an oversized
    one with 1009."""
    session = Session(gateway)
    try:
        session.send_batch(["not json"] * 11)
        session.send_batch([OVERSIZED])
    finally:
        session.close()
    assert session.closes == [CloseCode.POLICY, CloseCode.TOO_LARGE]


def test_an_oversized_frame_after_the_close_does_not_hold_the_connection_open(
    gateway: GatewayServer,
) -> None:
    """Found by the fuzzer: the gateway closes after the 11th bad frame, and the client's next
    frame, sent before it saw the close, is oversized. The gateway then waited for its 10 s
    close timer to end the stream, while the client (which waits for the server to end it)
    hung. It ends the stream at once now. Sans-I/O client, so the order is exact."""
    client = ClientProtocol(parse_uri(f"{gateway.ws_url}?token={token_for(OWNER)}"))
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as sock:
        client.send_request(client.connect())
        sock.sendall(b"".join(client.data_to_send()))
        while client.state is not State.OPEN:
            client.receive_data(sock.recv(65536))
            client.events_received()
        for text in ["not json"] * 11:
            client.send_text(text.encode())
        sock.sendall(b"".join(client.data_to_send()))
        while client.close_rcvd is None:  # read up to the gateway's close frame, not past it
            client.receive_data(sock.recv(65536))
            client.events_received()
        assert client.close_rcvd.code == CloseCode.POLICY
        oversized = Frame(Opcode.TEXT, b"x" * (FRAME_LIMIT + 1))
        sock.sendall(oversized.serialize(mask=True))
        # The gateway ends the stream within the socket timeout (5 s), not after 10 s.
        while sock.recv(65536):
            pass
