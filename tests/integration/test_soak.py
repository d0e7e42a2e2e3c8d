"""Soak: 30 simulated business days over the demo ledger, payments arriving every day.

After each day's cycle, and at the end: every invoice's escalations follow the policy
(steps in policy order, at most one per invoice per day, customer messages only on the
customer's business days, nothing for closed invoices after they closed), no open card is
left on a closed invoice, and the audit chain verifies.
"""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlalchemy import Engine
from sqlmodel import select

from dunning.calendar import is_business_day
from dunning.model import Kind
from dunning.policy import DEFAULT_POLICY
from services import actions, demo
from services.common import Actor
from services.planning import run_cycle
from store import tables as t
from store.audit import verify_chain
from store.engine import session_scope

P = DEFAULT_POLICY
START = date(2026, 11, 2)


def business_days(start: date, count: int) -> list[date]:
    out, d = [], start
    while len(out) < count:
        if is_business_day(d, "US"):
            out.append(d)
        d += timedelta(days=1)
    return out


def test_thirty_business_days_follow_the_policy_exactly(db: Engine) -> None:
    rng = random.Random(11)
    with session_scope(db) as s:
        demo.seed(s, P, seed_value=3, n_customers=30, today=START, timezone="UTC")
    closed_on: dict[str, date] = {}
    days = business_days(START, 30)
    for day in days:
        now = datetime.combine(day, time(13, 0), UTC)
        with session_scope(db) as s:
            run_cycle(s, P, day, actor=Actor("scheduler"), now=now)
        # Payments arrive: about one open invoice in twelve is paid each day, some partly.
        with session_scope(db) as s:
            open_rows = list(s.exec(select(t.Invoice).where(t.Invoice.status == "open")))
            for inv in rng.sample(open_rows, k=max(1, len(open_rows) // 12)):
                due = Decimal(inv.amount_minor - inv.amount_paid_minor) / 100
                amount = due if rng.random() < 0.8 else (due / 2).quantize(Decimal("0.01"))
                actions.record_payment(s, P, invoice=inv.id, amount=amount, paid_on=day,
                                       reference=f"R-{inv.id}", source="bank",
                                       actor=Actor("bank"), now=now)
                if amount == due:
                    closed_on[inv.id] = day

    with session_scope(db) as s:
        escalations = list(s.exec(select(t.Escalation).where(
            t.Escalation.plan_date >= START)))
        invoices = {i.id: i for i in s.exec(select(t.Invoice))}
        customers = {c.id: c for c in s.exec(select(t.Customer))}
        assert verify_chain(s).ok

    assert len(escalations) > 50, "the soak must exercise the policy"
    per_invoice: dict[str, list[t.Escalation]] = defaultdict(list)
    for e in escalations:
        per_invoice[e.invoice_id].append(e)
    for invoice_id, rows in per_invoice.items():
        inv = invoices[invoice_id]
        country = customers[inv.customer_id].country
        days_used = [r.plan_date for r in rows]
        assert len(days_used) == len(set(days_used)), f"{invoice_id}: two steps in one day"
        policy_steps = [r for r in sorted(rows, key=lambda r: r.plan_date)
                        if P.index_of(r.step) >= 0]
        order = [P.index_of(r.step) for r in policy_steps]
        assert order == sorted(order), f"{invoice_id}: steps out of order {order}"
        for r in rows:
            if r.kind == Kind.CUSTOMER_MESSAGE.value:
                assert is_business_day(r.plan_date, country), f"{invoice_id} {r.step}"
            if invoice_id in closed_on:
                assert r.plan_date <= closed_on[invoice_id], f"{invoice_id} after payment"
        if inv.status != "open":
            assert all(r.state not in ("proposed", "posted") for r in rows), \
                f"{invoice_id}: open card on a {inv.status} invoice"
    assert closed_on, "payments must have closed invoices"
