"""Rows <-> domain: what the services read from the store to build `dunning.model` objects.

Everything reads in bulk, a fixed number of queries per 500 ids, so the daily plan costs
the same whether it looks at ten invoices or ten thousand. Amounts come back as `Decimal`
(from integer minor units); dates stay `date`.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import String, and_, case, func, literal_column, or_, union, union_all
from sqlalchemy import select as sa_select
from sqlmodel import Session, col, select

from dunning.model import (
    CustomerContext,
    Dispute,
    InvoiceRecord,
    InvoiceState,
    InvoiceStatus,
    PaymentHistory,
    Promise,
    PromiseStatus,
)
from dunning.money import from_minor
from store._sql import chunks, days_between, in_ids, table_of, upsert
from store.tables import Customer, DisputeStatus, Invoice, Meta, Snooze, SnoozeScope
from store.tables import Dispute as DisputeRow
from store.tables import Escalation as EscalationRow
from store.tables import Promise as PromiseRow

_INVOICE = table_of(Invoice)
_CUSTOMER = table_of(Customer)
_ESCALATION = table_of(EscalationRow)
_PROMISE = table_of(PromiseRow)
_DISPUTE = table_of(DisputeRow)
_SNOOZE = table_of(Snooze)
# Statements built once: the hot paths (every click, status and plan chunk) only bind ids.
_CUSTOMER_PREFIX = "c_"
_INVOICES_WITH_CUSTOMERS = sa_select(
    _INVOICE, *(c.label(_CUSTOMER_PREFIX + c.name) for c in _CUSTOMER.c)
).join_from(_INVOICE, _CUSTOMER, _CUSTOMER.c.id == _INVOICE.c.customer_id).where(
    in_ids(_INVOICE.c.id, "ids"))
_STEPS = sa_select(_ESCALATION.c.invoice_id, _ESCALATION.c.step).where(
    in_ids(_ESCALATION.c.invoice_id, "ids"))
# All promises and open disputes of the invoices, oldest first: the last one per invoice
# wins (a few rows per invoice at most).
_PROMISES = sa_select(_PROMISE).where(in_ids(_PROMISE.c.invoice_id, "ids")).order_by(
    _PROMISE.c.invoice_id, _PROMISE.c.created_at, _PROMISE.c.id)
_OPEN_DISPUTES = sa_select(_DISPUTE).where(
    in_ids(_DISPUTE.c.invoice_id, "ids"), _DISPUTE.c.status == DisputeStatus.OPEN.value,
).order_by(_DISPUTE.c.invoice_id, _DISPUTE.c.opened_on, _DISPUTE.c.id)
_LATE = _INVOICE.c.paid_date > _INVOICE.c.due_date
_HISTORY_KIND_PAID = "paid"
_HISTORY_KIND_DISPUTES = "disputes"
# Settled invoices, promise outcomes and disputes per customer in one round trip.
_HISTORIES = union_all(
    sa_select(_INVOICE.c.customer_id, literal_column(f"'{_HISTORY_KIND_PAID}'").label("kind"),
           func.count().label("n"),
           func.sum(case((_LATE, 1), else_=0)).label("late"),
           func.sum(case((_LATE, days_between(_INVOICE.c.paid_date, _INVOICE.c.due_date)),
                         else_=0)).label("days_late"))
    .where(in_ids(_INVOICE.c.customer_id, "ids"),
           _INVOICE.c.status == InvoiceStatus.PAID.value,
           _INVOICE.c.paid_date.is_not(None))
    .group_by(_INVOICE.c.customer_id),
    sa_select(_INVOICE.c.customer_id, _PROMISE.c.status, func.count(), literal_column("0"),
           literal_column("0"))
    .select_from(_PROMISE.join(_INVOICE, _INVOICE.c.id == _PROMISE.c.invoice_id))
    .where(in_ids(_INVOICE.c.customer_id, "ids"),
           _PROMISE.c.status.in_([PromiseStatus.BROKEN.value, PromiseStatus.KEPT.value]))
    .group_by(_INVOICE.c.customer_id, _PROMISE.c.status),
    sa_select(_INVOICE.c.customer_id, literal_column(f"'{_HISTORY_KIND_DISPUTES}'"),
           func.count(), literal_column("0"), literal_column("0"))
    .select_from(_DISPUTE.join(_INVOICE, _INVOICE.c.id == _DISPUTE.c.invoice_id))
    .where(in_ids(_INVOICE.c.customer_id, "ids"))
    .group_by(_INVOICE.c.customer_id),
)
# Latest `until` of the live snoozes of some customers and (lower-cased) owner emails.
_LIVE_SNOOZES = sa_select(_SNOOZE.c.scope, _SNOOZE.c.target, func.max(_SNOOZE.c.until)).where(
    _SNOOZE.c.cancelled.is_(False),
    or_(and_(_SNOOZE.c.scope == SnoozeScope.CUSTOMER.value,
             in_ids(_SNOOZE.c.target, "customers")),
        and_(_SNOOZE.c.scope == SnoozeScope.OWNER.value,
             in_ids(func.lower(_SNOOZE.c.target, type_=String), "owners"))),
).group_by(_SNOOZE.c.scope, _SNOOZE.c.target)
_HISTORY_FIELDS = {PromiseStatus.BROKEN.value: "broken_promises",
                   PromiseStatus.KEPT.value: "kept_promises",
                   _HISTORY_KIND_DISPUTES: "disputes"}
_CUSTOMER_FIELDS = ("id", "name", "country", "timezone", "currency", "arr_minor", "health",
                    "owner_email", "csm_email", "ap_contact_name", "ap_contact_email",
                    "strategic", "autopay", "do_not_contact", "language")


def customer_context(row: Customer | Mapping[str, Any]) -> CustomerContext:
    """The customer as the rules see it, from its row (or a mapping of its columns)."""
    if not isinstance(row, Mapping):
        row = {name: getattr(row, name) for name in _CUSTOMER_FIELDS}
    return CustomerContext(
        customer_id=row["id"],
        name=row["name"],
        country=row["country"],
        timezone=row["timezone"],
        currency=row["currency"],
        arr=None if row["arr_minor"] is None else from_minor(row["arr_minor"], row["currency"]),
        health=row["health"],
        owner_email=row["owner_email"],
        csm_email=row["csm_email"],
        ap_contact_name=row["ap_contact_name"],
        ap_contact_email=row["ap_contact_email"],
        strategic=row["strategic"],
        autopay=row["autopay"],
        do_not_contact=row["do_not_contact"],
        language=row["language"],
    )


def payment_histories(
    session: Session, customer_ids: Collection[str]
) -> dict[str, PaymentHistory]:
    """Each customer's settled invoices, promises and disputes, aggregated in SQL (one
    query per 500 customers).

    Every requested id gets an entry (an empty history when nothing is known).
    """
    counts: dict[str, dict[str, int]] = {}
    conn = session.connection()
    for chunk in chunks(customer_ids):
        for cid in chunk:
            counts[cid] = {}
        for cid, kind, n, late, days_late in conn.execute(_HISTORIES, {"ids": chunk}):
            if kind == _HISTORY_KIND_PAID:
                counts[cid].update(invoices_paid=int(n), paid_late=int(late or 0),
                                   days_late_total=int(days_late or 0))
            else:
                counts[cid][_HISTORY_FIELDS[kind]] = int(n)
    return {cid: PaymentHistory(**fields) for cid, fields in counts.items()}


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return UTC


def _local_date(at: datetime, zone: tzinfo) -> date:
    """The calendar day of a stored UTC timestamp in the customer's own time zone."""
    return at.astimezone(zone).date()


