"""Prometheus metrics of one role (`GET /metrics`), in a registry of its own per app (two apps in
one test process never mix their numbers).

Counters and histograms are kept as things happen (HTTP requests, probes, merge verdicts); the
gauges of state (mode, backlog, last contact) are read at scrape time from a role's `gather`
callback, so they are never stale. No label ever takes a user, card or txn id."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: from a card login (a few ms) to a long poll of the change feed (tens of seconds)
HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

Gather = Callable[[], Iterable[Metric]]


class _Scrape(Collector):
    def __init__(self, gather: Gather) -> None:
        self.gather = gather

    def collect(self) -> Iterable[Metric]:
        return list(self.gather())


class Metrics:
    """One role's registry: the HTTP histogram (both roles), what the role adds, and its gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.http = Histogram(
            "siteserver_http_request_duration_seconds",
            "HTTP requests by method, route template and status",
            ["method", "route", "status"],
            buckets=HTTP_BUCKETS,
            registry=self.registry,
        )

    def histogram(self, name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
        return Histogram(name, doc, buckets=buckets, registry=self.registry)

    def counter(self, name: str, doc: str, labels: list[str]) -> Counter:
        return Counter(name, doc, labels, registry=self.registry)

    def gauges(self, gather: Gather) -> None:
        """Read the role's state gauges from `gather` at every scrape."""
        self.registry.register(_Scrape(gather))

    def render(self) -> bytes:
        return generate_latest(self.registry)
