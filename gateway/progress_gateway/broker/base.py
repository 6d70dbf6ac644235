"""The broker protocol: delivers published snapshots of watched jobs to the hub."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

SnapshotHandler = Callable[[str], None]


class MalformedMessage(ValueError):
    """A handler got a message that is not a snapshot: the broker drops, logs and counts it.

    Anyone who can publish on the prefix can put anything on a job channel (a buggy worker,
    another application sharing the Redis); one bad message must not stop every delivery.
    """


ReconnectHandler = Callable[[], Awaitable[None]]


class Broker(Protocol):
    @property
    def connected(self) -> bool:
        """True while changes are being received (readiness depends on it)."""
        ...

    async def start(
        self,
        on_snapshot: SnapshotHandler,
        on_created: SnapshotHandler,
        on_reconnect: ReconnectHandler,
    ) -> None:
        """Begin delivering: ``on_snapshot`` for job channels, ``on_created`` for owner notices.

        ``on_reconnect`` runs after every (re)subscription, and after the confirmation of a
        channel whose ``watch_jobs`` returned before it, because messages published meanwhile
        are gone: the hub resyncs from the store (and repeats a resync that failed).
        """
        ...

    async def watch_jobs(self, job_ids: Sequence[str]) -> None:
        """Return once changes of these jobs will be delivered (subscribed, confirmed), or at
        once when the subscriber is disconnected or suspected dead: never wait on it.

        Guarantee: any change committed after this returns reaches ``on_snapshot``, or is
        recovered by an ``on_reconnect`` resync that starts after the channel is confirmed (on
        this connection or the next). The channel stays wanted until ``unwatch_jobs``.
        """
        ...

    def unwatch_jobs(self, job_ids: Sequence[str]) -> None:
        """Stop delivering these jobs; takes effect in order with later ``watch_jobs`` calls."""
        ...

    async def watch_owner(self, owner: str) -> None: ...

    def unwatch_owner(self, owner: str) -> None: ...

    async def aclose(self) -> None: ...
