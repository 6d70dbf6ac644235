"""Prometheus metrics of one gateway process, in a registry of its own (one per app)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


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
        self.publish_to_send = Histogram(
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
