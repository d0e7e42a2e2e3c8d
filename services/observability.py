"""Operational facts read from the database, so every process (web, worker) reports the
same numbers: outbox backlog and age, escalations by state, the last cycle."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import func
from sqlmodel import Session, col, select

from store import tables as t
from store.repository import get_meta


@dataclass
class OpsSnapshot:
    outbox_by_status: dict[str, int] = field(default_factory=dict)
    outbox_oldest_pending_seconds: float = 0.0
    escalations_by_state: dict[str, int] = field(default_factory=dict)
    last_cycle_date: str | None = None
    audit_events: int = 0


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
    return snap
