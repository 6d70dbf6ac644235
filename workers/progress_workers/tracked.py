"""``@tracked``: a worker function gets a reporter and needs no lifecycle boilerplate.

The wrapped function is called as ``fn(reporter, *args, **kwargs)``; the wrapper takes the job id
first: ``wrapper(job_id, *args, **kwargs)``. Start, heartbeat, ``succeed(result=<return value>)``,
``failed`` on an exception and ``cancelled`` on a cancellation all happen around it.
"""

from __future__ import annotations

import functools
import inspect
import os
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from progress_workers.client import AsyncProgressClient
from progress_workers.reporter import DEFAULT_HEARTBEAT_S, DEFAULT_MIN_INTERVAL_S, AsyncReporter
from progress_workers.sync import ProgressClient, Reporter

R = TypeVar("R")

_env_clients: dict[int, ProgressClient] = {}
_env_lock = threading.Lock()


def _client_from_env() -> ProgressClient:
    """One blocking client per process, built on first use (never at import)."""
    with _env_lock:
        client = _env_clients.get(os.getpid())
        if client is None:
            client = _env_clients[os.getpid()] = ProgressClient.from_env()
        return client


def tracked(
    *,
    client: ProgressClient | AsyncProgressClient | None = None,
    heartbeat_s: float = DEFAULT_HEARTBEAT_S,
    min_interval_s: float = DEFAULT_MIN_INTERVAL_S,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Wrap a sync ``fn(reporter, …)`` or async ``async fn(reporter, …)`` worker function.

    ``client`` defaults to one built from the environment (``ProgressClient.from_env()``); async
    functions get a fresh ``AsyncProgressClient`` per call on the running loop unless one is given.
    """

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        if inspect.iscoroutinefunction(fn):
            return _wrap_async(fn, client, heartbeat_s, min_interval_s)
        return _wrap_sync(fn, client, heartbeat_s, min_interval_s)

    return decorate


def _wrap_sync(
    fn: Callable[..., R],
    client: ProgressClient | AsyncProgressClient | None,
    heartbeat_s: float,
    min_interval_s: float,
) -> Callable[..., R]:
    if isinstance(client, AsyncProgressClient):
        raise TypeError(f"{fn.__qualname__} is synchronous: pass a ProgressClient")

    @functools.wraps(fn)
    def wrapper(job_id: str, *args: Any, **kwargs: Any) -> R:
        progress = client or _client_from_env()
        reporter: Reporter
        with progress.reporter(
            job_id, heartbeat_s=heartbeat_s, min_interval_s=min_interval_s
        ) as reporter:
            result = fn(reporter, *args, **kwargs)
            if not reporter.finished:
                reporter.succeed(result)
            return result

    return wrapper


def _wrap_async(
    fn: Callable[..., Awaitable[R]],
    client: ProgressClient | AsyncProgressClient | None,
    heartbeat_s: float,
    min_interval_s: float,
) -> Callable[..., Awaitable[R]]:
    if isinstance(client, ProgressClient):
        raise TypeError(f"{fn.__qualname__} is async: pass an AsyncProgressClient")

    @functools.wraps(fn)
    async def wrapper(job_id: str, *args: Any, **kwargs: Any) -> R:
        progress = client or AsyncProgressClient.from_env()
        try:
            reporter: AsyncReporter
            async with progress.reporter(
                job_id, heartbeat_s=heartbeat_s, min_interval_s=min_interval_s
            ) as reporter:
                result = await fn(reporter, *args, **kwargs)
                if not reporter.finished:
                    await reporter.succeed(result)
                return result
        finally:
            if client is None:
                await progress.aclose()

    return wrapper


__all__ = ["tracked"]
