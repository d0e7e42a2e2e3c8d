"""Apply one verified Stripe webhook event to the ledger, exactly once and never backwards.

gather (the stored invoice, customer and the events applied before) -> decide (is this
event new, current and a change?) -> apply (`upsert_ledger`: audit, closing escalations
and next_action_on happen exactly as for a sync).

- Exactly once: the event id is inserted into `webhook_event` ("stripe:<evt id>") in the
  caller's transaction, before the effect. A redelivery finds the row and changes nothing;
  two concurrent deliveries collide on the primary key and one of them rolls back whole.
- Never backwards: Stripe does not deliver events in order. An event older than one
  already applied to the same object is recorded and ignored, and so is a snapshot that
  would reopen a paid, void or written-off invoice or lower what was paid.

The row's `outcome` is JSON: {"result": "applied" | "duplicate" | "ignored: ..." |
"stale: ...", "created": <the event's Unix time>}; `created` orders later events.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlmodel import Session, col, select

from connectors.stripe_billing import (
    customer_context,
    customer_from_invoice,
    customer_id_of,
    invoice_record,
)
from dunning.model import InvoiceStatus
from dunning.money import to_minor
from dunning.policy import Policy
from services.common import Actor
from services.importing import upsert_ledger
from services.sync import merge_billing
from store import tables as t
from store.repository import customer_context as stored_context

SYSTEM = "stripe"
# Events that change the ledger; others are recorded (for dedup) and otherwise ignored.
INVOICE_EVENTS = frozenset({
    "invoice.paid", "invoice.payment_failed", "invoice.updated", "invoice.voided",
    "invoice.marked_uncollectible", "invoice.finalized", "invoice.payment_succeeded",
})
CUSTOMER_EVENTS = frozenset({"customer.updated"})
# Once paid or voided, a Stripe invoice never changes status again.
_FINAL = {InvoiceStatus.PAID.value, InvoiceStatus.VOID.value}
_OPEN_ESCALATION_STATES = ("proposed", "posting", "posted", "approved")


@dataclass(frozen=True)
class EventResult:
    """What one delivery did; `closed_escalations` are the cards to update in Slack."""

    event_id: str
    type: str
    result: str
    object_id: str | None = None
    closed_escalations: tuple[int, ...] = ()

    @property
    def duplicate(self) -> bool:
        return self.result == "duplicate"

    @property
    def applied(self) -> bool:
        return self.result == "applied"


def apply_stripe_event(session: Session, event: Mapping[str, Any], *, policy: Policy,
                       actor: Actor, now: datetime, company_timezone: str,
                       company_country: str) -> EventResult:
    """Apply `event` (a verified Stripe event as a plain mapping) in the caller's
    transaction; a second delivery of the same event id changes nothing."""
    event_id = str(event["id"])
    type_ = str(event.get("type") or "")
    obj = (event.get("data") or {}).get("object") or {}
    object_id = str(obj["id"]) if isinstance(obj, Mapping) and obj.get("id") else None
    key = f"{SYSTEM}:{event_id}"
    if session.get(t.WebhookEvent, key) is not None:
        return EventResult(event_id, type_, "duplicate", object_id)
    created = int(event.get("created") or 0)
    row = t.WebhookEvent(id=key, system=SYSTEM, type=type_, object_id=object_id,
                         outcome=json.dumps({"result": "pending", "created": created}),
                         received_at=now)
    session.add(row)
    session.flush()  # a concurrent delivery of the same event fails here, before any effect
    closed: tuple[int, ...] = ()
    if type_ in INVOICE_EVENTS and isinstance(obj, Mapping) and object_id:
        result, closed = _apply_invoice(session, obj, created=created, policy=policy,
                                        actor=actor, now=now,
                                        company_timezone=company_timezone,
                                        company_country=company_country)
    elif type_ in CUSTOMER_EVENTS and isinstance(obj, Mapping) and object_id:
        result = _apply_customer(session, obj, created=created, policy=policy, actor=actor,
                                 now=now, company_timezone=company_timezone,
                                 company_country=company_country)
    else:
        result = f"ignored: dunning does not use {type_ or 'untyped'} events"
    row.outcome = json.dumps({"result": result, "created": created})
    session.add(row)
    return EventResult(event_id, type_, result, object_id, closed)


def _newest_applied(session: Session, object_id: str) -> int | None:
    """The time of the newest event already applied to this object."""
    newest: int | None = None
    for outcome in session.exec(select(t.WebhookEvent.outcome).where(
            t.WebhookEvent.system == SYSTEM, t.WebhookEvent.object_id == object_id)):
        try:
            data = json.loads(outcome)
        except ValueError:
            continue
        if isinstance(data, dict) and data.get("result") == "applied":
            created = int(data.get("created") or 0)
            newest = created if newest is None else max(newest, created)
    return newest


def _open_escalations(session: Session, invoice_id: str) -> list[int]:
    return [i for i in session.exec(select(t.Escalation.id).where(
        t.Escalation.invoice_id == invoice_id,
        col(t.Escalation.state).in_(_OPEN_ESCALATION_STATES))) if i is not None]


def _apply_invoice(session: Session, obj: Mapping[str, Any], *, created: int, policy: Policy,
                   actor: Actor, now: datetime, company_timezone: str,
                   company_country: str) -> tuple[str, tuple[int, ...]]:
    invoice_id = str(obj["id"])
    customer_id = customer_id_of(obj)
    customer_row = session.get(t.Customer, customer_id)
    context = (stored_context(customer_row) if customer_row is not None
               else customer_from_invoice(obj, company_timezone=company_timezone,
                                          company_country=company_country))
    record = invoice_record(obj, timezone=context.timezone)
    if record is None:
        return f"ignored: a {obj.get('status') or 'deleted'} invoice is not receivable", ()
    newest = _newest_applied(session, invoice_id)
    if newest is not None and created < newest:
        return "stale: a newer event for this invoice was applied already", ()
    stored = session.get(t.Invoice, invoice_id)
    if stored is not None:
        if stored.status in _FINAL and record.status.value != stored.status:
            return f"stale: the invoice is {stored.status} already", ()
        if stored.status != "open" and record.status is InvoiceStatus.OPEN:
            return f"stale: the invoice is {stored.status} already", ()
        if to_minor(record.amount_paid, record.currency) < stored.amount_paid_minor:
            return "stale: the snapshot shows less paid than the ledger", ()
    before = _open_escalations(session, invoice_id)
    upsert_ledger(session, customers=[] if customer_row is not None else [context],
                  invoices=[record], source=SYSTEM, actor=actor, now=now, policy=policy)
    session.flush()
    still_open = set(_open_escalations(session, invoice_id))
    return "applied", tuple(i for i in before if i not in still_open)


def _apply_customer(session: Session, obj: Mapping[str, Any], *, created: int, policy: Policy,
                    actor: Actor, now: datetime, company_timezone: str,
                    company_country: str) -> str:
    customer_id = str(obj["id"])
    row = session.get(t.Customer, customer_id)
    if row is None:
        return "ignored: the ledger has no such customer yet (its first invoice brings it)"
    newest = _newest_applied(session, customer_id)
    if newest is not None and created < newest:
        return "stale: a newer event for this customer was applied already"
    stored = stored_context(row)
    # Autopay needs to know how invoices are collected, which a customer event does not
    # say: a removed payment method turns it off, nothing here turns it on.
    billing = customer_context(obj, company_timezone=company_timezone,
                               company_country=company_country, currency=stored.currency,
                               autopay=stored.autopay)
    upsert_ledger(session, customers=[merge_billing(billing, row)], invoices=[],
                  source=SYSTEM, actor=actor, now=now, policy=policy)
    return "applied"


__all__ = ["CUSTOMER_EVENTS", "INVOICE_EVENTS", "EventResult", "apply_stripe_event"]
