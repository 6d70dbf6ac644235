"""Redis pub/sub broker: one subscriber connection per gateway process.

The subscriber connection (``subscriber.py``) has no read timeout (idle pub/sub is normal) and
no silent reconnect: this module reconnects it with backoff, resubscribes every channel in
batches, and tells the hub to resync, because messages published during the gap are gone.

Liveness: a probe message is published to a private channel every ``probe_s``. A connection that
has neither echoed it nor delivered anything else for ``2 * probe_s`` (a stalled network, a frozen
server, a proxy that black-holes, a failover gone wrong) is abandoned and replaced; a new one
gets as long to confirm its subscriptions. With the default ``probe_s`` of 1 s a silent
subscriber is replaced, and the hub resynced, within ~3 s: inside the 5 s resync bound.

No subscribe waits on a connection that is away or already suspected (quiet for ``probe_s``
with a probe unanswered): ``watch_jobs`` returns at once and the channel stays wanted. Whichever
connection confirms it next triggers a resync after that confirmation, so a change committed
after ``watch_jobs`` returned is delivered by the channel or by that resync.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Sequence

from redis.backoff import ExponentialWithJitterBackoff
from redis.exceptions import RedisError

from progress_core.errors import StoreUnavailable
from progress_core.redis_client import redis_client
from progress_core.store.redis import RedisKeys
from progress_gateway.broker.base import MalformedMessage, ReconnectHandler, SnapshotHandler
from progress_gateway.broker.subscriber import Subscriber, SubscriberError
from progress_gateway.metrics import Metrics

logger = logging.getLogger("progress_gateway.broker.redis")

SUBSCRIBE_BATCH = 1000
WATCH_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
# Probe periods without a byte from the subscriber (a probe unanswered) before it counts as silent.
SILENT_PROBES = 2
# Probe periods a probe may go unanswered while other messages still arrive (its subscription
# alone was lost): the connection is replaced all the same.
PROBE_LOST_PROBES = 10


class SilentSubscriber(SubscriberError):
    """The subscriber connection stopped delivering our own probe messages."""


class RedisBroker:
    def __init__(
        self, url: str, keys: RedisKeys, metrics: Metrics, *, probe_s: float = 1.0
    ) -> None:
        self._keys = keys
        self._metrics = metrics
        self._probe_s = probe_s
        self._silent_s = SILENT_PROBES * probe_s
        self._url = url
        self._publisher = redis_client(url)
        self._backoff = ExponentialWithJitterBackoff(base=0.1, cap=5.0)
        self._probe_channel = f"{keys.prefix}:gateway:probe:{uuid.uuid4().hex}".encode()
        self._owner_prefix = f"{keys.prefix}:owner:".encode()
        self._wanted: set[bytes] = set()
        self._confirmed: set[bytes] = set()
        self._waiters: dict[bytes, asyncio.Future[None]] = {}
        self._commands: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self._subscriber: Subscriber | None = None
        self._connected = False
        self._was_connected = False
        # When the oldest unanswered probe was sent (or a new connection subscribed), and when
        # the subscriber connection last delivered anything.
        self._probe_sent: float | None = None
        self._heard = 0.0
        # Wanted channels whose watch returned before their subscription was confirmed: their
        # confirmation triggers a resync.
        self._released: set[bytes] = set()
        self._resync_due = False
        self._resync_again = False
        self._resync_task: asyncio.Task[None] | None = None
        self._publish_task: asyncio.Task[None] | None = None
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
        tasks = [*self._tasks, self._resync_task, self._publish_task]
        running = [task for task in tasks if task is not None]
        for task in running:
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)
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
        away = self._away()
        for channel in channels:
            if channel in self._confirmed:
                continue
            if channel not in self._wanted:
                self._wanted.add(channel)
                self._commands.put_nowait(("subscribe", channel))
            if away:
                self._released.add(channel)
                continue
            waiter = self._waiters.get(channel)
            if waiter is None:
                waiter = self._waiters[channel] = loop.create_future()
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
            self._released.discard(channel)
            self._commands.put_nowait(("unsubscribe", channel))

    def _away(self) -> bool:
        """No connection can confirm a subscription soon: none is up, or it is suspected."""
        if not self._connected:
            return True
        sent = self._probe_sent
        return sent is not None and time.monotonic() - max(sent, self._heard) > self._probe_s

    def _release_waiters(self) -> None:
        """Let every pending watch return; the confirmation of its channel brings a resync."""
        waiters, self._waiters = self._waiters, {}
        for channel, waiter in waiters.items():
            if channel in self._wanted:
                self._released.add(channel)
            if not waiter.done():
                waiter.set_result(None)

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
        while True:
            subscriber: Subscriber | None = None
            try:
                subscriber = await Subscriber.connect(self._url, within_s=CONNECT_TIMEOUT_S)
                await self._subscribe_all(subscriber)
                await self._read(subscriber)
            except (SubscriberError, OSError, TimeoutError) as exc:
                # Backoff grows until a connection confirms its subscriptions (a frozen server
                # accepts connections and never answers).
                failures = 0 if self._connected else failures
                delay = self._lost(failures)
                failures += 1
                logger.warning("Redis subscriber lost (%s); reconnecting in %.2fs", exc, delay)
                await asyncio.sleep(delay)
            except Exception:
                # A bug, not the network. Ending this task would leave the gateway looking ready
                # while it delivers nothing: say it loudly and start over as after a lost
                # connection (the resync after the reconnect repairs what was missed).
                failures = 0 if self._connected else failures
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
        self._probe_sent = None
        self._confirmed.clear()
        self._release_waiters()
        return self._backoff.compute(failures)

    async def _subscribe_all(self, subscriber: Subscriber) -> None:
        # The probe channel goes last: Redis answers in order, so its confirmation means every
        # channel before it is live and a resync from then on misses nothing.
        self._subscriber = subscriber  # from now on queued (un)subscriptions go to it
        # The confirmations must start arriving within the silent bound, like a probe's echo.
        self._probe_sent = self._heard = time.monotonic()
        channels = [*self._wanted, self._probe_channel]
        for start in range(0, len(channels), SUBSCRIBE_BATCH):
            subscriber.subscribe(channels[start : start + SUBSCRIBE_BATCH])
            await subscriber.drain()

    async def _read(self, subscriber: Subscriber) -> None:
        on_snapshot, on_created = self._on_snapshot, self._on_created
        assert on_snapshot is not None and on_created is not None
        owner_prefix, probe = self._owner_prefix, self._probe_channel
        while True:
            replies = await subscriber.read()
            self._heard = time.monotonic()
            for reply in replies:
                if not isinstance(reply, list) or len(reply) != 3:
                    # An error reply (e.g. a channel the ACL denies): nothing else is expected.
                    logger.error("unexpected reply on the subscriber connection: %r", reply)
                    continue
                kind, channel, data = reply
                if kind == b"message":
                    if channel == probe:
                        self._probe_sent = None
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
            if self._resync_due and self._connected:
                self._resync_due = False
                self._spawn_resync()

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
            self._probe_sent = None
            if not self._connected:
                self._connected = True
                self._resync_due = True
                if self._was_connected:
                    self._metrics.redis_reconnects.inc()
                    logger.info("Redis subscriber reconnected; resyncing watched jobs")
                self._was_connected = True
            return
        if channel in self._wanted:
            self._confirmed.add(channel)
        if channel in self._released:
            # Its watch returned before this: changes since then are only in the store.
            self._released.discard(channel)
            self._resync_due = True
        waiter = self._waiters.pop(channel, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- resync after (re)subscribing ----------------------------------------------------------

    def _spawn_resync(self) -> None:
        if self._resync_task is not None:
            self._resync_again = True  # the running one may have read the store too early
            return
        self._resync_task = asyncio.create_task(self._resync(), name="pgw-broker-resync")

    async def _resync(self) -> None:
        """Run the hub's resync until one has started after the latest confirmation."""
        on_reconnect = self._on_reconnect
        assert on_reconnect is not None
        try:
            while True:
                self._resync_again = False
                try:
                    await on_reconnect()
                except StoreUnavailable as exc:
                    logger.warning("resync after subscribing failed: %s", exc)
                except Exception:
                    # A bug in the hub: say it loudly; the next confirmation runs it again.
                    logger.exception("resync after subscribing failed")
                if not self._resync_again:
                    return
        finally:
            self._resync_task = None

    # -- liveness probe ------------------------------------------------------------------------

    async def _probe(self) -> None:
        """Publish a probe every ``probe_s``; check the connection at each of its deadlines."""
        next_send = time.monotonic() + self._probe_s
        while True:
            now = time.monotonic()
            wake = next_send
            if self._probe_sent is not None:
                quiet = max(self._probe_sent, self._heard)
                for deadline in (quiet + self._probe_s, quiet + self._silent_s):
                    if deadline > now:
                        wake = min(wake, deadline)
            await asyncio.sleep(wake - now)
            now = time.monotonic()
            self._check_probe(now)
            if now >= next_send:
                next_send = now + self._probe_s
                if self._connected:
                    self._send_probe(now)

    def _check_probe(self, now: float) -> None:
        """Suspect a connection quiet for a probe period, abandon it after ``SILENT_PROBES``."""
        sent, subscriber = self._probe_sent, self._subscriber
        if sent is None or subscriber is None:
            return
        quiet_s = now - max(sent, self._heard)
        if quiet_s > self._probe_s:
            self._release_waiters()  # no subscribe waits on a suspected connection
        if quiet_s >= self._silent_s:
            reason = f"nothing received for {quiet_s:.1f}s with a probe unanswered"
        elif now - sent >= PROBE_LOST_PROBES * self._probe_s:
            reason = f"no probe message received for {now - sent:.1f}s"
        else:
            return
        self._probe_sent = None
        subscriber.fail(SilentSubscriber(reason))

    def _send_probe(self, now: float) -> None:
        if self._probe_sent is None:
            self._probe_sent = now
        if self._publish_task is None:  # else the last publish is still waiting: outstanding
            self._publish_task = asyncio.create_task(
                self._publish_probe(self._subscriber), name="pgw-broker-probe"
            )

    async def _publish_probe(self, subscriber: Subscriber | None) -> None:
        try:
            receivers = await self._publisher.publish(self._probe_channel, b"probe")
        except (RedisError, OSError) as exc:
            # Counts as a missed probe: a subscriber whose server is unreachable without a
            # reset (a partition) would otherwise wait on its socket for hours.
            logger.warning("probe publish failed: %s", exc)
            return
        finally:
            self._publish_task = None
        if receivers == 0 and subscriber is not None and subscriber is self._subscriber:
            # Redis itself says our connection is not subscribed (a failover, a killed client).
            self._probe_sent = None
            subscriber.fail(SilentSubscriber("the probe reached no subscriber"))
