"""A realistic synthetic ledger for `dunning demo`: deterministic for a seed and a date.

Customers with owners, CSMs, countries and payment habits (punctual, occasional, chronic);
a year of settled invoices as payment history; open invoices at every age; the escalations
the bot would already have made on earlier days; a few disputes, promises (one broken),
a quarter-end snooze, a do-not-contact account and a failed automatic charge. A few
invoices are placed so that each kind of step falls due on the demo date itself.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal

from sqlmodel import Session

from dunning.aging import lane_for
from dunning.calendar import zone
from dunning.escalation import schedule
from dunning.model import (
    DISPUTE_REVIEW_PREFIX,
    Channel,
    CustomerContext,
    InvoiceRecord,
    InvoiceState,
    InvoiceStatus,
    Kind,
)
from dunning.money import quantize
from dunning.policy import Policy
from services import actions
from services.common import Actor, ServiceError, refresh_next_actions
from services.importing import ImportSummary, upsert_ledger
from store import tables as t
from store.repository import get_meta, set_meta

DEMO_KEY = "demo_seed"
OWNERS = ("dana.reyes@example.com", "sam.okafor@example.com", "mei.tanaka@example.com",
          "luis.garcia@example.com")
CSMS = ("lee.park@example.com", "ana.silva@example.com")
# (country, time zone, currency)
REGIONS = (
    ("US", "America/New_York", "USD"), ("US", "America/Chicago", "USD"),
    ("US", "America/Los_Angeles", "USD"), ("CA", "America/Toronto", "CAD"),
    ("GB", "Europe/London", "GBP"), ("DE", "Europe/Berlin", "EUR"),
    ("FR", "Europe/Paris", "EUR"), ("NL", "Europe/Amsterdam", "EUR"),
    ("AU", "Australia/Sydney", "AUD"), ("ES", "Europe/Madrid", "EUR"),
)
_FIRST = ("Blue", "North", "Silver", "Bright", "Summit", "Harbor", "Cedar", "Granite", "Pioneer",
          "Atlas", "Beacon", "Copper", "Evergreen", "Falcon", "Golden", "Iron", "Juniper",
          "Lakeside", "Maple", "Orbit", "Prairie", "Quantum", "Redwood", "Sterling", "Tidal")
_SECOND = ("Logistics", "Analytics", "Foods", "Robotics", "Health", "Energy", "Media", "Labs",
           "Capital", "Retail", "Systems", "Studios", "Works", "Networks", "Mobility")
_SUFFIX = {"US": "Inc", "CA": "Ltd", "GB": "Ltd", "DE": "GmbH", "FR": "SAS", "NL": "B.V.",
           "AU": "Pty Ltd", "ES": "S.L."}


@dataclass
class DemoLedger:
    customers: list[CustomerContext]
    invoices: list[InvoiceRecord]
    # (invoice_id, step, date, days past due) the bot already escalated on earlier days
    done_steps: list[tuple[str, str, date, int]] = field(default_factory=list)
    disputes: list[tuple[str, str, Decimal | None, date]] = field(default_factory=list)
    promises: list[tuple[str, date, date]] = field(default_factory=list)  # (inv, logged, date)
    snoozes: list[tuple[str, date, str, date]] = field(default_factory=list)


def _heroes() -> list[tuple[CustomerContext, str]]:
    """The sample customers of shared/samples, with a habit each."""
    return [
        (CustomerContext("C-1001", "Acme Corporation", "US", "America/New_York", "USD",
                         Decimal("312000.00"), 82, OWNERS[0], CSMS[0], "Priya Shah",
                         "ap@acme.example", strategic=True), "punctual"),
        (CustomerContext("C-1002", "Northwind Traders GmbH", "DE", "Europe/Berlin", "EUR",
                         Decimal("48000.00"), 55, OWNERS[1], None, "Jonas Weber",
                         "rechnungen@northwind.example"), "chronic"),
        (CustomerContext("C-1003", "Tailspin Toys Ltd", "GB", "Europe/London", "GBP",
                         Decimal("12500.00"), None, OWNERS[0], None, None,
                         "payables@tailspin.example", autopay=True), "occasional"),
        (CustomerContext("C-1004", "Contoso Pty Ltd", "AU", "Australia/Sydney", "AUD",
                         Decimal("96000.00"), 30, OWNERS[1], CSMS[0], "Mia Nguyen",
                         "accounts@contoso.example"), "chronic"),
    ]


def generate(seed: int, n_customers: int, today: date, policy: Policy) -> DemoLedger:
    rng = random.Random(seed)
    heroes = _heroes()[: max(0, n_customers)]
    customers: list[tuple[CustomerContext, str]] = list(heroes)
    names = {c.name for c, _ in customers}
    i = 0
    while len(customers) < n_customers:
        i += 1
        country, tz, currency = rng.choice(REGIONS)
        name = f"{rng.choice(_FIRST)} {rng.choice(_SECOND)} {_SUFFIX[country]}"
        if name in names:
            continue
        names.add(name)
        arr = quantize(Decimal(rng.randrange(6, 400)) * 1000, currency)
        habit = rng.choices(("punctual", "occasional", "chronic"), (5, 3, 2))[0]
        health = rng.choice((None, rng.randint(20, 95)))
        slug = name.split()[0].lower() + name.split()[1].lower()
        customers.append((CustomerContext(
            customer_id=f"C-{2000 + i}", name=name, country=country, timezone=tz,
            currency=currency, arr=arr, health=health, owner_email=rng.choice(OWNERS),
            csm_email=rng.choice((None, *CSMS)), ap_contact_name=None,
            ap_contact_email=f"ap@{slug}.example", strategic=rng.random() < 0.08,
            autopay=rng.random() < 0.1,
        ), habit))
    if len(customers) > 6:  # one account under legal hold: never contacted
        c, habit = customers[6]
        customers[6] = (CustomerContext(**{**c.__dict__, "do_not_contact": True}), habit)

    ledger = DemoLedger([c for c, _ in customers], [])
    seq = 0

    def new_invoice(c: CustomerContext, issue: date, terms: int, amount: Decimal,
                    **kw: object) -> InvoiceRecord:
        nonlocal seq
        seq += 1
        iid = f"INV-{10000 + seq}"
        rec = InvoiceRecord(invoice_id=iid, number=f"{today.year}-{seq:05d}",
                            customer_id=c.customer_id, issue_date=issue,
                            due_date=issue + timedelta(days=terms), currency=c.currency,
                            amount=amount, payment_link=f"https://pay.example.com/i/{iid}",
                            **kw)  # type: ignore[arg-type]
        ledger.invoices.append(rec)
        return rec

    for c, habit in customers:
        base = (c.arr or Decimal("24000")) / 12
        # A year of settled invoices: the payment history the risk score reads.
        for months_ago in range(12, 2, -1):
            issue = today - timedelta(days=30 * months_ago + rng.randint(0, 5))
            late = {"punctual": rng.choice((0, 0, 0, 0, 2)),
                    "occasional": rng.choice((0, 0, 3, 9, 16)),
                    "chronic": rng.choice((6, 12, 21, 33, 0))}[habit]
            amount = quantize(base * Decimal(rng.randint(80, 120)) / 100, c.currency)
            paid = issue + timedelta(days=30 + late - (rng.randint(1, 5) if late == 0 else 0))
            new_invoice(c, issue, 30, amount, amount_paid=amount, status=InvoiceStatus.PAID,
                        paid_date=paid)
        # Open invoices at every age, from not yet due to deep in the critical lane.
        for _ in range(rng.choice((1, 1, 2, 2, 3))):
            age = rng.choice((10, 20, 28, 33, 38, 45, 52, 60, 75, 90))
            amount = quantize(base * Decimal(rng.randint(60, 140)) / 100, c.currency)
            failed = today - timedelta(days=age - 30) if c.autopay and age > 30 else None
            new_invoice(c, today - timedelta(days=age), 30, amount, payment_failed_on=failed)

    placed = _place_due_today(ledger, rng, today, policy)
    _history_of_escalations(ledger, today, policy, placed)
    _special_cases(ledger, rng, today, placed)
    return ledger


def _state(rec: InvoiceRecord, c: CustomerContext) -> InvoiceState:
    return InvoiceState(invoice_id=rec.invoice_id, number=rec.number, customer=c,
                        issue_date=rec.issue_date, due_date=rec.due_date, currency=rec.currency,
                        amount=rec.amount, payment_failed_on=rec.payment_failed_on)


def _place_due_today(ledger: DemoLedger, rng: random.Random, today: date,
                     policy: Policy) -> set[str]:
    """Move a few invoices so that each step of the policy is due today.

    Steps counted in calendar days from a business day cannot land on every weekday (a +10
    from a Monday is a Thursday): those are placed on their latest day before today and
    left pending, as if the bot had not yet been run for them.
    """
    by_id = {c.customer_id: c for c in ledger.customers}
    open_recs = [r for r in ledger.invoices if r.status is InvoiceStatus.OPEN
                 and not by_id[r.customer_id].autopay and not by_id[r.customer_id].do_not_contact]
    rng.shuffle(open_recs)
    placed: set[str] = set()
    for step, rec in zip(policy.steps, open_recs, strict=False):
        c = by_id[rec.customer_id]
        best: tuple[int, InvoiceRecord] | None = None
        for back in range(-20, 120):
            due = today - timedelta(days=back)
            moved = InvoiceRecord(**{**rec.__dict__, "due_date": due,
                                     "issue_date": due - timedelta(days=30)})
            sched = schedule(_state(moved, c), policy)
            mine = [s.on for s in sched if s.step.key == step.key]
            later = [s.on for s in sched if s.index > policy.index_of(step.key)]
            if not mine or mine[0] > today or (later and later[0] <= today):
                continue
            gap = (today - mine[0]).days
            if best is None or gap < best[0]:
                best = (gap, moved)
        if best is not None:
            ledger.invoices[ledger.invoices.index(rec)] = best[1]
            placed.add(rec.invoice_id)
    return placed


def _history_of_escalations(ledger: DemoLedger, today: date, policy: Policy,
                            placed: set[str]) -> None:
    """The steps the bot would already have taken before today (as if it had been running)."""
    by_id = {c.customer_id: c for c in ledger.customers}
    for rec in ledger.invoices:
        if rec.status is not InvoiceStatus.OPEN:
            continue
        sched = schedule(_state(rec, by_id[rec.customer_id]), policy)
        due = [s for s in sched if s.on <= today]
        for s in due:
            if s.on < today and not (rec.invoice_id in placed and s is due[-1]):
                ledger.done_steps.append((rec.invoice_id, s.step.key, s.on,
                                          (s.on - rec.due_date).days))


def _special_cases(ledger: DemoLedger, rng: random.Random, today: date,
                   placed: set[str]) -> None:
    overdue = [r for r in ledger.invoices if r.status is InvoiceStatus.OPEN
               and (today - r.due_date).days > 10 and r.invoice_id not in placed]
    rng.shuffle(overdue)
    reasons = ("pricing: billed at list price instead of the contract rate",
               "delivery: 40 of 200 seats were never provisioned",
               "duplicate: same services billed on an earlier invoice")
    for n, (rec, reason) in enumerate(zip(overdue[:3], reasons, strict=False)):
        partial = quantize(rec.amount / 5, rec.currency) if "seats" in reason else None
        opened = today if n == 0 else today - timedelta(days=4 + 3 * n)
        ledger.disputes.append((rec.invoice_id, reason, partial, opened))
        if n:  # the bot routed the older disputes to their owners on the day they came in
            ledger.done_steps.append((rec.invoice_id, f"{DISPUTE_REVIEW_PREFIX}{opened}",
                                      opened, (opened - rec.due_date).days))
    rest = overdue[3:]
    if rest:  # a promise for next week
        ledger.promises.append((rest[0].invoice_id, today - timedelta(days=2),
                                today + timedelta(days=7)))
    if len(rest) > 1:  # a promise that was due last week and not kept
        ledger.promises.append((rest[1].invoice_id, today - timedelta(days=16),
                                today - timedelta(days=8)))
    if len(rest) > 2:  # quarter-end snooze asked by the owner
        quarter_end = date(today.year, ((today.month - 1) // 3 + 1) * 3, 1)
        quarter_end = (quarter_end.replace(day=28) + timedelta(days=4)).replace(day=1)
        if quarter_end <= today + timedelta(days=3):
            quarter_end = today + timedelta(days=14)
        ledger.snoozes.append((rest[2].customer_id, quarter_end,
                               "quarter-end close: the AE asked to hold reminders",
                               today - timedelta(days=1)))


def seed(session: Session, policy: Policy, *, seed_value: int, n_customers: int, today: date,
         timezone: str) -> ImportSummary | None:
    """Seed the demo ledger once; re-running with the same seed and date changes nothing."""
    marker = f"{seed_value}:{today.isoformat()}:{n_customers}"
    existing = get_meta(session, DEMO_KEY)
    if existing == marker:
        return None
    if existing is not None:
        raise ServiceError(
            f"this database already holds a demo ledger ({existing}: seed, date, customers); "
            "use another --db file for a different seed or date")
    if session.exec(t.Customer.__table__.select().limit(1)).first() is not None:  # type: ignore[attr-defined]
        raise ServiceError("this database already holds a real ledger: the demo needs an "
                           "empty one (use --db demo.db)")
    morning = datetime.combine(today, time(8, 0), zone(timezone)).astimezone(UTC)
    ledger = generate(seed_value, n_customers, today, policy)
    bot = Actor("demo")
    summary = upsert_ledger(session, customers=ledger.customers, invoices=ledger.invoices,
                            source="demo", actor=bot, now=morning - timedelta(days=1),
                            policy=policy)
    customer_of = {r.invoice_id: r.customer_id for r in ledger.invoices}
    owner_of = {c.customer_id: c.owner_email or "finance@example.com" for c in ledger.customers}
    tz_of = {c.customer_id: c.timezone for c in ledger.customers}

    def midday(day: date, invoice_id: str) -> datetime:
        """Noon on `day` in the customer's own time zone: its local date is `day`."""
        return datetime.combine(day, time(12, 0), zone(tz_of[customer_of[invoice_id]]))
    for iid, key, on, dpd in ledger.done_steps:
        at = datetime.combine(on, time(9, 0), UTC)
        is_policy_step = policy.index_of(key) >= 0
        step = policy.step(key) if is_policy_step else None
        sent = step is not None and step.kind is Kind.CUSTOMER_MESSAGE
        session.add(t.Escalation(
            invoice_id=iid, step=key, kind=(step.kind if step else Kind.OWNER_TASK).value,
            tone=step.tone.value if step and step.tone else None,
            approval=step.approval.value if step and step.approval else None,
            channel=(step.channel if step else Channel.SLACK).value,
            lane=lane_for(dpd, policy.lanes).value, days_past_due=dpd, scheduled_on=on,
            reasons=json.dumps(["demo history"]), owner=owner_of[customer_of[iid]],
            state="sent" if sent else "done", plan_date=on, created_at=at, handled_by="demo",
            handled_at=at))
        if sent:
            assert step is not None
            session.add(t.Touch(invoice_id=iid, customer_id=customer_of[iid],
                                channel=step.channel.value, step=key, occurred_at=at,
                                summary=f"{key} email sent", actor="demo"))
    session.flush()
    for iid, reason, amount, opened in ledger.disputes:
        actions.open_dispute(session, policy, invoice=iid, reason=reason, amount=amount,
                             actor=Actor(owner_of[customer_of[iid]]), now=midday(opened, iid))
    for iid, logged, promised in ledger.promises:
        actions.log_promise(session, policy, invoice=iid, promised_date=promised, amount=None,
                            note="customer called", actor=Actor(owner_of[customer_of[iid]]),
                            now=midday(logged, iid))
    for cid, until, reason, on in ledger.snoozes:
        actions.snooze(session, policy, scope="customer", target=cid, until=until,
                       reason=reason, actor=Actor(owner_of[cid]),
                       now=datetime.combine(on, time(12, 0), zone(tz_of[cid])))
    refresh_next_actions(session, policy, [r.invoice_id for r in ledger.invoices
                                           if r.status is InvoiceStatus.OPEN])
    set_meta(session, DEMO_KEY, marker)
    return summary
