"""One connection budget per owner, shared by every transport of this gateway process.

A WebSocket, an SSE stream and a waiting long-poll each hold a socket, a hub watch and a task
for as long as they last, so they all count against the same per-owner limit: an owner cannot
get around the WebSocket limit by opening streams instead. The count is per process (replicas do
not share it): with N replicas an owner may hold up to N times the limit.
"""

from __future__ import annotations

import logging

from progress_gateway.metrics import Metrics

__all__ = ["TRANSPORTS", "OwnerBudget"]

logger = logging.getLogger("progress_gateway.budget")

TRANSPORTS = ("ws", "sse", "long_poll")


class OwnerBudget:
    """Counts each owner's open connections; ``acquire`` refuses past ``limit``.

    Every successful ``acquire`` must be paired with exactly one ``release`` on every exit path
    (answer, client gone, drain, error); an owner whose count reaches zero is forgotten.
    """

    def __init__(self, limit: int, metrics: Metrics) -> None:
        self.limit = limit
        self._metrics = metrics
        self._by_owner: dict[str, int] = {}

    def acquire(self, owner: str, transport: str) -> bool:
        held = self._by_owner.get(owner, 0)
        if held >= self.limit:
            self._metrics.budget_refused.labels(transport).inc()
            logger.warning(
                "owner %s is over its %d connections: %s refused", owner, self.limit, transport
            )
            return False
        self._by_owner[owner] = held + 1
        self._metrics.owner_connections.labels(transport).inc()
        return True

    def release(self, owner: str, transport: str) -> None:
        held = self._by_owner.get(owner, 0)
        if held <= 0:
            # A pairing bug, not a client's doing: say so instead of going negative.
            logger.error("owner %s released a %s connection it did not hold", owner, transport)
            return
        if held == 1:
            del self._by_owner[owner]
        else:
            self._by_owner[owner] = held - 1
        self._metrics.owner_connections.labels(transport).dec()

    def held(self, owner: str) -> int:
        return self._by_owner.get(owner, 0)
