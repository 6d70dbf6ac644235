from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from progress_core.store import JobStore, StoreOptions, open_store
from tests.support.redis_server import RedisServer

BACKENDS = ["redis", "sqlite"]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def store_options() -> StoreOptions:
    # A key prefix per test isolates tests that share the session's Redis.
    return StoreOptions(prefix=f"t{uuid.uuid4().hex[:12]}")


@pytest.fixture(params=BACKENDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        return server.url
    return f"sqlite:///{tmp_path / 'jobs.db'}"


@pytest.fixture
async def store(store_url: str, store_options: StoreOptions) -> AsyncIterator[JobStore]:
    opened = open_store(store_url, store_options)
    yield opened
    await opened.aclose()
