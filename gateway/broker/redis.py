"""Redis pub/sub broker: one subscriber connection per gateway process.

The subscriber connection (``subscriber.py``) has no read timeout (idle pub/sub is normal) and
no silent reconnect: this module reconnects it with backoff, resubscribes every channel in
batches, and tells the hub to resync, because messages published during the gap are gone. A probe
message published to a private channel every ``probe_s`` detects a connection that is up but no
longer delivers (seen after failovers) and replaces it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence

from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from gateway.broker.base import MalformedMessage, ReconnectHandler, SnapshotHandler
from gateway.broker.subscriber import Subscriber, SubscriberError
from gateway.errors import StoreUnavailable
from gateway.metrics import Metrics
from gateway.redis_client import redis_client
from gateway.store.redis import RedisKeys

logger = logging.getLogger("gateway.broker.redis")

SUBSCRIBE_BATCH = 1000
WATCH_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0


class SilentSubscriber(SubscriberError):
    """The subscriber connection stopped delivering our own probe messages."""


class RedisBroker:
    def __init__(
        self, url: str, keys: RedisKeys, metrics: Metrics, *, probe_s: float = 5.0
    ) -> None:
        self._keys = keys
        self._metrics = metrics
        self._probe_s = probe_s
        self._url = url
        self._publisher = redis_client(url, socket_timeout=2.0, socket_connect_timeout=2.0)
        self._backoff = ExponentialWithJitterBackoff(base=0.1, cap=5.0)
        self._probe_channel = f"{keys.prefix}:gateway:probe:{uuid.uuid4().hex}".encode()
        self._owner_prefix = f"{keys.prefix}:owner:".encode()
        self._wanted: set[bytes] = set()
        self._confirmed: set[bytes] = set()
        self._waiters: dict[bytes, asyncio.Future[None]] = {}
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._subscriber: Subscriber | None = None
        self._connected = False
        self._probe_outstanding: float | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._on_snapshot: SnapshotHandler | None = None
        self._on_created: SnapshotHandler | None = None
        self._on_reconnect: ReconnectHandler | None = None

    @property
    def connected(self) -> bool:
        return self._connected

    async def start(
        self,
        on_snapshot: SnapshotHandler,
        on_created: SnapshotHandler,
        on_reconnect: ReconnectHandler,
    ) -> None:
        self._on_snapshot, self._on_created, self._on_reconnect = (
            on_snapshot,
            on_created,
            on_reconnect,
        )
        self._tasks = [
            asyncio.create_task(self._run(), name="pgw-broker-subscriber"),
            asyncio.create_task(self._send_commands(), name="pgw-broker-commands"),
            asyncio.create_task(self._probe(), name="pgw-broker-probe"),
        ]

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._connected = False
        await self._publisher.aclose()

    # -- watching ------------------------------------------------------------------------------

    async def watch_jobs(self, job_ids: Sequence[str]) -> None:
        await self._watch([self._keys.channel(job_id).encode() for job_id in job_ids])

    def unwatch_jobs(self, job_ids: Sequence[str]) -> None:
        for job_id in job_ids:
            self._unwatch(self._keys.channel(job_id).encode())

    async def watch_owner(self, owner: str) -> None:
        await self._watch([self._keys.owner_channel(owner).encode()])

    def unwatch_owner(self, owner: str) -> None:
        self._unwatch(self._keys.owner_channel(owner).encode())

    async def _watch(self, channels: list[bytes]) -> None:
        waits: list[asyncio.Future[None]] = []
        loop = asyncio.get_running_loop()
        for channel in channels:
            if channel in self._confirmed:
                continue
            waiter = self._waiters.get(channel)
            if waiter is None:
                waiter = self._waiters[channel] = loop.create_future()
            if channel not in self._wanted:
                self._wanted.add(channel)
                self._commands.put_nowait(("subscribe", channel))
            waits.append(waiter)
        if not waits:
            return
        try:
            async with asyncio.timeout(WATCH_TIMEOUT_S):
                await asyncio.gather(*(asyncio.shield(waiter) for waiter in waits))
        except TimeoutError:
            raise StoreUnavailable(
                f"Redis did not confirm the subscription within {WATCH_TIMEOUT_S:.0f}s"
            ) from None

    def _unwatch(self, channel: bytes) -> None:
        if channel in self._wanted:
            self._wanted.discard(channel)
            self._confirmed.discard(channel)
            self._commands.put_nowait(("unsubscribe", channel))

    async def _send_commands(self) -> None:
        """Send queued (un)subscriptions in order, merging runs of one kind into one command."""
        while True:
            kind, channel = await self._commands.get()
            batch = [channel]
            while not self._commands.empty() and len(batch) < SUBSCRIBE_BATCH:
                next_kind, next_channel = self._commands._queue[0]  # type: ignore[attr-defined]
                if next_kind != kind:
                    break
                self._commands.get_nowait()
                batch.append(next_channel)
            subscriber = self._subscriber
            if subscriber is None:
                continue  # the reconnect subscribes everything wanted
            try:
                if kind == "subscribe":
                    subscriber.subscribe(batch)
                else:
                    subscriber.unsubscribe(batch)
                await subscriber.drain()
            except (SubscriberError, OSError) as exc:
                # The reader notices the broken connection and resubscribes what is wanted.
                logger.warning("%s of %d channels failed: %s", kind, len(batch), exc)

    # -- the subscriber connection -------------------------------------------------------------

    async def _run(self) -> None:
        failures = 0
        first = True
        while True:
            subscriber: Subscriber | None = None
            try:
                subscriber = await Subscriber.connect(self._url, within_s=CONNECT_TIMEOUT_S)
                await self._subscribe_all(subscriber)
                failures = 0
                if not first:
                    self._metrics.redis_reconnects.inc()
                    logger.info("Redis subscriber reconnected; resyncing watched jobs")
                first = False
                await self._read(subscriber)
            except (SubscriberError, OSError, TimeoutError) as exc:
                delay = self._lost(failures)
                failures += 1
                logger.warning("Redis subscriber lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                # A bug, not the network. Ending this task would leave the gateway looking ready
                # while it delivers nothing: say it loudly and start over as after a lost
                # connection (the resync after the reconnect repairs what was missed).
                delay = self._lost(failures)
                failures += 1
                logger.exception("Redis subscriber loop failed; reconnecting in %.2fs", delay)
                await asyncio.sleep(delay)
            finally:
                self._subscriber = None
                if subscriber is not None:
                    subscriber.close()
                    await subscriber.wait_closed()

    def _lost(self, failures: int) -> float:
        """Forget the connection's state; the backoff delay before the next attempt."""
        self._connected = False
        self._subscriber = None
        self._confirmed.clear()
        return self._backoff.compute(failures)

    async def _subscribe_all(self, subscriber: Subscriber) -> None:
        # The probe channel goes last: Redis answers in order, so its confirmation means every
        # channel before it is live and a resync from then on misses nothing.
        self._subscriber = subscriber  # from now on queued (un)subscriptions go to it
        self._probe_outstanding = None
        channels = [*self._wanted, self._probe_channel]
        for start in range(0, len(channels), SUBSCRIBE_BATCH):
            subscriber.subscribe(channels[start : start + SUBSCRIBE_BATCH])
            await subscriber.drain()

    async def _read(self, subscriber: Subscriber) -> None:
        on_snapshot, on_created = self._on_snapshot, self._on_created
        assert on_snapshot is not None and on_created is not None
        owner_prefix, probe = self._owner_prefix, self._probe_channel
        while True:
            for reply in await subscriber.read():
                if not isinstance(reply, list) or len(reply) != 3:
                    # An error reply (e.g. a channel the ACL denies): nothing else is expected.
                    logger.error("unexpected reply on the subscriber connection: %r", reply)
                    continue
                kind, channel, data = reply
                if kind == b"message":
                    if channel == probe:
                        self._probe_outstanding = None
                        continue
                    try:
                        if channel.startswith(owner_prefix):
                            on_created(data.decode())
                        else:
                            on_snapshot(data.decode())
                    except (MalformedMessage, UnicodeDecodeError) as exc:
                        self._drop_malformed(channel, data, exc)
                elif kind == b"subscribe":
                    self._confirm(channel)

    def _drop_malformed(self, channel: bytes, data: bytes, exc: ValueError) -> None:
        self._metrics.malformed_messages.inc()
        logger.error(
            "dropped a malformed message on %s: %s (%r)",
            channel.decode(errors="replace"),
            exc,
            data[:120],
        )

    def _confirm(self, channel: bytes) -> None:
        if channel == self._probe_channel:
            if not self._connected:
                self._connected = True
                self._spawn_resync()
            return
        if channel in self._wanted:
            self._confirmed.add(channel)
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _spawn_resync(self) -> None:
        on_reconnect = self._on_reconnect
        assert on_reconnect is not None

        async def resync() -> None:
            try:
                await on_reconnect()
            except StoreUnavailable as exc:
                logger.warning(
                    "resync after reconnect failed; the periodic resync repeats it: %s", exc
                )

        task = asyncio.create_task(resync(), name="pgw-broker-resync")
        self._tasks.append(task)
        task.add_done_callback(self._tasks.remove)

    def _check_probe(self) -> None:
        """Abandon a connection that is up but has not delivered our own probe for 3 rounds."""
        sent, subscriber = self._probe_outstanding, self._subscriber
        if sent is None or subscriber is None or time.monotonic() - sent <= 3 * self._probe_s:
            return
        self._probe_outstanding = None
        subscriber.fail(
            SilentSubscriber(f"no probe message received for {time.monotonic() - sent:.1f}s")
        )

    async def _probe(self) -> None:
        while True:
            await asyncio.sleep(self._probe_s)
            self._check_probe()
            if not self._connected:
                continue
            if self._probe_outstanding is None:
                self._probe_outstanding = time.monotonic()
            try:
                receivers = await self._publisher.publish(self._probe_channel, b"probe")
            except (RedisError, OSError) as exc:
                # Counts as a missed probe: a subscriber whose server is unreachable without a
                # reset (a partition) would otherwise wait on its socket for hours.
                logger.warning("probe publish failed: %s", exc)
                continue
            if receivers == 0:
                logger.warning("probe reached no subscriber: the subscription was lost")
