"""The primary's metrics (siteserver.metrics), read at each scrape: its role in the pair, its epoch,
and for every enrolled site the age of its last contact and the backlog it reported."""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client.core import GaugeMetricFamily, Metric

from siteserver.admin.primary import silence_secs
from siteserver.metrics import Metrics
from siteserver.store import Database, catalog
from siteserver.timeutil import utcnow

from .guard import Guard


class PrimaryMetrics:
    def __init__(self, metrics: Metrics, db: Database, guard: Guard) -> None:
        self.db = db
        self.guard = guard
        metrics.gauges(self.gather)

    def gather(self) -> Iterable[Metric]:
        active = self.guard.is_active()
        role = GaugeMetricFamily(
            "siteserver_ha_role", "1 for this member's role in the pair", labels=["role"]
        )
        role.add_metric(["active"], 1.0 if active else 0.0)
        role.add_metric(["passive"], 0.0 if active else 1.0)
        out: list[Metric] = [
            role,
            GaugeMetricFamily(
                "siteserver_ha_epoch", "The epoch (fencing token) this member holds", value=self.guard.epoch
            ),
        ]
        sites = self.db.read_sync(catalog.list_sites, snapshot=False)
        now = utcnow()
        age = GaugeMetricFamily(
            "siteserver_site_last_contact_age_seconds",
            "Seconds since each site was heard from",
            labels=["site_id"],
        )
        backlog = GaugeMetricFamily(
            "siteserver_site_backlog_entries", "The journal backlog each site reported", labels=["site_id"]
        )
        for s in sites:
            if not s["enrolled"]:
                continue
            sid = str(s["site_id"])
            last = s["last_contact_at"]
            silence = silence_secs(last if isinstance(last, str) else None, now)
            age.add_metric([sid], float("inf") if silence is None else silence)
            reported = s["journal_backlog"]
            if isinstance(reported, int):
                backlog.add_metric([sid], reported)
        return [*out, age, backlog]
