"""The daily plan (a dry run) and the cycle that commits it; runs are forward-only.

gather: the invoices whose next_action_on <= today (an index read) plus the few under an
active hold; decide: `escalation.decide` per invoice; apply (cycle only): one Escalation
row per (invoice, step), the broken promises, fresh next-action dates, audit events.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from dunning.calendar import local_date
from dunning.escalation import decide, next_action_on
from dunning.model import Action, Hold, InvoiceState, Kind, PromiseStatus
from dunning.money import format_money
from dunning.policy import Policy
from services.common import Actor, ServiceError, audit, chunks, ensure_policy_current
from services.sync import queue_crm_tasks
from store import tables as t
from store.repository import due_invoice_ids, get_meta, held_candidate_ids, load_states, set_meta

LAST_CYCLE_KEY = "last_cycle_date"


class CycleOrderError(ServiceError):
    """Cycles run forward only: a date before the last committed cycle is refused."""


@dataclass(frozen=True)
class PlannedAction:
    action: Action
    state: InvoiceState
    promise_broken: bool = False


@dataclass(frozen=True)
class PlannedHold:
    hold: Hold
    state: InvoiceState


@dataclass(frozen=True)
class Plan:
    date: date
    actions: list[PlannedAction]
    holds: list[PlannedHold]


def build_plan(session: Session, policy: Policy, today: date, *,
               now: datetime | None = None) -> Plan:
    """The day's actions and holds.

    With `now`, each invoice is decided on its customer's own date at that moment (a
    Sydney customer is already on tomorrow when New York runs its morning cycle); without
    it, `today` is every customer's date (a dry run of a given day).
    """
    ensure_policy_current(session, policy)
    horizon = today + timedelta(days=1) if now is not None else today
    ids = sorted(set(due_invoice_ids(session, horizon))
                 | set(held_candidate_ids(session, today)))
    actions: list[PlannedAction] = []
    holds: list[PlannedHold] = []
    for batch in chunks(ids):
        for state in load_states(session, batch).values():
            day = local_date(now, state.customer.timezone) if now is not None else today
            decision = decide(state, policy, day)
            actions.extend(PlannedAction(a, state, decision.promise_broken)
                           for a in decision.actions)
            holds.extend(PlannedHold(h, state) for h in decision.holds)
    actions.sort(key=lambda p: (p.action.owner or "~", -p.action.lane.rank,
                                -p.action.days_past_due, p.action.invoice_id))
    holds.sort(key=lambda p: (p.hold.reason.value, p.hold.invoice_id))
    return Plan(today, actions, holds)


def action_json(p: PlannedAction) -> dict[str, Any]:
    a, s = p.action, p.state
    return {
        "invoice_id": s.invoice_id,
        "invoice_number": s.number,
        "customer_id": s.customer.customer_id,
        "customer_name": s.customer.name,
        "days_past_due": a.days_past_due,
        "lane": a.lane.value,
        "step": a.step,
        "kind": a.kind.value,
        "tone": a.tone.value if a.tone else None,
        "approval": a.approval.value if a.approval else None,
        "owner": a.owner,
        "amount_due": str(s.amount_due),
        "currency": s.currency,
        "reasons": list(a.reasons),
    }


def plan_json(plan: Plan) -> dict[str, Any]:
    """The plan's JSON contract (issue 2): date, actions, held."""
    return {
        "date": plan.date.isoformat(),
        "actions": [action_json(p) for p in plan.actions],
        "held": [{"invoice_id": h.hold.invoice_id, "reason": h.hold.reason.value}
                 for h in plan.holds],
    }


@dataclass
class CycleResult:
    date: date
    created: list[PlannedAction] = field(default_factory=list)
    already_done: int = 0
    holds: list[PlannedHold] = field(default_factory=list)
    promises_broken: list[str] = field(default_factory=list)


def run_cycle(session: Session, policy: Policy, today: date, *, actor: Actor,
              now: datetime, customer_dates: bool = False) -> CycleResult:
    """Commit the day's plan: each action becomes one Escalation row, exactly once.

    `customer_dates`: decide each invoice on its customer's own date at `now` (the
    scheduled cycle); otherwise on `today` (a cycle for a given date).
    """
    _claim_cycle(session, today)
    plan = build_plan(session, policy, today, now=now if customer_dates else None)
    result = CycleResult(today, holds=plan.holds)
    crm_ids: list[int] = []
    for p in plan.actions:
        a, s = p.action, p.state
        row = t.Escalation(
            invoice_id=a.invoice_id, step=a.step, kind=a.kind.value,
            tone=a.tone.value if a.tone else None,
            approval=a.approval.value if a.approval else None, channel=a.channel.value,
            lane=a.lane.value, days_past_due=a.days_past_due, scheduled_on=a.scheduled_on,
            reasons=json.dumps(list(a.reasons)), owner=a.owner, state="proposed",
            plan_date=today, created_at=now,
        )
        try:
            with session.begin_nested():
                session.add(row)
                session.flush()
        except IntegrityError:
            result.already_done += 1  # another cycle created it first: unique (invoice, step)
            continue
        audit(session, actor=actor, action="escalation.created", entity="escalation",
              entity_id=str(row.id), at=now, after=action_json(p))
        new_state = replace(s, steps_done=s.steps_done | {a.step})
        if p.promise_broken and s.promise is not None:
            _mark_promise_broken(session, s, actor=actor, now=now)
            result.promises_broken.append(s.invoice_id)
            new_state = replace(new_state, promise=replace(s.promise,
                                                           status=PromiseStatus.BROKEN))
        inv = session.get(t.Invoice, s.invoice_id)
        assert inv is not None
        inv.next_action_on = next_action_on(new_state, policy)
        session.add(inv)
        result.created.append(p)
        if row.id is not None and row.kind != Kind.CUSTOMER_MESSAGE.value:
            crm_ids.append(row.id)
    # Owner and finance escalations of CRM-linked customers become CRM tasks (outbox).
    queue_crm_tasks(session, crm_ids, now=now)
    set_meta(session, LAST_CYCLE_KEY, today.isoformat())
    return result


def _claim_cycle(session: Session, today: date) -> None:
    """Serialize cycles (row lock on PostgreSQL) and refuse to go back in time."""
    row = session.exec(select(t.Meta).where(t.Meta.key == LAST_CYCLE_KEY)
                       .with_for_update()).first()
    last = row.value if row is not None else get_meta(session, LAST_CYCLE_KEY)
    if last and date.fromisoformat(last) > today:
        raise CycleOrderError(
            f"a cycle already ran for {last}; cycles run forward only, so {today} is refused "
            "(use `dunning plan --date` for a dry run of any date)")


def _mark_promise_broken(session: Session, state: InvoiceState, *, actor: Actor,
                         now: datetime) -> None:
    rows = session.exec(select(t.Promise).where(
        t.Promise.invoice_id == state.invoice_id, t.Promise.status == "open"))
    for row in rows:
        row.status = PromiseStatus.BROKEN.value
        row.resolved_at = now
        session.add(row)
        audit(session, actor=actor, action="promise.broken", entity="promise",
              entity_id=str(row.id), at=now, before={"status": "open"},
              after={"status": "broken", "promised_date": row.promised_date.isoformat(),
                     "amount_due": format_money(state.amount_due, state.currency)})

