"""Where the store is, read from the same ``GATEWAY_*`` variables the gateway reads.

Workers and the gateway must agree on the store, so both resolve it here. This module stays free
of the server's dependencies (pydantic-settings, JWT): a worker image that only reports progress
imports it without them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from progress_core.errors import BadRequest
from progress_core.store.base import DEFAULT_HISTORY_MAXLEN, DEFAULT_RETENTION_S, StoreOptions

__all__ = [
    "DEFAULT_SQLITE_PATH",
    "REDIS_SCHEMES",
    "StoreConfig",
    "check_key_prefix",
    "check_redis_url",
    "sqlite_url",
]

REDIS_SCHEMES = frozenset({"redis", "rediss", "unix"})
DEFAULT_SQLITE_PATH = Path("progress-gateway.db")
# The prefix starts every Redis key; braces would break the hash tags that keep a job's keys in
# one Redis Cluster slot.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}$")


def check_redis_url(value: str) -> str:
    if urlsplit(value).scheme not in REDIS_SCHEMES:
        raise ValueError(f"must be a {'/'.join(sorted(REDIS_SCHEMES))}:// URL")
    return value


def check_key_prefix(value: str) -> str:
    if not _PREFIX_RE.match(value):
        raise ValueError("must be 1-64 characters of letters, digits, '_', '.', ':' or '-'")
    return value


def sqlite_url(path: Path) -> str:
    """The ``sqlite:///`` URL of an embedded store file, made absolute."""
    return f"sqlite:///{quote(path.expanduser().absolute().as_posix())}"


@dataclass(frozen=True, slots=True)
class StoreConfig:
    """The store's URL and options; ``from_env`` is what ``ProgressClient.from_env`` uses."""

    url: str
    options: StoreOptions

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> StoreConfig:
        """``GATEWAY_REDIS_URL`` (or ``REDIS_URL``), else ``GATEWAY_SQLITE_PATH``; plus
        ``GATEWAY_KEY_PREFIX``, ``GATEWAY_RETENTION_S``, ``GATEWAY_HISTORY_MAXLEN``.

        An empty variable counts as unset, as it does for the gateway. A bad value raises
        ``BadRequest`` naming the variable (never echoing a URL, which may hold a password).
        """
        env = os.environ if environ is None else environ

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value else None

        redis_url = get("GATEWAY_REDIS_URL") or get("REDIS_URL")
        if redis_url is not None:
            try:
                url = check_redis_url(redis_url)
            except ValueError as exc:
                raise BadRequest(f"GATEWAY_REDIS_URL: {exc}") from None
        else:
            url = sqlite_url(Path(get("GATEWAY_SQLITE_PATH") or DEFAULT_SQLITE_PATH))
        prefix = get("GATEWAY_KEY_PREFIX") or StoreOptions().prefix
        try:
            check_key_prefix(prefix)
        except ValueError as exc:
            raise BadRequest(f"GATEWAY_KEY_PREFIX: {exc}") from None
        options = StoreOptions(
            prefix=prefix,
            retention_s=_int(
                get("GATEWAY_RETENTION_S"), "GATEWAY_RETENTION_S", DEFAULT_RETENTION_S, 60
            ),
            history_maxlen=_int(
                get("GATEWAY_HISTORY_MAXLEN"), "GATEWAY_HISTORY_MAXLEN", DEFAULT_HISTORY_MAXLEN, 1
            ),
        )
        return cls(url=url, options=options)


def _int(raw: str | None, name: str, default: int, minimum: int) -> int:
    if raw is None:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise BadRequest(f"{name}: must be an integer, got {raw!r}") from None
    if value < minimum:
        raise BadRequest(f"{name}: must be at least {minimum}, got {value}")
    return value


def worker_heartbeat_s(environ: Mapping[str, str] | None = None, default: float = 10.0) -> float:
    """``GATEWAY_WORKER_HEARTBEAT_S``: how often a worker started by an executor heartbeats."""
    raw = (os.environ if environ is None else environ).get("GATEWAY_WORKER_HEARTBEAT_S")
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        raise BadRequest(f"GATEWAY_WORKER_HEARTBEAT_S: must be a number, got {raw!r}") from None
    if not 0 < value <= 3600:
        raise BadRequest(f"GATEWAY_WORKER_HEARTBEAT_S: must be in (0, 3600], got {value:g}")
    return value
