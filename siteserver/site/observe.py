"""The site's metrics (siteserver.metrics): probe durations and merge verdicts as they happen, and
at each scrape its mode, endpoints, backlog, oldest pending entry, mode changes and sync lag."""

from __future__ import annotations

from collections.abc import Iterable
from typing import get_args

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from siteserver.domain.merge import MergeStatus
from siteserver.domain.modes import Mode
from siteserver.metrics import Metrics
from siteserver.store import Database, journal, sync_state
from siteserver.timeutil import parse_iso, utcnow
from sync.endpoints import Endpoints
from sync.merge import Verdicts

PROBE_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)


class SiteMetrics:
    def __init__(self, metrics: Metrics, db: Database, endpoints: Endpoints) -> None:
        self.db = db
        self.endpoints = endpoints
        self.probe = metrics.histogram(
            "siteserver_probe_duration_seconds", "Health probes of the primary's endpoints", PROBE_BUCKETS
        )
        self.merged = metrics.counter(
            "siteserver_merge_entries_total", "Journal entries the primary answered, by verdict", ["status"]
        )
        for status in get_args(MergeStatus):  # every verdict shown from the start, at 0
            self.merged.labels(status)
        metrics.gauges(self.gather)

    def verdicts(self, found: Verdicts) -> None:
        for v in found.values():
            self.merged.labels(v.status).inc()

    def gather(self) -> Iterable[Metric]:
        state, pending, oldest, changes = self.db.read_sync(
            lambda conn: (
                sync_state.read(conn),
                journal.pending_count(conn),
                journal.oldest_pending_at(conn),
                sync_state.mode_change_counts(conn),
            ),
            snapshot=False,
        )
        now = utcnow()
        mode = GaugeMetricFamily("siteserver_mode", "1 for the site's current mode", labels=["mode"])
        for m in Mode:
            mode.add_metric([m.value], 1.0 if state.mode == m else 0.0)
        up = GaugeMetricFamily(
            "siteserver_primary_endpoint_up", "1 while the endpoint's active primary answers", labels=["url"]
        )
        for ep in self.endpoints.view().endpoints:
            up.add_metric([ep.url], 1.0 if ep.state == "active" else 0.0)
        moved = CounterMetricFamily(
            "siteserver_mode_changes", "Changes of mode, by the mode changed to", labels=["to"]
        )
        for m in Mode:
            moved.add_metric([m.value], changes.get(m.value, 0))
        age = (now - parse_iso(oldest)).total_seconds() if oldest else 0.0
        lag = (now - parse_iso(state.last_sync_at)).total_seconds() if state.last_sync_at else float("nan")
        return [
            mode,
            up,
            moved,
            GaugeMetricFamily(
                "siteserver_journal_pending_entries",
                "Journal entries the primary has not answered",
                value=pending,
            ),
            GaugeMetricFamily(
                "siteserver_journal_oldest_pending_age_seconds",
                "Age of the oldest pending journal entry (0: none)",
                value=max(0.0, age),
            ),
            GaugeMetricFamily(
                "siteserver_sync_lag_seconds", "Seconds since the mirror last heard from the feed", value=lag
            ),
        ]
