"""Prometheus metrics for /metrics: request counters of this process, plus figures read
from the database at scrape time: outbox backlog and age, escalations by state, what the
worker persisted (job durations and outcomes, cards posted, connector retries, Slack 429s),
model tokens and cost from `llm_call`. Retries and 429s of this (web) process are live
counters labelled process="web"; the worker's are labelled process="worker"."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy.engine import Engine

from bot.background import AfterResponse
from connectors.base import RETRIES
from connectors.slack import RATE_LIMITED
from services.observability import OpsSnapshot, ops_snapshot
from store.engine import session_scope


class LedgerCollector(Collector):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def collect(self) -> Iterator[Any]:
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
        yield from worker_families(snap)
        yield from llm_families(snap)


def worker_families(snap: OpsSnapshot) -> Iterator[Any]:
    """The worker's persisted totals, and this process's live retry counters."""
    w = snap.worker
    runs = CounterMetricFamily("dunning_worker_job_runs", "Worker job runs by outcome",
                               labels=["job", "outcome"])
    seconds = CounterMetricFamily("dunning_worker_job_seconds", "Time spent in worker jobs",
                                  labels=["job"])
    last = GaugeMetricFamily("dunning_worker_job_last_duration_seconds",
                             "Duration of the job's last run", labels=["job"])
    finished = GaugeMetricFamily("dunning_worker_job_last_finished_timestamp_seconds",
                                 "When the job's last run finished (Unix time)", labels=["job"])
    outcome = GaugeMetricFamily("dunning_worker_job_last_outcome",
                                "1 for the outcome of the job's last run",
                                labels=["job", "outcome"])
    for name, job in sorted(w.jobs.items()):
        for result, n in sorted(job.runs.items()):
            runs.add_metric([name, result], n)
        seconds.add_metric([name], job.seconds_total)
        last.add_metric([name], job.last_seconds)
        finished.add_metric([name], job.last_finished_at)
        outcome.add_metric([name, job.last_outcome], 1)
    yield from (runs, seconds, last, finished, outcome)
    yield CounterMetricFamily("dunning_worker_cards_posted", "Cards posted to Slack by the worker",
                              value=w.cards_posted)
    yield CounterMetricFamily("dunning_worker_cards_reconciled",
                              "Cards found already on Slack after an interrupted post",
                              value=w.cards_reconciled)
    retries = CounterMetricFamily("dunning_connector_retries",
                                  "Retries of outside calls (rate limits, outages)",
                                  labels=["process", "system"])
    limited = CounterMetricFamily("dunning_rate_limited", "HTTP 429 answers from outside APIs",
                                  labels=["process", "system"])
    with RETRIES.lock:
        live_retries = dict(RETRIES.counts)
    with RATE_LIMITED.lock:
        live_limited = dict(RATE_LIMITED.counts)
    for process, counts, family in (("worker", w.retries, retries), ("web", live_retries, retries),
                                     ("worker", w.rate_limited, limited),
                                     ("web", live_limited, limited)):
        for system, n in sorted(counts.items()):
            family.add_metric([process, system], n)
    yield retries
    yield limited


def llm_families(snap: OpsSnapshot) -> Iterator[Any]:
    """Model calls, tokens and cost from the `llm_call` table (all processes)."""
    calls = CounterMetricFamily("dunning_llm_calls", "Model calls by purpose and outcome",
                                labels=["purpose", "outcome"])
    tokens = CounterMetricFamily("dunning_llm_tokens", "Model tokens by purpose and kind",
                                 labels=["purpose", "kind"])
    cost = CounterMetricFamily("dunning_llm_cost_usd", "Model spend in USD by purpose",
                               labels=["purpose"])
    by_purpose: dict[str, list[Any]] = {}
    for u in snap.llm:
        calls.add_metric([u.purpose, u.outcome], u.calls)
        totals = by_purpose.setdefault(u.purpose, [0, 0, u.cost_usd * 0])
        totals[0] += u.prompt_tokens
        totals[1] += u.completion_tokens
        totals[2] += u.cost_usd
    for purpose, (prompt, completion, usd) in sorted(by_purpose.items()):
        tokens.add_metric([purpose, "prompt"], prompt)
        tokens.add_metric([purpose, "completion"], completion)
        # Exact Decimal sums; the exposition format itself is a float64.
        cost.add_metric([purpose], float(usd))
    yield from (calls, tokens, cost)


class Metrics:
    """One registry per web app (no process-global state)."""

    def __init__(self, engine: Engine, card_updates: AfterResponse | None = None) -> None:
        self.registry = CollectorRegistry()
        self.registry.register(LedgerCollector(engine))
        self.slack_requests = Counter("dunning_slack_requests", "Requests on /slack/events",
                                      ["status"], registry=self.registry)
        # Slack shows an error when an answer takes over 3 s: watch the tail here.
        self.slack_seconds = Histogram(
            "dunning_slack_request_seconds", "Time to answer a request on /slack/events",
            buckets=(0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0),
            registry=self.registry)
        if card_updates is not None:
            waiting = Gauge("dunning_card_updates_waiting",
                            "Card updates queued after their answers, in this process",
                            registry=self.registry)
            waiting.set_function(lambda: card_updates.backlog)

    def render(self) -> bytes:
        return generate_latest(self.registry)
