"""Issue 11 finding 14 (logs) against a real gateway process: what a client puts in a URL cannot
forge a log line, and a token under a percent-encoded or differently cased name is redacted.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
import pytest

from tests.gateway.conftest import token_for
from tests.support.gateway_server import GatewayServer, embedded_gateway
from tests.support.http import assert_problem, bearer
from tests.support.redis_server import wait_until
from tests.support.ws_client import WsClient

FORGED = "2026-12-03 12:00:00,000 ERROR gateway: forged"


@pytest.fixture(scope="module")
def gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayServer]:
    with embedded_gateway(tmp_path_factory.mktemp("logs")) as server:
        yield server


@pytest.fixture
async def client(gateway: GatewayServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=gateway.url, timeout=10) as opened:
        yield opened


def full_log(gateway: GatewayServer) -> str:
    return gateway.log_path.read_text(errors="replace")


async def test_control_characters_in_a_path_are_escaped_in_the_log(
    gateway: GatewayServer, client: httpx.AsyncClient
) -> None:
    marker = "c1marker"
    path = f"/exports/{marker}%0d%0a{FORGED.replace(' ', '%20')}%00%1b%5b2J/history"
    response = await client.get(path, headers=bearer(token_for("alice")))
    assert_problem(response, 400, "bad_request")
    wait_until(lambda: marker in full_log(gateway), 10.0, "the request's log line")
    log = full_log(gateway)
    assert not any(line.startswith(FORGED) for line in log.splitlines())
    assert "\x00" not in log and "\x1b" not in log
    assert f"{marker}\\x0d\\x0a{FORGED}\\x00\\x1b[2J" in log


async def test_a_token_under_an_encoded_or_cased_name_is_redacted(
    gateway: GatewayServer,
) -> None:
    tokens = [token_for(owner) for owner in ("alice", "bob", "carol")]
    for name, token in zip(("%74oken", "Token", "tok%65n"), tokens, strict=True):
        connection = await WsClient.connect(f"{gateway.ws_url}?{name}={token}")
        if name != "Token":  # the server reads only "token", however it is encoded
            await connection.ready()
        await connection.connection.close()
    wait_until(lambda: full_log(gateway).count("WebSocket /ws?") >= 3, 10.0, "handshake lines")
    log = full_log(gateway)
    for token in tokens:
        assert token not in log
        assert token.split(".")[2] not in log  # not even the signature
    assert "/ws?%74oken=[redacted]" in log