def load_states(session: Session, invoice_ids: Collection[str]) -> dict[str, InvoiceState]:
    """Invoices as the rules see them, keyed by id; unknown ids are left out.

    Per chunk of 500 ids, six queries: invoices with their customers, steps done, promises,
    open disputes, snoozes, the customers' payment histories. Plain Core rows from
    statements built once (no ORM objects): this runs on every click and status.
    """
    states: dict[str, InvoiceState] = {}
    conn = session.connection()
    for chunk in chunks(invoice_ids):
        rows = conn.execute(_INVOICES_WITH_CUSTOMERS, {"ids": chunk}).mappings().all()
        if not rows:
            continue
        customers: dict[str, CustomerContext] = {}
        for r in rows:
            if r["customer_id"] not in customers:
                customers[r["customer_id"]] = customer_context(
                    {name: r[_CUSTOMER_PREFIX + name] for name in _CUSTOMER_FIELDS})

        steps: dict[str, set[str]] = {}
        for invoice_id, step in conn.execute(_STEPS, {"ids": chunk}):
            steps.setdefault(invoice_id, set()).add(step)
        # The latest promise per invoice whatever its status; the latest open dispute.
        promises = {p.invoice_id: p for p in conn.execute(_PROMISES, {"ids": chunk})}
        disputes = {d.invoice_id: d for d in conn.execute(_OPEN_DISPUTES, {"ids": chunk})}

        owners = {c.owner_email.lower() for c in customers.values() if c.owner_email}
        by_customer, by_owner = _snoozes(session, set(customers), owners)
        histories = payment_histories(session, customers.keys())

        for r in rows:
            customer = customers[r["customer_id"]]
            invoice_id = r["id"]
            zone = _zone(customer.timezone)
            promise_row = promises.get(invoice_id)
            dispute_row = disputes.get(invoice_id)
            candidates = [by_customer.get(customer.customer_id)]
            if customer.owner_email:
                candidates.append(by_owner.get(customer.owner_email.lower()))
            snoozes = [until for until in candidates if until is not None]
            currency = r["currency"]
            states[invoice_id] = InvoiceState(
                invoice_id=invoice_id,
                number=r["number"],
                customer=customer,
                issue_date=r["issue_date"],
                due_date=r["due_date"],
                currency=currency,
                amount=from_minor(r["amount_minor"], currency),
                amount_paid=from_minor(r["amount_paid_minor"], currency),
                status=InvoiceStatus(r["status"]),
                payment_failed_on=r["payment_failed_on"],
                steps_done=frozenset(steps.get(invoice_id, ())),
                promise=None if promise_row is None else _promise(promise_row, zone),
                dispute=None if dispute_row is None else _dispute(dispute_row),
                snoozed_until=max(snoozes) if snoozes else None,
                history=histories[customer.customer_id],
                payment_link=r["payment_link"],
            )
    return states


