"""The loop histogram exports what prometheus_client's Histogram would, bucket for bucket."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from progress_gateway.metrics import LoopHistogram

BUCKETS = (0.001, 0.0025, 0.005, 1.0)
VALUES = (0.0, 0.0005, 0.001, 0.0011, 0.0025, 0.004, 0.9, 1.0, 3.0, 20.0)


def samples(registry: CollectorRegistry) -> list[str]:
    lines = generate_latest(registry).decode().splitlines()
    return [line for line in lines if line.startswith("h_seconds_") and "_created" not in line]


def test_loop_histogram_matches_prometheus_histogram() -> None:
    ours, theirs = CollectorRegistry(), CollectorRegistry()
    loop = LoopHistogram("h_seconds", "a histogram", BUCKETS, registry=ours)
    reference = Histogram("h_seconds", "a histogram", buckets=BUCKETS, registry=theirs)
    for value in VALUES:
        loop.observe(value)
        reference.observe(value)
    assert samples(ours) == samples(theirs)
    assert 'h_seconds_bucket{le="0.001"} 3.0' in samples(ours)  # a bound is inclusive
