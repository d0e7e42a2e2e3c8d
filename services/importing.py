"""Import and upsert customers and invoices from any billing source; idempotent.

gather (existing rows) -> decide (what changed) -> apply (write, audit, refresh dates).
Re-importing the same data changes nothing and writes no audit event.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlmodel import Session, col, select

from dunning.model import CustomerContext, InvoiceRecord, InvoiceStatus
from dunning.money import from_minor, to_minor
from dunning.policy import Policy
from services.common import Actor, audit, chunks, customer_today, refresh_next_actions
from store import tables as t
from store.repository import get_meta, set_meta

_CUSTOMER_FIELDS = (
    "name", "country", "timezone", "currency", "arr_minor", "health", "owner_email",
    "csm_email", "ap_contact_name", "ap_contact_email", "strategic", "autopay", "do_not_contact",
)
_INVOICE_FIELDS = (
    "number", "customer_id", "issue_date", "due_date", "currency", "amount_minor",
    "amount_paid_minor", "status", "paid_date", "payment_link", "payment_failed_on",
)
# Customer fields that move an invoice's schedule (calendar, autopay, do-not-contact).
_SCHEDULE_FIELDS = {"country", "autopay", "do_not_contact"}
CUSTOMERS_VERSION_KEY = "customers_version"


@dataclass
class ImportSummary:
    customers_created: int = 0
    customers_updated: int = 0
    customers_unchanged: int = 0
    invoices_created: int = 0
    invoices_updated: int = 0
    invoices_unchanged: int = 0
    payments_recorded: int = 0
    invoices_closed: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, int]:
        return {k: (len(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


def _customer_values(c: CustomerContext) -> dict[str, Any]:
    return {
        "name": c.name, "country": c.country, "timezone": c.timezone, "currency": c.currency,
        "arr_minor": to_minor(c.arr, c.currency) if c.arr is not None else None,
        "health": c.health, "owner_email": c.owner_email, "csm_email": c.csm_email,
        "ap_contact_name": c.ap_contact_name, "ap_contact_email": c.ap_contact_email,
        "strategic": c.strategic, "autopay": c.autopay, "do_not_contact": c.do_not_contact,
    }


def _invoice_values(r: InvoiceRecord) -> dict[str, Any]:
    return {
        "number": r.number, "customer_id": r.customer_id, "issue_date": r.issue_date,
        "due_date": r.due_date, "currency": r.currency,
        "amount_minor": to_minor(r.amount, r.currency),
        "amount_paid_minor": to_minor(r.amount_paid, r.currency), "status": r.status.value,
        "paid_date": r.paid_date, "payment_link": r.payment_link,
        "payment_failed_on": r.payment_failed_on,
    }


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(json.dumps(values, default=str))
    return out


def _diff(row: Any, values: dict[str, Any], fields: Sequence[str]
          ) -> tuple[dict[str, Any], dict[str, Any]]:
    before = {f: getattr(row, f) for f in fields if getattr(row, f) != values[f]}
    after = {f: values[f] for f in before}
    return before, after


def upsert_ledger(session: Session, *, customers: Sequence[CustomerContext],
                  invoices: Sequence[InvoiceRecord], source: str, actor: Actor,
                  now: datetime, policy: Policy) -> ImportSummary:
    """Upsert in one transaction (the caller's session); audit every create and change."""
    summary = ImportSummary()
    refresh: set[str] = set()
    rescheduled_customers: set[str] = set()

    customers_by_id = {c.customer_id: c for c in customers}
    for batch in chunks(list(customers_by_id)):
        existing = {r.id: r for r in session.exec(
            select(t.Customer).where(col(t.Customer.id).in_(batch)))}
        for c in (customers_by_id[cid] for cid in batch):
            values = _customer_values(c)
            row = existing.get(c.customer_id)
            if row is None:
                session.add(t.Customer(id=c.customer_id, name_normalized=c.name.casefold(),
                                       source=source, created_at=now, updated_at=now, **values))
                summary.customers_created += 1
                audit(session, actor=actor, action="customer.created", entity="customer",
                      entity_id=c.customer_id, at=now, after=_jsonable(values))
                continue
            before, after = _diff(row, values, _CUSTOMER_FIELDS)
            if not before:
                summary.customers_unchanged += 1
                continue
            for k, v in after.items():
                setattr(row, k, v)
            row.name_normalized = row.name.casefold()
            row.updated_at = now
            session.add(row)
            summary.customers_updated += 1
            if _SCHEDULE_FIELDS & after.keys():
                rescheduled_customers.add(c.customer_id)
            audit(session, actor=actor, action="customer.updated", entity="customer",
                  entity_id=c.customer_id, at=now, before=_jsonable(before),
                  after=_jsonable(after))
    session.flush()

    tz_of = _customer_timezones(session, {r.customer_id for r in invoices})
    by_id = {r.invoice_id: r for r in invoices}
    for batch in chunks(list(by_id)):
        existing_inv = {r.id: r for r in session.exec(
            select(t.Invoice).where(col(t.Invoice.id).in_(batch)))}
        for iid in batch:
            rec = by_id[iid]
            values = _invoice_values(rec)
            row_inv = existing_inv.get(iid)
            today = customer_today(tz_of.get(rec.customer_id, "UTC"), now)
            if row_inv is None:
                session.add(t.Invoice(id=iid, source=source, created_at=now, updated_at=now,
                                      **values))
                summary.invoices_created += 1
                audit(session, actor=actor, action="invoice.created", entity="invoice",
                      entity_id=iid, at=now, after=_jsonable(values))
                if rec.amount_paid > 0:
                    _record_payment(session, rec, rec.amount_paid, today, source, now)
                    summary.payments_recorded += 1
                if rec.status is InvoiceStatus.OPEN:
                    refresh.add(iid)
                continue
            before, after = _diff(row_inv, values, _INVOICE_FIELDS)
            if not before:
                summary.invoices_unchanged += 1
                continue
            if row_inv.status == InvoiceStatus.PAID.value and rec.status is InvoiceStatus.OPEN:
                # Forward-only: a stale export never reopens an invoice we know is paid.
                summary.invoices_unchanged += 1
                continue
            paid_increase = values["amount_paid_minor"] - row_inv.amount_paid_minor
            for k, v in after.items():
                setattr(row_inv, k, v)
            row_inv.updated_at = now
            session.add(row_inv)
            summary.invoices_updated += 1
            audit(session, actor=actor, action="invoice.updated", entity="invoice",
                  entity_id=iid, at=now, before=_jsonable(before), after=_jsonable(after))
            if paid_increase > 0:
                _record_payment(session, rec, from_minor(paid_increase, rec.currency), today,
                                source, now)
                summary.payments_recorded += 1
            if rec.status is not InvoiceStatus.OPEN:
                close_invoice_escalations(session, iid, reason=f"invoice {rec.status.value}",
                                          actor=actor, now=now)
                summary.invoices_closed.append(iid)
            refresh.add(iid)
    session.flush()

    if rescheduled_customers:
        for batch in chunks(sorted(rescheduled_customers)):
            refresh.update(session.exec(select(t.Invoice.id).where(
                col(t.Invoice.customer_id).in_(batch), t.Invoice.status == "open")))
    if summary.customers_created or summary.customers_updated:
        version = int(get_meta(session, CUSTOMERS_VERSION_KEY) or "0") + 1
        set_meta(session, CUSTOMERS_VERSION_KEY, str(version))
    refresh_next_actions(session, policy, sorted(refresh))
    return summary


def _customer_timezones(session: Session, ids: set[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for batch in chunks(sorted(ids)):
        for cid, tz in session.exec(select(t.Customer.id, t.Customer.timezone)
                                    .where(col(t.Customer.id).in_(batch))):
            out[cid] = tz
    return out


def _record_payment(session: Session, rec: InvoiceRecord, amount: Any, today: date,
                    source: str, now: datetime) -> None:
    session.add(t.Payment(invoice_id=rec.invoice_id, amount_minor=to_minor(amount, rec.currency),
                          currency=rec.currency, paid_on=rec.paid_date or today,
                          reference=None, source=source, created_at=now))


def close_invoice_escalations(session: Session, invoice_id: str, *, reason: str, actor: Actor,
                              now: datetime) -> list[int]:
    """Close the invoice's open escalations (payment, void, write-off); audit each."""
    open_states = ("proposed", "posted", "approved")
    rows = list(session.exec(select(t.Escalation).where(
        t.Escalation.invoice_id == invoice_id, col(t.Escalation.state).in_(open_states))))
    for row in rows:
        before = row.state
        row.state = "closed"
        row.handled_by = actor.id
        row.handled_at = now
        session.add(row)
        audit(session, actor=actor, action="escalation.closed", entity="escalation",
              entity_id=str(row.id), at=now, before={"state": before},
              after={"state": "closed", "reason": reason})
    return [r.id for r in rows if r.id is not None]