def new_invoice_states(
    session: Session,
    records: Sequence[InvoiceRecord],
    customers: Mapping[str, CustomerContext],
) -> list[InvoiceState]:
    """States of invoices about to be inserted (a bulk import), without reading them back.

    A new invoice has nothing escalated, promised or disputed yet; only the snoozes of its
    customer and owner apply. The snooze table is small, so it is read whole (one query).
    """
    by_customer: dict[str, date] = {}
    by_owner: dict[str, date] = {}
    for scope, target, until in session.exec(
        select(col(Snooze.scope), col(Snooze.target), func.max(col(Snooze.until)))
        .where(col(Snooze.cancelled).is_(False))
        .group_by(col(Snooze.scope), col(Snooze.target))
    ):
        if scope == SnoozeScope.CUSTOMER.value:
            by_customer[target] = until
        else:
            key = target.lower()
            by_owner[key] = max(until, by_owner.get(key, until))
    out: list[InvoiceState] = []
    for r in records:
        c = customers[r.customer_id]
        snoozes = [u for u in (by_customer.get(c.customer_id),
                               by_owner.get((c.owner_email or "").lower())) if u is not None]
        out.append(InvoiceState(
            invoice_id=r.invoice_id, number=r.number, customer=c, issue_date=r.issue_date,
            due_date=r.due_date, currency=r.currency, amount=r.amount,
            amount_paid=r.amount_paid, status=r.status, payment_failed_on=r.payment_failed_on,
            snoozed_until=max(snoozes) if snoozes else None, payment_link=r.payment_link,
        ))
    return out


