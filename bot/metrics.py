"""Prometheus metrics for /metrics: request counters of this process, plus gauges read
from the database at scrape time (outbox backlog and age, escalations by state)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime

from prometheus_client import CollectorRegistry, Counter, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from services.observability import ops_snapshot
from store.engine import session_scope


class LedgerCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = datetime.now(UTC)
        with session_scope(self.engine) as s:
            snap = ops_snapshot(s, now=now)
        outbox = GaugeMetricFamily("dunning_outbox_items", "Outbox items by status",
                                   labels=["status"])
        for status, n in sorted(snap.outbox_by_status.items()):
            outbox.add_metric([status], n)
        yield outbox
        yield GaugeMetricFamily("dunning_outbox_oldest_pending_seconds",
                                "Age of the oldest pending outbox item",
                                value=snap.outbox_oldest_pending_seconds)
        esc = GaugeMetricFamily("dunning_escalations", "Escalations by state",
                                labels=["state"])
        for state, n in sorted(snap.escalations_by_state.items()):
            esc.add_metric([state], n)
        yield esc
        if snap.last_cycle_date:
            age = (now.date() - date.fromisoformat(snap.last_cycle_date)).days
            yield GaugeMetricFamily("dunning_last_cycle_age_days",
                                    "Days since the last committed cycle", value=age)
        yield GaugeMetricFamily("dunning_audit_events", "Events in the audit log",
                                value=snap.audit_events)


class Metrics:
    """One registry per web app (no process-global state)."""

    def __init__(self, engine: Engine) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(LedgerCollector(engine))
        self.slack_requests = Counter("dunning_slack_requests", "Requests on /slack/events",
                                      ["status"], registry=self.registry)

    def render(self) -> bytes:
        return generate_latest(self.registry)
