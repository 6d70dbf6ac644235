from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis


@pytest.fixture
def backend(store_url: str) -> str:
    """``redis`` or ``sqlite``: for the few assertions that differ by design (approximate trim)."""
    return "sqlite" if store_url.startswith("sqlite:") else "redis"


@pytest.fixture
async def redis_client(store_url: str) -> AsyncIterator[aioredis.Redis]:
    """A raw client on the test's Redis, to inspect or corrupt keys behind the store's back."""
    assert store_url.startswith("redis:"), "redis_client is only for Redis-backed tests"
    client = aioredis.Redis.from_url(store_url)
    yield client
    await client.aclose()
