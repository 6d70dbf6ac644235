"""Job stores: one protocol, a backend per URL scheme."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlsplit

from progress_core.errors import BadRequest
from progress_core.store.base import JobStore, StoreOptions

__all__ = ["JobStore", "StoreOptions", "open_store"]


def _open_redis(url: str, options: StoreOptions) -> JobStore:
    from progress_core.store.redis import RedisJobStore

    return RedisJobStore.from_url(url, options)


def _open_sqlite(url: str, options: StoreOptions) -> JobStore:
    from progress_core.store.sqlite import SqliteJobStore, path_from_url

    return SqliteJobStore(path_from_url(url), options)


BACKENDS: dict[str, Callable[[str, StoreOptions], JobStore]] = {
    "redis": _open_redis,
    "rediss": _open_redis,
    "unix": _open_redis,
    "sqlite": _open_sqlite,
}


def open_store(url: str, options: StoreOptions | None = None) -> JobStore:
    """Open the backend named by the URL's scheme (``redis://``, ``rediss://``, ``sqlite:///``)."""
    scheme = urlsplit(url).scheme
    try:
        opener = BACKENDS[scheme]
    except KeyError:
        raise BadRequest(
            f"unsupported store URL scheme {scheme!r}; use one of {sorted(BACKENDS)}"
        ) from None
    return opener(url, options or StoreOptions())
