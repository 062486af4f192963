"""Prometheus metrics of this process, served at /metrics (prometheus_client).

Each process counts its own: in a cluster, scrape every process (each Daphne port), not the
proxy in front. Nothing here names a bin: counts and timings only.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import REGISTRY, Collector

CAPTURES_STORED = Counter("inspector_captures_stored_total", "Captures stored and answered.")
CAPTURES_REFUSED = Counter(
    "inspector_captures_refused_total",
    "Requests to capture URLs answered without storing anything, by reason.",
    ["reason"],
)
GROUP_SIZE = Histogram(
    "inspector_commit_group_captures",
    "Captures per commit group.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)
GROUP_SECONDS = Histogram(
    "inspector_commit_group_seconds",
    "Time to store one commit group (transaction included).",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
PUSHES = Counter("inspector_live_pushes_total", "Live pushes sent (one per bin per group).")
PUSHES_FAILED = Counter("inspector_live_pushes_failed_total", "Live pushes that failed.")
STREAMS = Gauge("inspector_open_streams", "Open live streams of this process.", ["kind"])
STREAM_FILLS = Counter(
    "inspector_stream_fills_total",
    "Times a stream read from the database what pushes skipped or lost.",
)
STREAMS_BEHIND = Counter(
    "inspector_streams_closed_behind_total",
    "Streams closed with 4000 (the client may have missed captures and catches up).",
)
FORWARDS = Counter(
    "inspector_forward_attempts_total", "Auto-forward attempts, by outcome.", ["outcome"]
)


class ForwardBacklog(Collector):
    """Forwards waiting in the outbox, read from the database at scrape time."""

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from .models import Forward

        try:
            waiting = Forward.objects.count()
        except Exception:
            return
        yield GaugeMetricFamily(
            "inspector_forward_backlog", "Forwards waiting in the outbox (all processes).", waiting
        )


REGISTRY.register(ForwardBacklog())
