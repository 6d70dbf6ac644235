from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from progress_core.store import StoreOptions
from progress_gateway.auth import issue_token
from progress_workers import ProgressClient
from tests.support.gateway_server import SECRET, GatewayServer


@pytest.fixture
def gateway(store_url: str, store_options: StoreOptions, tmp_path: Path) -> Iterator[GatewayServer]:
    server = GatewayServer(
        store_url, tmp_path / "gateway.log", key_prefix=store_options.prefix, resync_s="1"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker(store_url: str, store_options: StoreOptions) -> Iterator[ProgressClient]:
    with ProgressClient.from_url(store_url, store_options) as client:
        yield client


def token_for(owner: str, ttl_s: int = 3600) -> str:
    return issue_token(SECRET, owner, ttl_s)
