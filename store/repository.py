"""Rows <-> domain: what the services read from the store to build `dunning.model` objects.

Everything reads in bulk, a fixed number of queries per 500 ids, so the daily plan costs
the same whether it looks at ten invoices or ten thousand. Amounts come back as `Decimal`
(from integer minor units); dates stay `date`.
"""

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, date, datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import and_, case, func, or_, union
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
from store._sql import chunks, days_between, upsert
from store.tables import Customer, DisputeStatus, Invoice, Meta, Snooze, SnoozeScope
from store.tables import Dispute as DisputeRow
from store.tables import Escalation as EscalationRow
from store.tables import Promise as PromiseRow


def customer_context(row: Customer) -> CustomerContext:
    """The customer as the rules see it."""
    return CustomerContext(
        customer_id=row.id,
        name=row.name,
        country=row.country,
        timezone=row.timezone,
        currency=row.currency,
        arr=None if row.arr_minor is None else from_minor(row.arr_minor, row.currency),
        health=row.health,
        owner_email=row.owner_email,
        csm_email=row.csm_email,
        ap_contact_name=row.ap_contact_name,
        ap_contact_email=row.ap_contact_email,
        strategic=row.strategic,
        autopay=row.autopay,
        do_not_contact=row.do_not_contact,
        language=row.language,
    )


