"""The running gateway: what every route and connection of one process shares.

Built in the app's lifespan from ``Settings``; routes reach it as ``request.state.gateway``.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from progress_core.codes import CloseCode
from progress_core.store import JobStore
from progress_gateway.auth import Claims, TokenVerifier
from progress_gateway.broker.base import Broker
from progress_gateway.budget import OwnerBudget
from progress_gateway.hub import Hub
from progress_gateway.lifecycle import Lifecycle
from progress_gateway.metrics import Metrics
from progress_gateway.protocol import Limits
from progress_gateway.settings import Settings

logger = logging.getLogger("gateway")

CloseConnection = Callable[[int, str], Awaitable[None]]


@dataclass
class Gateway:
    settings: Settings
    store: JobStore
    broker: Broker
    hub: Hub
    metrics: Metrics
    verifier: TokenVerifier
    limits: Limits
    lifecycle: Lifecycle = field(init=False)
    draining: bool = False
    budget: OwnerBudget = field(init=False)
    closers: dict[int, CloseConnection] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.budget = OwnerBudget(self.settings.max_connections_per_owner, self.metrics)

    def verify(self, token: str) -> Claims:
        return self.verifier.verify(token)

    def origin_allowed(self, origin: str | None, host: str | None) -> bool:
        """Browsers always send Origin on WebSocket upgrades; other clients may omit it.

        A page served by the gateway itself (same host) is always allowed; any other origin
        must be on the explicit allow-list, as for CORS.
        """
        if origin is None:
            return True
        if host is not None and origin in (f"http://{host}", f"https://{host}"):
            return True
        allowed = self.settings.allowed_origins
        return "*" in allowed or origin in allowed

    async def drain(self, window_s: float) -> None:
        """Close every WebSocket with 1001, spread over ``window_s`` so clients do not all
        reconnect to the remaining replicas in the same instant."""
        self.draining = True
        closers = list(self.closers.values())
        if not closers:
            return
        logger.info("draining %d WebSocket connections over %.1fs", len(closers), window_s)

        async def close_later(close: CloseConnection) -> None:
            await asyncio.sleep(random.uniform(0, window_s))
            await close(CloseCode.GOING_AWAY, "server shutting down")

        await asyncio.gather(*(close_later(close) for close in closers), return_exceptions=True)