def _promise(row: Any, zone: tzinfo) -> Promise:
    return Promise(
        promised_date=row.promised_date,
        amount=None if row.amount_minor is None else from_minor(row.amount_minor, row.currency),
        status=PromiseStatus(row.status),
        logged_on=_local_date(row.created_at, zone),
    )


def _dispute(row: Any) -> Dispute:
    return Dispute(
        reason=row.reason,
        amount=None if row.amount_minor is None else from_minor(row.amount_minor, row.currency),
        opened_on=row.opened_on,
    )


def _snoozes(
    session: Session, customer_ids: set[str], owner_emails: set[str]
) -> tuple[dict[str, date], dict[str, date]]:
    """Latest `until` of the live snoozes per customer id and per (lower-cased) owner email.

    Owner emails compare case-insensitively: they are typed by people in Slack and by
    CRMs, and a missed snooze means a customer gets a message during a pause.
    """
    by_customer: dict[str, date] = {}
    by_owner: dict[str, date] = {}
    rows = session.connection().execute(_LIVE_SNOOZES, {
        "customers": sorted(customer_ids), "owners": sorted(owner_emails)})
    for scope, target, until in rows:
        if scope == SnoozeScope.CUSTOMER.value:
            by_customer[target] = until
        else:
            key = target.lower()
            by_owner[key] = max(until, by_owner.get(key, until))
    return by_customer, by_owner


def due_invoice_ids(session: Session, today: date) -> list[str]:
    """Open invoices the plan must look at today (`next_action_on <= today`), via its index."""
    return list(
        session.exec(
            select(col(Invoice.id))
            .where(
                col(Invoice.next_action_on) <= today,
                col(Invoice.status) == InvoiceStatus.OPEN.value,
            )
            .order_by(col(Invoice.next_action_on), col(Invoice.id))
        )
    )


def held_candidate_ids(session: Session, today: date) -> list[str]:
    """Open invoices under an open dispute, an open promise, or a snooze still running.

    Each branch starts from the small table (disputes, promises, snoozes) and reaches
    invoices through an index, so the cost follows the holds, not the ledger.
    """
    is_open = col(Invoice.status) == InvoiceStatus.OPEN.value
    live_snooze = and_(col(Snooze.cancelled).is_(False), col(Snooze.until) > today)
    disputed = (
        select(col(Invoice.id))
        .select_from(DisputeRow)
        .join(Invoice, col(Invoice.id) == col(DisputeRow.invoice_id))
        .where(col(DisputeRow.status) == DisputeStatus.OPEN.value, is_open)
    )
    promised = (
        select(col(Invoice.id))
        .select_from(PromiseRow)
        .join(Invoice, col(Invoice.id) == col(PromiseRow.invoice_id))
        .where(col(PromiseRow.status) == PromiseStatus.OPEN.value, is_open)
    )
    customer_snoozed = (
        select(col(Invoice.id))
        .select_from(Snooze)
        .join(Invoice, col(Invoice.customer_id) == col(Snooze.target))
        .where(col(Snooze.scope) == SnoozeScope.CUSTOMER.value, live_snooze, is_open)
    )
    owner_snoozed = (
        select(col(Invoice.id))
        .select_from(Snooze)
        .join(Customer, func.lower(col(Customer.owner_email)) == func.lower(col(Snooze.target)))
        .join(Invoice, col(Invoice.customer_id) == col(Customer.id))
        .where(col(Snooze.scope) == SnoozeScope.OWNER.value, live_snooze, is_open)
    )
    held = union(disputed, promised, customer_snoozed, owner_snoozed).subquery()
    return list(session.exec(select(held.c.id).order_by(held.c.id)))


def get_meta(session: Session, key: str) -> str | None:
    """A value the store keeps for itself (e.g. "policy_fingerprint"), or None."""
    return session.exec(select(col(Meta.value)).where(col(Meta.key) == key)).first()


def set_meta(session: Session, key: str, value: str) -> None:
    """Set a `meta` value, creating the row if needed (an upsert: safe under concurrency)."""
    upsert(session, Meta, {"key": key, "value": value}, "key")
