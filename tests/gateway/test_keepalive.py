"""Keepalive. By default the kernel finds dead peers (TCP keepalive) and the server sends no
WebSocket ping; with ``GATEWAY_WS_PING_S`` a quiet peer is pinged and closed if it never answers,
and a talking one is not pinged at all (its own frames prove it alive). Raw sockets, so every
ping frame is visible."""

from __future__ import annotations

import base64
import os
import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from progress_gateway.auth import issue_token
from tests.support.gateway_server import SECRET, GatewayServer, embedded_gateway

HEARTBEAT_S = 1.0


@pytest.fixture
def gateway(tmp_path: Path) -> Iterator[GatewayServer]:
    with embedded_gateway(
        tmp_path, ws_heartbeat_s=str(HEARTBEAT_S), ws_ping_s=str(HEARTBEAT_S)
    ) as server:
        yield server


@pytest.fixture
def quiet_gateway(tmp_path: Path) -> Iterator[GatewayServer]:
    """The defaults, with a short heartbeat: no server pings."""
    with embedded_gateway(tmp_path, ws_heartbeat_s=str(HEARTBEAT_S)) as server:
        yield server


class RawWebSocket:
    """A client that does only what the test says: it answers no ping unless told to."""

    def __init__(self, port: int, token: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(
            (
                f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        head, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head

    def _recv(self) -> bytes:
        data = self.sock.recv(65536)
        if not data:
            raise EOFError
        return data

    def frame(self, deadline: float) -> tuple[int, bytes]:
        """(opcode, payload) of the next server frame; ``TimeoutError`` past ``deadline``."""
        while True:
            if len(self.buffer) >= 2:
                size = self.buffer[1] & 0x7F
                offset = 2
                if size == 126:
                    (size,), offset = struct.unpack("!H", self.buffer[2:4]), 4
                elif size == 127:
                    (size,), offset = struct.unpack("!Q", self.buffer[2:10]), 10
                if len(self.buffer) >= offset + size:
                    opcode = self.buffer[0] & 0x0F
                    payload = self.buffer[offset : offset + size]
                    self.buffer = self.buffer[offset + size :]
                    return opcode, payload
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            self.sock.settimeout(remaining)
            try:
                self.buffer += self._recv()
            except TimeoutError:
                raise TimeoutError from None

    def send(self, opcode: int, payload: bytes) -> None:
        mask = os.urandom(4)
        masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(payload))
        assert len(payload) < 126
        self.sock.sendall(bytes((0x80 | opcode, 0x80 | len(payload))) + mask + masked)

    def close(self) -> None:
        self.sock.close()


def test_a_peer_that_never_answers_is_pinged_then_closed(gateway: GatewayServer) -> None:
    client = RawWebSocket(gateway.port, issue_token(SECRET, "alice", 600))
    opcodes: list[int] = []
    close_payload = b""
    deadline = time.monotonic() + 10 * HEARTBEAT_S
    try:
        while True:
            opcode, payload = client.frame(deadline)
            opcodes.append(opcode)
            if opcode == 0x8:
                close_payload = payload
                break
    finally:
        client.close()
    assert 0x9 in opcodes, opcodes  # it was pinged first
    assert struct.unpack("!H", close_payload[:2])[0] == 1011


def test_a_peer_that_talks_is_not_pinged_and_one_that_answers_stays(
    gateway: GatewayServer,
) -> None:
    talker = RawWebSocket(gateway.port, issue_token(SECRET, "alice", 600))
    answerer = RawWebSocket(gateway.port, issue_token(SECRET, "bob", 600))
    pings_to_talker = 0
    answered = 0
    end = time.monotonic() + 5 * HEARTBEAT_S
    try:
        while (now := time.monotonic()) < end:
            talker.send(0x1, b'{"op":"ping"}')
            # Each client gets its own slice of time to read what arrived.
            with_timeout = [(talker, now + HEARTBEAT_S / 8), (answerer, now + HEARTBEAT_S / 4)]
            for client, until in with_timeout:
                try:
                    while True:
                        opcode, payload = client.frame(until)
                        assert opcode != 0x8, f"closed: {payload!r}"
                        if opcode == 0x9 and client is talker:
                            pings_to_talker += 1
                        if opcode == 0x9 and client is answerer:
                            client.send(0xA, payload)
                            answered += 1
                except TimeoutError:
                    pass
    finally:
        talker.close()
        answerer.close()
    assert pings_to_talker == 0
    assert answered >= 2  # pinged every interval, answered, never closed


def keepalive_timer_active(server_port: int, client_port: int) -> bool:
    """The kernel's view of the gateway's end of the connection: ``tr`` 2 is the keepalive
    timer (``/proc/net/tcp``, Linux)."""
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                local, remote, timer = fields[1], fields[2], fields[5]
                if (
                    int(local.rsplit(":", 1)[1], 16) == server_port
                    and int(remote.rsplit(":", 1)[1], 16) == client_port
                ):
                    return timer.startswith("02:")
    raise AssertionError(f"no socket {server_port} <- {client_port} in /proc/net/tcp")


def test_by_default_the_kernel_probes_a_quiet_peer_and_the_server_never_pings(
    quiet_gateway: GatewayServer,
) -> None:
    client = RawWebSocket(quiet_gateway.port, issue_token(SECRET, "alice", 600))
    client_port = client.sock.getsockname()[1]
    try:
        opcodes = []
        deadline = time.monotonic() + 3 * HEARTBEAT_S
        try:
            while True:
                opcodes.append(client.frame(deadline)[0])
        except TimeoutError:
            pass
        assert 0x9 not in opcodes and 0x8 not in opcodes, opcodes
        assert keepalive_timer_active(quiet_gateway.port, client_port)
    finally:
        client.close()
