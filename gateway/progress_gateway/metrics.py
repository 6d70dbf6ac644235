"""Prometheus metrics of one gateway process, in a registry of its own (one per app)."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Sequence
from itertools import accumulate

from prometheus_client import CollectorRegistry, Counter, Gauge, utils
from prometheus_client.core import HistogramMetricFamily

# How prometheus_client writes a bucket bound (``le``), so the exposition matches its Histogram's.
go_float: Callable[[float], str] = utils.floatToGoString


class LoopHistogram:
    """A histogram observed from the event loop only: one bisect and two additions.

    ``prometheus_client.Histogram.observe`` takes two locks and scans its buckets (~0.8 µs);
    this one runs once per published snapshot on the delivery path. Scrapes run on the same
    loop, so no lock is needed.
    """

    def __init__(
        self, name: str, documentation: str, buckets: Sequence[float], registry: CollectorRegistry
    ) -> None:
        self._name = name
        self._documentation = documentation
        self._bounds = tuple(sorted(buckets))
        self._counts = [0] * (len(self._bounds) + 1)  # the last one: above every bound
        self._sum = 0.0
        registry.register(self)

    def observe(self, value: float) -> None:
        self._counts[bisect_left(self._bounds, value)] += 1
        self._sum += value

    def collect(self) -> Iterator[HistogramMetricFamily]:
        family = HistogramMetricFamily(self._name, self._documentation)
        cumulative = list(accumulate(self._counts))
        limits = [go_float(bound) for bound in self._bounds] + ["+Inf"]
        family.add_metric([], list(zip(limits, cumulative, strict=True)), self._sum)
        yield family

    def describe(self) -> Iterator[HistogramMetricFamily]:
        yield HistogramMetricFamily(self._name, self._documentation)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.connections = Gauge("pgw_connections", "Open WebSocket connections", registry=r)
        self.subscriptions = Gauge(
            "pgw_subscriptions", "Job subscriptions over all connections", registry=r
        )
        self.channels = Gauge("pgw_channels", "Job channels this process listens on", registry=r)
        self.deliveries = Counter(
            "pgw_deliveries", "Snapshots queued to a connection", ["transport"], registry=r
        )
        self.conflated = Counter(
            "pgw_conflated",
            "Pending snapshots replaced by a newer one before they were sent",
            registry=r,
        )
        self.publish_to_send = LoopHistogram(
            "pgw_publish_to_send_seconds",
            "From a snapshot's updated_at to its frame being handed to the socket",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
            registry=r,
        )
        self.redis_reconnects = Counter(
            "pgw_redis_reconnects", "Subscriber connections re-established", registry=r
        )
        self.malformed_messages = Counter(
            "pgw_malformed_messages",
            "Published messages dropped because they are not job snapshots",
            registry=r,
        )
        self.resync_repairs = Counter(
            "pgw_resync_repairs",
            "Snapshots delivered by a resync because pub/sub did not deliver them",
            registry=r,
        )
        self.http_requests = Counter(
            "pgw_http_requests", "HTTP requests", ["route", "method", "status"], registry=r
        )
        self.finalized = Counter(
            "pgw_jobs_finalized",
            "Jobs given a terminal state by the reaper or lazy finalization, by reason",
            ["reason"],
            registry=r,
        )
        self.reaper_leader = Gauge(
            "pgw_reaper_leader", "1 while this process leads the reaper", registry=r
        )
        self.closes = Counter("pgw_ws_closes", "WebSocket closes by code", ["code"], registry=r)
        self.owner_connections = Gauge(
            "pgw_owner_connections",
            "Connections counted against their owner's budget (WebSocket, SSE, long-poll)",
            ["transport"],
            registry=r,
        )
        self.budget_refused = Counter(
            "pgw_owner_budget_refused",
            "Connections refused because their owner was at its limit (4429 / 429)",
            ["transport"],
            registry=r,
        )