def payment_histories(
    session: Session, customer_ids: Collection[str]
) -> dict[str, PaymentHistory]:
    """Each customer's settled invoices, promises and disputes, aggregated in SQL.

    Every requested id gets an entry (an empty history when nothing is known).
    """
    counts: dict[str, dict[str, int]] = {}
    for chunk in chunks(customer_ids):
        for cid in chunk:
            counts[cid] = {}
        late = col(Invoice.paid_date) > col(Invoice.due_date)
        settled = session.exec(
            select(
                col(Invoice.customer_id),
                func.count(),
                func.sum(case((late, 1), else_=0)),
                func.sum(
                    case((late, days_between(col(Invoice.paid_date), col(Invoice.due_date))),
                         else_=0)
                ),
            )
            .where(
                col(Invoice.customer_id).in_(chunk),
                col(Invoice.status) == InvoiceStatus.PAID.value,
                col(Invoice.paid_date).is_not(None),
            )
            .group_by(col(Invoice.customer_id))
        )
        for cid, paid, paid_late, days_late in settled:
            counts[cid].update(
                invoices_paid=int(paid), paid_late=int(paid_late or 0),
                days_late_total=int(days_late or 0),
            )
        promises = session.exec(
            select(col(Invoice.customer_id), col(PromiseRow.status), func.count())
            .select_from(PromiseRow)
            .join(Invoice, col(Invoice.id) == col(PromiseRow.invoice_id))
            .where(
                col(Invoice.customer_id).in_(chunk),
                col(PromiseRow.status).in_(
                    [PromiseStatus.BROKEN.value, PromiseStatus.KEPT.value]
                ),
            )
            .group_by(col(Invoice.customer_id), col(PromiseRow.status))
        )
        for cid, status, n in promises:
            field = "broken_promises" if status == PromiseStatus.BROKEN.value else "kept_promises"
            counts[cid][field] = int(n)
        disputes = session.exec(
            select(col(Invoice.customer_id), func.count())
            .select_from(DisputeRow)
            .join(Invoice, col(Invoice.id) == col(DisputeRow.invoice_id))
            .where(col(Invoice.customer_id).in_(chunk))
            .group_by(col(Invoice.customer_id))
        )
        for cid, n in disputes:
            counts[cid]["disputes"] = int(n)
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

    Per chunk of 500 ids: invoices with customers, steps done, latest promise, open
    dispute, snoozes, then the customers' payment histories (three queries) - eight in all.
    """
    states: dict[str, InvoiceState] = {}
    for chunk in chunks(invoice_ids):
        pairs = session.exec(
            select(Invoice, Customer)
            .join(Customer, col(Customer.id) == col(Invoice.customer_id))
            .where(col(Invoice.id).in_(chunk))
        ).all()
        if not pairs:
            continue

        steps: dict[str, set[str]] = {}
        for invoice_id, step in session.exec(
            select(col(EscalationRow.invoice_id), col(EscalationRow.step)).where(
                col(EscalationRow.invoice_id).in_(chunk)
            )
        ):
            steps.setdefault(invoice_id, set()).add(step)

        # The latest promise per invoice, whatever its status.
        promise_rank = (
            func.row_number()
            .over(
                partition_by=col(PromiseRow.invoice_id),
                order_by=(col(PromiseRow.created_at).desc(), col(PromiseRow.id).desc()),
            )
            .label("rank")
        )
        ranked_promises = (
            select(col(PromiseRow.id), promise_rank)
            .where(col(PromiseRow.invoice_id).in_(chunk))
            .subquery()
        )
        promises = {
            p.invoice_id: p
            for p in session.exec(
                select(PromiseRow)
                .join(ranked_promises, col(PromiseRow.id) == ranked_promises.c.id)
                .where(ranked_promises.c.rank == 1)
            )
        }

        # The most recently opened open dispute per invoice.
        dispute_rank = (
            func.row_number()
            .over(
                partition_by=col(DisputeRow.invoice_id),
                order_by=(col(DisputeRow.opened_on).desc(), col(DisputeRow.id).desc()),
            )
            .label("rank")
        )
        ranked_disputes = (
            select(col(DisputeRow.id), dispute_rank)
            .where(
                col(DisputeRow.invoice_id).in_(chunk),
                col(DisputeRow.status) == DisputeStatus.OPEN.value,
            )
            .subquery()
        )
        disputes = {
            d.invoice_id: d
            for d in session.exec(
                select(DisputeRow)
                .join(ranked_disputes, col(DisputeRow.id) == ranked_disputes.c.id)
                .where(ranked_disputes.c.rank == 1)
            )
        }

        customers = {customer.id: customer for _, customer in pairs}
        owners = {c.owner_email.lower() for c in customers.values() if c.owner_email}
        by_customer, by_owner = _snoozes(session, set(customers), owners)
        histories = payment_histories(session, customers.keys())

        for invoice, customer in pairs:
            zone = _zone(customer.timezone)
            promise_row = promises.get(invoice.id)
            dispute_row = disputes.get(invoice.id)
            candidates = [by_customer.get(customer.id)]
            if customer.owner_email:
                candidates.append(by_owner.get(customer.owner_email.lower()))
            snoozes = [until for until in candidates if until is not None]
            states[invoice.id] = InvoiceState(
                invoice_id=invoice.id,
                number=invoice.number,
                customer=customer_context(customer),
                issue_date=invoice.issue_date,
                due_date=invoice.due_date,
                currency=invoice.currency,
                amount=from_minor(invoice.amount_minor, invoice.currency),
                amount_paid=from_minor(invoice.amount_paid_minor, invoice.currency),
                status=InvoiceStatus(invoice.status),
                payment_failed_on=invoice.payment_failed_on,
                steps_done=frozenset(steps.get(invoice.id, ())),
                promise=None if promise_row is None else _promise(promise_row, zone),
                dispute=None if dispute_row is None else _dispute(dispute_row),
                snoozed_until=max(snoozes) if snoozes else None,
                history=histories[customer.id],
                payment_link=invoice.payment_link,
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


def _promise(row: PromiseRow, zone: tzinfo) -> Promise:
    return Promise(
        promised_date=row.promised_date,
        amount=None if row.amount_minor is None else from_minor(row.amount_minor, row.currency),
        status=PromiseStatus(row.status),
        logged_on=_local_date(row.created_at, zone),
    )


def _dispute(row: DisputeRow) -> Dispute:
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
    rows = session.exec(
        select(col(Snooze.scope), col(Snooze.target), func.max(col(Snooze.until)))
        .where(
            col(Snooze.cancelled).is_(False),
            or_(
                and_(
                    col(Snooze.scope) == SnoozeScope.CUSTOMER.value,
                    col(Snooze.target).in_(sorted(customer_ids)),
                ),
                and_(
                    col(Snooze.scope) == SnoozeScope.OWNER.value,
                    func.lower(col(Snooze.target)).in_(sorted(owner_emails)),
                ),
            ),
        )
        .group_by(col(Snooze.scope), col(Snooze.target))
    )
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
