"""Import and upsert customers and invoices from any billing source; idempotent.

gather (existing rows) -> decide (what changed) -> apply (write, audit, refresh dates).
Re-importing the same data changes nothing and writes no audit event.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from sqlalchemy import insert
from sqlmodel import Session, col, select

from dunning.escalation import next_action_on
from dunning.model import CustomerContext, InvoiceRecord, InvoiceStatus
from dunning.money import to_minor
from dunning.policy import Policy
from services.common import Actor, audit, chunks, customer_today, refresh_next_actions
from store import tables as t
from store.audit import EventIn, append_events
from store.repository import customer_context, get_meta, new_invoice_states, set_meta

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
_INSERT_BATCH = 5000


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
    """Upsert in the caller's transaction; audit every create and every change.

    New rows go in by bulk insert with their next action date computed up front (nothing
    to read back); changed rows are updated one by one with a before/after event. All
    audit events of one import are appended to the chain under one lock.
    """
    summary = ImportSummary()
    events: list[EventIn] = []
    refresh: set[str] = set()
    rescheduled_customers: set[str] = set()
    contexts = {c.customer_id: c for c in customers}

    def event(action: str, entity: str, entity_id: str, before: dict[str, Any] | None,
              after: dict[str, Any] | None) -> None:
        events.append(EventIn(actor=actor.id, action=action, entity_type=entity,
                              entity_id=entity_id, at=now, before=before, after=after))

    new_customers: list[dict[str, Any]] = []
    for cid, row in _with_rows(session, t.Customer, list(contexts)):
        c = contexts[cid]
        values = _customer_values(c)
        if row is None:
            new_customers.append({
                "id": cid, "name_normalized": c.name.casefold(), "domain": None,
                "source": source, "external_ids": "{}", "created_at": now,
                "updated_at": now, **values})
            event("customer.created", "customer", cid, None, _jsonable(values))
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
            rescheduled_customers.add(cid)
        event("customer.updated", "customer", cid, _jsonable(before), _jsonable(after))
    if new_customers:
        session.execute(insert(t.Customer).execution_options(render_nulls=True), new_customers)
    summary.customers_created = len(new_customers)
    session.flush()

    missing = {r.customer_id for r in invoices} - contexts.keys()
    contexts.update(_stored_contexts(session, missing))
    by_id = {r.invoice_id: r for r in invoices}
    created: list[InvoiceRecord] = []
    payments: list[dict[str, Any]] = []
    for iid, row_inv in _with_rows(session, t.Invoice, list(by_id)):
        rec = by_id[iid]
        values = _invoice_values(rec)
        today = customer_today(contexts[rec.customer_id].timezone, now)
        if row_inv is None:
            created.append(rec)
            event("invoice.created", "invoice", iid, None, _jsonable(values))
            if rec.amount_paid > 0:
                payments.append(_payment_row(rec, values["amount_paid_minor"], today,
                                             source, now))
            continue
        before, after = _diff(row_inv, values, _INVOICE_FIELDS)
        if not before:
            summary.invoices_unchanged += 1
            continue
        if row_inv.status != InvoiceStatus.OPEN.value and rec.status is InvoiceStatus.OPEN:
            # Forward-only: a stale export or a late webhook never reopens an invoice we
            # know is paid, void or written off.
            summary.invoices_unchanged += 1
            continue
        paid_increase = values["amount_paid_minor"] - row_inv.amount_paid_minor
        for k, v in after.items():
            setattr(row_inv, k, v)
        row_inv.updated_at = now
        session.add(row_inv)
        summary.invoices_updated += 1
        event("invoice.updated", "invoice", iid, _jsonable(before), _jsonable(after))
        if paid_increase > 0:
            payments.append(_payment_row(rec, paid_increase, today, source, now))
        if rec.status is not InvoiceStatus.OPEN:
            close_invoice_escalations(session, iid, reason=f"invoice {rec.status.value}",
                                      actor=actor, now=now)
            summary.invoices_closed.append(iid)
        refresh.add(iid)
    session.flush()

    states = new_invoice_states(session, created, contexts)
    rows = []
    for rec, state in zip(created, states, strict=True):
        rows.append({"id": rec.invoice_id, "source": source, "created_at": now,
                     "updated_at": now, "next_action_on": next_action_on(state, policy),
                     **_invoice_values(rec)})
        if len(rows) == _INSERT_BATCH:
            session.execute(insert(t.Invoice).execution_options(render_nulls=True), rows)
            rows = []
    if rows:
        session.execute(insert(t.Invoice).execution_options(render_nulls=True), rows)
    summary.invoices_created = len(created)
    if payments:
        session.execute(insert(t.Payment).execution_options(render_nulls=True), payments)
    summary.payments_recorded = len(payments)

    if rescheduled_customers:
        for batch in chunks(sorted(rescheduled_customers)):
            refresh.update(session.exec(select(t.Invoice.id).where(
                col(t.Invoice.customer_id).in_(batch), t.Invoice.status == "open")))
    if summary.customers_created or summary.customers_updated:
        version = int(get_meta(session, CUSTOMERS_VERSION_KEY) or "0") + 1
        set_meta(session, CUSTOMERS_VERSION_KEY, str(version))
    refresh_next_actions(session, policy, sorted(refresh))
    append_events(session, events)
    return summary


def _with_rows(session: Session, model: type[Any],
               ids: list[str]) -> Iterator[tuple[str, Any | None]]:
    """Each id with its stored row (None when new), read 500 ids at a time."""
    for batch in chunks(ids):
        rows = {r.id: r for r in session.exec(select(model).where(col(model.id).in_(batch)))}
        for i in batch:
            yield i, rows.get(i)


def _stored_contexts(session: Session, ids: set[str]) -> dict[str, CustomerContext]:
    out: dict[str, CustomerContext] = {}
    for batch in chunks(sorted(ids)):
        for row in session.exec(select(t.Customer).where(col(t.Customer.id).in_(batch))):
            out[row.id] = customer_context(row)
    return out


def _payment_row(rec: InvoiceRecord, minor: int, today: date, source: str,
                 now: datetime) -> dict[str, Any]:
    return {"invoice_id": rec.invoice_id, "amount_minor": minor, "currency": rec.currency,
            "paid_on": rec.paid_date or today, "reference": None, "source": source,
            "created_at": now}


def close_invoice_escalations(session: Session, invoice_id: str, *, reason: str, actor: Actor,
                              now: datetime) -> list[int]:
    """Close the invoice's open escalations (payment, void, write-off); audit each."""
    open_states = ("proposed", "posting", "posted", "approved")
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
