"""Operational facts read from the database, so every process (web, worker) reports the
same numbers: outbox backlog and age, escalations by state, the last cycle, model usage.

The worker does the work but the web process serves /metrics, so what only the worker can
measure (job durations and outcomes, cards posted, connector retries, Slack 429s) is
persisted by the worker in `meta` (key `worker_metrics`, one JSON document of running
totals) at the end of every job and read back here at scrape time. Totals survive worker
restarts; a job killed mid-run records nothing for that run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from store import tables as t
from store.repository import get_meta, set_meta

WORKER_METRICS_KEY = "worker_metrics"


@dataclass
class JobStats:
    """Running totals of one worker job."""

    runs: dict[str, int] = field(default_factory=dict)  # outcome -> runs
    seconds_total: float = 0.0
    last_seconds: float = 0.0
    last_outcome: str = ""
    last_finished_at: float = 0.0  # Unix time


@dataclass
class WorkerStats:
    """What the worker measured, as persisted (running totals since the first run)."""

    jobs: dict[str, JobStats] = field(default_factory=dict)
    cards_posted: int = 0
    cards_reconciled: int = 0
    retries: dict[str, int] = field(default_factory=dict)  # system -> retries
    rate_limited: dict[str, int] = field(default_factory=dict)  # system -> HTTP 429s

    def to_json(self) -> str:
        return json.dumps({
            "jobs": {name: vars(job) for name, job in sorted(self.jobs.items())},
            "cards_posted": self.cards_posted, "cards_reconciled": self.cards_reconciled,
            "retries": self.retries, "rate_limited": self.rate_limited,
        }, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | None) -> WorkerStats:
        """Parse the stored document; an unreadable one starts the totals again."""
        try:
            data: dict[str, Any] = json.loads(raw) if raw else {}
        except json.JSONDecodeError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        jobs = {}
        for name, job in (data.get("jobs") or {}).items():
            jobs[str(name)] = JobStats(
                runs={str(k): int(v) for k, v in (job.get("runs") or {}).items()},
                seconds_total=float(job.get("seconds_total", 0.0)),
                last_seconds=float(job.get("last_seconds", 0.0)),
                last_outcome=str(job.get("last_outcome", "")),
                last_finished_at=float(job.get("last_finished_at", 0.0)))
        return cls(jobs=jobs, cards_posted=int(data.get("cards_posted", 0)),
                   cards_reconciled=int(data.get("cards_reconciled", 0)),
                   retries={str(k): int(v) for k, v in (data.get("retries") or {}).items()},
                   rate_limited={str(k): int(v)
                                 for k, v in (data.get("rate_limited") or {}).items()})


@dataclass(frozen=True)
class JobRun:
    """One finished job run and the counters it moved (deltas, not totals)."""

    job: str
    outcome: str  # ok | skipped | error
    seconds: float
    finished_at: datetime
    cards_posted: int = 0
    cards_reconciled: int = 0
    retries: dict[str, int] = field(default_factory=dict)
    rate_limited: dict[str, int] = field(default_factory=dict)


def _add(totals: dict[str, int], delta: dict[str, int]) -> None:
    for key, n in delta.items():
        if n:
            totals[key] = totals.get(key, 0) + n


def record_job_run(session: Session, run: JobRun) -> WorkerStats:
    """Add one job run to the persisted totals (the caller serializes calls per process;
    one worker process is active at a time, by the leader lock)."""
    stats = WorkerStats.from_json(get_meta(session, WORKER_METRICS_KEY))
    job = stats.jobs.setdefault(run.job, JobStats())
    job.runs[run.outcome] = job.runs.get(run.outcome, 0) + 1
    job.seconds_total += run.seconds
    job.last_seconds = run.seconds
    job.last_outcome = run.outcome
    job.last_finished_at = run.finished_at.timestamp()
    stats.cards_posted += run.cards_posted
    stats.cards_reconciled += run.cards_reconciled
    _add(stats.retries, run.retries)
    _add(stats.rate_limited, run.rate_limited)
    set_meta(session, WORKER_METRICS_KEY, stats.to_json())
    return stats


@dataclass(frozen=True)
class LlmUsage:
    """Model calls of one purpose and outcome: tokens and cost (USD, exact)."""

    purpose: str
    outcome: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: Decimal


def llm_usage(session: Session) -> list[LlmUsage]:
    """Totals of the `llm_call` table per (purpose, outcome)."""
    rows = session.connection().execute(sa_select(
        col(t.LlmCall.purpose), col(t.LlmCall.outcome), func.count(),
        func.coalesce(func.sum(t.LlmCall.prompt_tokens), 0),
        func.coalesce(func.sum(t.LlmCall.completion_tokens), 0),
        func.coalesce(func.sum(t.LlmCall.cost_micros), 0))
        .group_by(col(t.LlmCall.purpose), col(t.LlmCall.outcome))
        .order_by(col(t.LlmCall.purpose), col(t.LlmCall.outcome)))
    return [LlmUsage(purpose, outcome, int(n), int(p), int(c),
                     Decimal(int(micros)) / Decimal(1_000_000))
            for purpose, outcome, n, p, c, micros in rows]


@dataclass
class OpsSnapshot:
    outbox_by_status: dict[str, int] = field(default_factory=dict)
    outbox_oldest_pending_seconds: float = 0.0
    escalations_by_state: dict[str, int] = field(default_factory=dict)
    last_cycle_date: str | None = None
    audit_events: int = 0
    worker: WorkerStats = field(default_factory=WorkerStats)
    llm: list[LlmUsage] = field(default_factory=list)


def ops_snapshot(session: Session, *, now: datetime) -> OpsSnapshot:
    snap = OpsSnapshot()
    for status, n in session.exec(select(t.Outbox.status, func.count())
                                  .group_by(col(t.Outbox.status))):
        snap.outbox_by_status[status] = int(n)
    oldest = session.exec(select(func.min(t.Outbox.created_at))
                          .where(t.Outbox.status == "pending")).one()
    if oldest is not None:
        snap.outbox_oldest_pending_seconds = max(0.0, (now - oldest).total_seconds())
    for state, n in session.exec(select(t.Escalation.state, func.count())
                                 .group_by(col(t.Escalation.state))):
        snap.escalations_by_state[state] = int(n)
    snap.last_cycle_date = get_meta(session, "last_cycle_date")
    snap.audit_events = int(session.exec(select(func.count()).select_from(t.AuditEvent)).one())
    snap.worker = WorkerStats.from_json(get_meta(session, WORKER_METRICS_KEY))
    snap.llm = llm_usage(session)
    return snap
