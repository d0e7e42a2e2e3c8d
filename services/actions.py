"""What people do to the ledger: promises, disputes, snoozes, payments, touches.

Each use case: gather (the invoice), check (clear refusals), apply (write, recompute the
invoice's next action date, audit with before/after). The caller owns the transaction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal

from sqlmodel import Session, col, select

from dunning.model import InvoiceStatus
from dunning.money import format_money, from_minor, to_minor
from dunning.policy import Policy
from services.common import (
    Actor,
    NotFoundError,
    ServiceError,
    audit,
    customer_today,
    refresh_next_actions,
)
from services.importing import close_invoice_escalations
from store import tables as t

MAX_TEXT = 2000


@dataclass(frozen=True)
class Outcome:
    """What a use case changed, in one sentence for the person who asked."""

    message: str
    next_action_on: date | None = None


def _open_invoice(session: Session, invoice_ref: str) -> t.Invoice:
    row = session.get(t.Invoice, invoice_ref)
    if row is None:
        row = session.exec(select(t.Invoice).where(t.Invoice.number == invoice_ref)).first()
    if row is None:
        raise NotFoundError(f"no invoice {invoice_ref!r} (give the invoice id or its number)")
    if row.status != InvoiceStatus.OPEN.value:
        raise ServiceError(f"invoice {row.id} is {row.status}: nothing to chase")
    return row


def _customer(session: Session, customer_id: str) -> t.Customer:
    row = session.get(t.Customer, customer_id)
    if row is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    return row


def _text(value: str, what: str) -> str:
    value = value.strip()
    if not value:
        raise ServiceError(f"{what} must not be empty")
    if len(value) > MAX_TEXT:
        raise ServiceError(f"{what} is too long ({len(value)} characters; at most {MAX_TEXT})")
    return value


def _amount(value: Decimal | None, inv: t.Invoice, what: str) -> int | None:
    if value is None:
        return None
    if value <= 0:
        raise ServiceError(f"{what} must be greater than 0")
    minor = to_minor(value, inv.currency)
    due = inv.amount_minor - inv.amount_paid_minor
    if minor > due:
        raise ServiceError(f"{what} {format_money(value, inv.currency)} is more than the "
                           f"{format_money(from_minor(due, inv.currency), inv.currency)} due")
    return minor


def log_promise(session: Session, policy: Policy, *, invoice: str, promised_date: date,
                amount: Decimal | None, note: str = "", actor: Actor,
                now: datetime) -> Outcome:
    inv = _open_invoice(session, invoice)
    cust = _customer(session, inv.customer_id)
    today = customer_today(cust.timezone, now)
    if promised_date < today:
        raise ServiceError(f"the promised date {promised_date} is in the past "
                           f"(today is {today} for {cust.name})")
    if (promised_date - today).days > 366:
        raise ServiceError("a promise more than a year out is a payment plan: ask finance")
    minor = _amount(amount, inv, "the promised amount")
    # A new promise replaces an open one: the latest word from the customer counts.
    for old in session.exec(select(t.Promise).where(t.Promise.invoice_id == inv.id,
                                                    t.Promise.status == "open")):
        old.status, old.resolved_at = "cancelled", now
        session.add(old)
        audit(session, actor=actor, action="promise.replaced", entity="promise",
              entity_id=str(old.id), at=now, before={"status": "open"},
              after={"status": "cancelled"})
    row = t.Promise(invoice_id=inv.id, promised_date=promised_date, amount_minor=minor,
                    currency=inv.currency, status="open", note=note.strip()[:MAX_TEXT],
                    created_by=actor.id, created_at=now)
    session.add(row)
    session.flush()
    nxt = refresh_next_actions(session, policy, [inv.id])[inv.id]
    audit(session, actor=actor, action="promise.logged", entity="invoice", entity_id=inv.id,
          at=now, after={"promised_date": promised_date.isoformat(),
                         "amount": str(from_minor(minor, inv.currency)) if minor else None,
                         "note": row.note, "next_action_on": _iso(nxt)})
    amount_txt = f"{format_money(from_minor(minor, inv.currency), inv.currency)} " if minor \
        else ""
    return Outcome(f"Promise logged: {cust.name} pays {amount_txt}on invoice {inv.number} by "
                   f"{promised_date}; reminders pause until then (next look {_iso(nxt)}).", nxt)


def open_dispute(session: Session, policy: Policy, *, invoice: str, reason: str,
                 amount: Decimal | None, note: str = "", actor: Actor,
                 now: datetime) -> Outcome:
    inv = _open_invoice(session, invoice)
    cust = _customer(session, inv.customer_id)
    reason = _text(reason, "the dispute reason")
    if session.exec(select(t.Dispute).where(t.Dispute.invoice_id == inv.id,
                                            t.Dispute.status == "open")).first():
        raise ServiceError(f"invoice {inv.number} is already disputed; resolve that dispute "
                           "first")
    minor = _amount(amount, inv, "the disputed amount")
    today = customer_today(cust.timezone, now)
    row = t.Dispute(invoice_id=inv.id, reason=reason, amount_minor=minor, currency=inv.currency,
                    note=note.strip()[:MAX_TEXT], status="open", opened_on=today,
                    created_by=actor.id, created_at=now)
    session.add(row)
    session.flush()
    nxt = refresh_next_actions(session, policy, [inv.id])[inv.id]
    audit(session, actor=actor, action="dispute.opened", entity="invoice", entity_id=inv.id,
          at=now, after={"reason": reason, "note": row.note, "opened_on": today.isoformat(),
                         "amount": str(from_minor(minor, inv.currency)) if minor else None})
    return Outcome(f"Dispute recorded on invoice {inv.number} ({cust.name}): {reason}. "
                   "Routine reminders stop; the owner gets the invoice to review.", nxt)


def resolve_dispute(session: Session, policy: Policy, *, invoice: str, resolution: str,
                    actor: Actor, now: datetime) -> Outcome:
    inv = _open_invoice(session, invoice)
    cust = _customer(session, inv.customer_id)
    row = session.exec(select(t.Dispute).where(t.Dispute.invoice_id == inv.id,
                                               t.Dispute.status == "open")).first()
    if row is None:
        raise ServiceError(f"invoice {inv.number} has no open dispute")
    resolution = _text(resolution, "the resolution")
    row.status, row.resolved_on = "resolved", customer_today(cust.timezone, now)
    session.add(row)
    session.flush()
    nxt = refresh_next_actions(session, policy, [inv.id])[inv.id]
    audit(session, actor=actor, action="dispute.resolved", entity="invoice", entity_id=inv.id,
          at=now, before={"status": "open", "reason": row.reason},
          after={"status": "resolved", "resolution": resolution})
    return Outcome(f"Dispute on invoice {inv.number} resolved; reminders resume "
                   f"(next look {_iso(nxt)}).", nxt)


def snooze(session: Session, policy: Policy, *, scope: str, target: str, until: date,
           reason: str, actor: Actor, now: datetime) -> Outcome:
    """Pause a customer's (scope=customer) or an owner's (scope=owner) cards until `until`."""
    reason = _text(reason, "the snooze reason")
    if scope == "customer":
        cust = _customer(session, target)
        today = customer_today(cust.timezone, now)
        label = cust.name
        invoice_filter = col(t.Invoice.customer_id) == target
    elif scope == "owner":
        today = now.date()
        label = target
        owned = select(t.Customer.id).where(t.Customer.owner_email == target)
        invoice_filter = col(t.Invoice.customer_id).in_(owned)
    else:
        raise ServiceError("a snooze is for a customer or an owner")
    if until <= today:
        raise ServiceError(f"snooze until {until}: the date must be after today ({today})")
    if (until - today).days > 180:
        raise ServiceError("a snooze longer than 180 days hides the account: ask finance")
    row = t.Snooze(scope=scope, target=target, until=until, reason=reason, created_by=actor.id,
                   created_at=now, cancelled=False)
    session.add(row)
    session.flush()
    ids = list(session.exec(select(t.Invoice.id).where(invoice_filter,
                                                       t.Invoice.status == "open")))
    refresh_next_actions(session, policy, ids)
    audit(session, actor=actor, action="snooze.created", entity=scope, entity_id=target,
          at=now, after={"until": until.isoformat(), "reason": reason,
                         "open_invoices": len(ids)})
    return Outcome(f"Snoozed {label} until {until} ({reason}); {len(ids)} open invoice(s) "
                   "paused.", None)


def record_payment(session: Session, policy: Policy, *, invoice: str, amount: Decimal,
                   paid_on: date, reference: str | None, source: str, actor: Actor,
                   now: datetime) -> Outcome:
    """A payment lowers the amount due; paid in full closes the invoice and its cards."""
    inv = _open_invoice(session, invoice)
    minor = _amount(amount, inv, "the payment")
    assert minor is not None
    before = {"amount_paid": str(from_minor(inv.amount_paid_minor, inv.currency)),
              "status": inv.status}
    inv.amount_paid_minor += minor
    closed = inv.amount_paid_minor >= inv.amount_minor
    if closed:
        inv.status, inv.paid_date = InvoiceStatus.PAID.value, paid_on
    inv.updated_at = now
    session.add(inv)
    session.add(t.Payment(invoice_id=inv.id, amount_minor=minor, currency=inv.currency,
                          paid_on=paid_on, reference=reference, source=source, created_at=now))
    for p in session.exec(select(t.Promise).where(t.Promise.invoice_id == inv.id,
                                                  t.Promise.status == "open")):
        if closed:
            p.status, p.resolved_at = "kept", now
            session.add(p)
    session.flush()
    if closed:
        close_invoice_escalations(session, inv.id, reason="paid", actor=actor, now=now)
    nxt = refresh_next_actions(session, policy, [inv.id])[inv.id]
    audit(session, actor=actor, action="payment.recorded", entity="invoice", entity_id=inv.id,
          at=now, before=before,
          after={"amount_paid": str(from_minor(inv.amount_paid_minor, inv.currency)),
                 "status": inv.status, "paid_on": paid_on.isoformat(), "reference": reference})
    what = "paid in full and closed" if closed else "partly paid"
    return Outcome(f"Payment of {format_money(amount, inv.currency)} recorded; invoice "
                   f"{inv.number} is {what}.", nxt)


def _iso(d: date | None) -> str | None:
    return d.isoformat() if d else None


TOUCH_CHANNELS = ("email", "call", "meeting", "letter", "portal", "other")


def record_touch(session: Session, policy: Policy, *, invoice: str, channel: str,
                 summary: str, actor: Actor, now: datetime) -> Outcome:
    """Log a contact with the customer made outside the bot (a call, a meeting, a letter)."""
    if channel not in TOUCH_CHANNELS:
        raise ServiceError(f"channel {channel!r} must be one of: {', '.join(TOUCH_CHANNELS)}")
    inv = _open_invoice(session, invoice)
    summary = _text(summary, "the summary")
    session.add(t.Touch(invoice_id=inv.id, customer_id=inv.customer_id, channel=channel,
                        step=None, occurred_at=now, summary=summary, actor=actor.id))
    session.flush()
    audit(session, actor=actor, action="touch.recorded", entity="invoice", entity_id=inv.id,
          at=now, after={"channel": channel, "summary": summary})
    return Outcome(f"Logged a {channel} on invoice {inv.number}: {summary}")
