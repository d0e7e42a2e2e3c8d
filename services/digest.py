"""Gather the manager digest: open AR per lane, DSO and its trend, and what needs a person.

Open AR per lane is one aggregate query over the open invoices; DSO is computed with
dunning.metrics in the company's currency (mixing currencies in one DSO means nothing)
over the invoices that matter to the window; the lists are small indexed reads.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal

from sqlalchemy import and_, case, func, or_
from sqlmodel import Session, col, select

from dunning.calendar import is_business_day
from dunning.digest import (
    AtRisk,
    DigestView,
    DisputeItem,
    PromiseItem,
    StaleCard,
    WaitingDecision,
)
from dunning.metrics import InvoiceFact, dso_trend
from dunning.model import Approval, EscalationState, InvoiceStatus, Kind, Lane
from dunning.money import from_minor
from dunning.policy import Policy
from dunning.risk import assess
from store import tables as t
from store.repository import customer_context, payment_histories

TREND_DAYS = 30
DSO_PERIOD = 90
AT_RISK_CANDIDATES = 50
AT_RISK_SHOWN = 5
STALE_AFTER_BUSINESS_DAYS = 2
OPEN = (EscalationState.PROPOSED.value, EscalationState.POSTING.value,
        EscalationState.POSTED.value)


def open_by_lane(session: Session, policy: Policy, today: date) -> dict[Lane, dict[str, Decimal]]:
    lanes = policy.lanes
    due = col(t.Invoice.due_date)
    lane = case(
        (due > today - timedelta(days=lanes.early), Lane.CURRENT.value),
        (due > today - timedelta(days=lanes.late), Lane.EARLY.value),
        (due > today - timedelta(days=lanes.critical), Lane.LATE.value),
        else_=Lane.CRITICAL.value,
    ).label("lane")
    rows = session.exec(
        select(lane, col(t.Invoice.currency),
               func.sum(col(t.Invoice.amount_minor) - col(t.Invoice.amount_paid_minor)))
        .where(t.Invoice.status == InvoiceStatus.OPEN.value)
        .group_by(lane, col(t.Invoice.currency)))
    out: dict[Lane, dict[str, Decimal]] = {ln: {} for ln in Lane}
    for lane_value, currency, minor in rows:
        out[Lane(lane_value)][currency] = from_minor(int(minor or 0), currency)
    return out


def _facts(session: Session, currency: str, today: date) -> list[InvoiceFact]:
    """Invoices of one currency that can count in DSO over the trend window."""
    start = today - timedelta(days=TREND_DAYS + DSO_PERIOD)
    rows = session.exec(select(t.Invoice).where(
        t.Invoice.currency == currency, t.Invoice.status != InvoiceStatus.VOID.value,
        or_(col(t.Invoice.issue_date) >= start, col(t.Invoice.status) == InvoiceStatus.OPEN.value,
            col(t.Invoice.paid_date) >= start)))
    facts = []
    for r in rows:
        status = InvoiceStatus(r.status)
        closed = status in (InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE)
        facts.append(InvoiceFact(
            invoice_id=r.id, customer_id=r.customer_id, currency=r.currency,
            amount=from_minor(r.amount_minor, r.currency), issue_date=r.issue_date,
            due_date=r.due_date,
            paid_date=(r.paid_date or r.updated_at.date()) if closed else None,
            amount_paid=from_minor(r.amount_paid_minor, r.currency), status=status))
    return facts


def gather_digest(session: Session, policy: Policy, *, today: date, now: datetime,
                  currency: str, country: str,
                  label: Callable[[str | None], str]) -> tuple[DigestView, list[
                      tuple[date, Decimal | None]]]:
    """The digest and the DSO trend points (for the chart)."""
    trend = dso_trend(_facts(session, currency, today), today, TREND_DAYS, DSO_PERIOD)
    names = {}

    def customer_of(invoice_id: str) -> tuple[str, str, t.Invoice]:
        inv = session.get(t.Invoice, invoice_id)
        assert inv is not None
        if inv.customer_id not in names:
            c = session.get(t.Customer, inv.customer_id)
            names[inv.customer_id] = c.name if c else inv.customer_id
        return names[inv.customer_id], inv.number, inv

    waiting = []
    for esc in session.exec(select(t.Escalation).where(
            col(t.Escalation.state).in_(OPEN),
            or_(col(t.Escalation.kind) == Kind.FINANCE_DECISION.value,
                col(t.Escalation.approval) == Approval.FINANCE.value))
            .order_by(col(t.Escalation.days_past_due).desc()).limit(50)):
        name, number, inv = customer_of(esc.invoice_id)
        waiting.append(WaitingDecision(name, number, from_minor(
            inv.amount_minor - inv.amount_paid_minor, inv.currency), inv.currency,
            (today - inv.due_date).days))

    def promise_items(rows: list[t.Promise]) -> list[PromiseItem]:
        out = []
        for p in rows:
            name, number, _ = customer_of(p.invoice_id)
            out.append(PromiseItem(name, number, from_minor(p.amount_minor, p.currency)
                                   if p.amount_minor is not None else None, p.currency,
                                   p.promised_date))
        return out

    due_today = promise_items(list(session.exec(select(t.Promise).where(
        t.Promise.status == "open", t.Promise.promised_date == today))))
    since = now - timedelta(days=1)
    broken = promise_items(list(session.exec(select(t.Promise).where(
        t.Promise.status == "broken", col(t.Promise.resolved_at) >= since))))
    disputes = []
    for d in session.exec(select(t.Dispute).where(
            t.Dispute.status == "open", col(t.Dispute.opened_on) >= today - timedelta(days=1))):
        name, number, _ = customer_of(d.invoice_id)
        disputes.append(DisputeItem(name, number, from_minor(d.amount_minor, d.currency)
                                    if d.amount_minor is not None else None, d.currency,
                                    d.reason))
    stale = []
    for esc in session.exec(select(t.Escalation).where(
            t.Escalation.state == EscalationState.POSTED.value)
            .order_by(col(t.Escalation.plan_date)).limit(500)):
        age = _business_days_between(esc.plan_date, today, country)
        if age >= STALE_AFTER_BUSINESS_DAYS:
            name, _, _ = customer_of(esc.invoice_id)
            stale.append(StaleCard(name, esc.step, label(esc.owner), age, Kind(esc.kind)))
    view = DigestView(
        day=today, open_by_lane=open_by_lane(session, policy, today),
        dso=trend[-1][1] if trend else None, dso_30_days_ago=trend[0][1] if trend else None,
        finance_waiting=waiting, promises_due_today=due_today, broken_promises=broken,
        new_disputes=disputes, stale_cards=stale,
        top_at_risk=_at_risk(session, policy, today))
    return view, trend


def _business_days_between(start: date, end: date, country: str) -> int:
    days, d = 0, start
    while d < end:
        d += timedelta(days=1)
        if is_business_day(d, country):
            days += 1
    return days


def _at_risk(session: Session, policy: Policy, today: date) -> list[AtRisk]:
    """The riskiest of the customers with the most overdue money."""
    overdue = func.sum(col(t.Invoice.amount_minor) - col(t.Invoice.amount_paid_minor))
    rows = list(session.exec(
        select(col(t.Invoice.customer_id), col(t.Invoice.currency), overdue)
        .where(and_(col(t.Invoice.status) == InvoiceStatus.OPEN.value,
                    col(t.Invoice.due_date) < today))
        .group_by(col(t.Invoice.customer_id), col(t.Invoice.currency))
        .order_by(overdue.desc()).limit(AT_RISK_CANDIDATES)))
    if not rows:
        return []
    totals: dict[str, dict[str, Decimal]] = defaultdict(dict)
    for cid, cur, minor in rows:
        totals[cid][cur] = from_minor(int(minor), cur)
    histories = payment_histories(session, list(totals))
    scored = []
    for cid, amounts in totals.items():
        row = session.get(t.Customer, cid)
        if row is None:
            continue
        oldest = session.exec(select(func.min(t.Invoice.due_date)).where(
            t.Invoice.customer_id == cid, t.Invoice.status == "open")).one()
        risk = assess(customer_context(row), histories[cid],
                      amount_due=sum(amounts.values(), Decimal(0)),
                      days_past_due=(today - oldest).days if oldest else 0, policy=policy)
        scored.append(AtRisk(row.name, risk.score, amounts))
    scored.sort(key=lambda a: -a.score)
    return scored[:AT_RISK_SHOWN]


__all__ = ["gather_digest", "open_by_lane"]
