"""Sync billing (Stripe, QuickBooks) and CRM (HubSpot) into the ledger, resumably.

Each vendor page is stored together with the cursor that follows it, in one transaction:
a crash mid-sync resumes at the last stored page, so nothing is stored twice (upserts are
idempotent anyway) and nothing is skipped.

Who owns which customer field:
- the billing system: name, country, time zone, currency, autopay, and the AP contact
  (its billing email) unless the CRM names an AP contact;
- the CRM: owner, CSM, ARR, health, strategic, and the AP contact when it has one;
- the ledger itself: do_not_contact (set by CSV or by a person), never overwritten here.
A field the CRM provided is recorded in the customer's `external_ids["owned"]`, so a later
billing sync does not take it back.

Matching a billing customer to a CRM company, in order: the billing id the company holds
(configured properties, e.g. HubSpot `stripe_customer_id`), a link made by an earlier sync,
the domain (only when exactly one customer has it), then the normalized name (likewise).
What matches nothing is listed by `unmatched_report`, never dropped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import time
import unicodedata
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime
from typing import Any

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from connectors.base import BillingPage, BillingSource, CrmCompany, CrmSource
from dunning.model import CustomerContext, InvoiceRecord, InvoiceStatus
from dunning.money import from_minor
from dunning.policy import Policy
from services.common import Actor, ServiceError, chunks
from services.importing import ImportSummary, upsert_ledger
from services.outbox import deliver_calls, enqueue
from store import tables as t
from store.engine import session_scope
from store.repository import customer_context, get_meta, set_meta

log = logging.getLogger(__name__)

_CRM_FIELDS = ("owner_email", "csm_email", "arr", "health", "strategic")
_UNMATCHED_KEY = "sync_unmatched_{system}"
_LEGAL_SUFFIXES = frozenset({
    "inc", "incorporated", "llc", "ltd", "limited", "corp", "corporation", "co", "company",
    "gmbh", "ag", "kg", "ug", "se", "sa", "sas", "sarl", "sl", "srl", "bv", "nv", "plc",
    "pty", "oy", "ab", "as", "spa", "kk", "the",
})


class SyncError(ServiceError):
    """A sync cannot go on; the message says why and what to do."""


@dataclass
class SyncReport:
    """What one sync run did, for the CLI, logs and the benchmark."""

    system: str
    full: bool
    pages: int = 0
    api_calls: int = 0
    customers_seen: int = 0
    invoices_seen: int = 0
    companies_seen: int = 0
    matched: int = 0
    unmatched: int = 0
    seconds: float = 0.0
    refreshed: int = 0  # ledger-open invoices a backfill did not list, read by id
    cursor: str | None = None
    totals: dict[str, int] = field(default_factory=dict)

    def add(self, summary: ImportSummary) -> None:
        for key, value in summary.as_dict().items():
            self.totals[key] = self.totals.get(key, 0) + value

    def as_dict(self) -> dict[str, Any]:
        return {"system": self.system, "full": self.full, "pages": self.pages,
                "api_calls": self.api_calls, "customers_seen": self.customers_seen,
                "invoices_seen": self.invoices_seen, "companies_seen": self.companies_seen,
                "matched": self.matched, "unmatched": self.unmatched,
                "refreshed": self.refreshed, "seconds": round(self.seconds, 3),
                "totals": dict(sorted(self.totals.items()))}


# --- cursors ------------------------------------------------------------------------------

def load_cursor(session: Session, system: str) -> str | None:
    row = session.get(t.SyncCursor, system)
    return row.cursor if row is not None and row.cursor else None


def save_cursor(session: Session, system: str, cursor: str | None, now: datetime) -> None:
    row = session.get(t.SyncCursor, system)
    if row is None:
        session.add(t.SyncCursor(source=system, cursor=cursor or "", updated_at=now))
    else:
        row.cursor, row.updated_at = cursor or "", now
        session.add(row)


def sync_state(session: Session) -> dict[str, datetime]:
    """When each system last stored a page (for `doctor`, `/metrics` and the report)."""
    return {r.source: r.updated_at for r in session.exec(select(t.SyncCursor))}


# --- billing ------------------------------------------------------------------------------

def _external_ids(row: t.Customer | None) -> dict[str, Any]:
    if row is None or not row.external_ids:
        return {}
    try:
        data = json.loads(row.external_ids)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def merge_billing(billing: CustomerContext, row: t.Customer | None) -> CustomerContext:
    """The billing system's view of a customer, keeping what the CRM and people own."""
    if row is None:
        return billing
    stored = customer_context(row)
    owned = _external_ids(row).get("owned", {})
    merged = replace(billing, owner_email=stored.owner_email, csm_email=stored.csm_email,
                     arr=stored.arr, health=stored.health, strategic=stored.strategic,
                     do_not_contact=stored.do_not_contact)
    if owned.get("ap_contact"):
        merged = replace(merged, ap_contact_name=stored.ap_contact_name,
                         ap_contact_email=stored.ap_contact_email)
    if owned.get("timezone"):
        merged = replace(merged, timezone=stored.timezone)
    return merged


def _resolve_deleted(session: Session, invoices: list[InvoiceRecord]) -> list[InvoiceRecord]:
    """A source that knows only the id of a deleted invoice sends it with no customer: void
    the stored invoice of that id; one the ledger never had is nothing to store."""
    out = []
    for rec in invoices:
        if rec.customer_id:
            out.append(rec)
            continue
        row = session.get(t.Invoice, rec.invoice_id)
        if row is None:
            continue
        out.append(InvoiceRecord(
            invoice_id=row.id, number=row.number, customer_id=row.customer_id,
            issue_date=row.issue_date, due_date=row.due_date, currency=row.currency,
            amount=from_minor(row.amount_minor, row.currency),
            amount_paid=from_minor(row.amount_paid_minor, row.currency),
            status=InvoiceStatus.VOID, paid_date=row.paid_date, payment_link=row.payment_link,
            payment_failed_on=row.payment_failed_on))
    return out


def store_billing_page(session: Session, page: BillingPage, *, system: str, policy: Policy,
                       actor: Actor, now: datetime) -> ImportSummary:
    """Upsert one page (customers first, merged with CRM-owned fields), link ids, save the
    page's cursor: all in the caller's transaction."""
    page = replace(page, invoices=_resolve_deleted(session, page.invoices))
    ids = [c.customer_id for c in page.customers]
    rows = {r.id: r for batch in chunks(ids)
            for r in session.exec(select(t.Customer).where(col(t.Customer.id).in_(batch)))}
    customers = [merge_billing(c, rows.get(c.customer_id)) for c in page.customers]
    known = set(ids)
    missing = sorted({i.customer_id for i in page.invoices} - known)
    if missing:
        found = {r for batch in chunks(missing) for r in session.exec(
            select(t.Customer.id).where(col(t.Customer.id).in_(batch)))}
        unknown = sorted(set(missing) - found)
        if unknown:
            raise SyncError(f"{system}: invoices refer to customers the page did not include "
                            f"and the ledger does not know: {', '.join(unknown[:10])}; the "
                            "page was not stored (run the sync with --full)")
    summary = upsert_ledger(session, customers=customers, invoices=page.invoices,
                            source=system, actor=actor, now=now, policy=policy)
    for cid in ids:
        row = session.get(t.Customer, cid)
        if row is None:
            continue
        ext = _external_ids(row)
        domain = page.customer_domains.get(cid)
        changed = False
        if ext.get(system) != cid:
            ext[system] = cid
            changed = True
        if domain and row.domain != domain.lower():
            row.domain = domain.lower()
            changed = True
        if changed:
            row.external_ids = json.dumps(ext, sort_keys=True)
            session.add(row)
    save_cursor(session, system, page.cursor, now)
    return summary


def sync_billing(engine: Engine, source: BillingSource, *, policy: Policy, now: datetime,
                 full: bool = False, actor: Actor | None = None) -> SyncReport:
    """Read the source page by page from the stored cursor; one transaction per page."""
    actor = actor or Actor(f"sync:{source.system}")
    report = SyncReport(system=source.system, full=full)
    started = time.perf_counter()
    with session_scope(engine) as s:
        cursor = None if full else load_cursor(s, source.system)
    backfill = full or cursor is None
    seen: set[str] = set()

    def store(page: BillingPage) -> None:
        with session_scope(engine) as s:
            summary = store_billing_page(s, page, system=source.system, policy=policy,
                                         actor=actor, now=now)
        report.pages += 1
        report.api_calls += page.api_calls
        report.customers_seen += len(page.customers)
        report.invoices_seen += len(page.invoices)
        report.cursor = page.cursor
        report.add(summary)
        log.info("%s: page %d stored (%d invoices, %d customers)", source.system,
                 report.pages, len(page.invoices), len(page.customers))

    for page in source.pages(cursor, full=backfill):
        seen.update(r.invoice_id for r in page.invoices)
        store(page)
    if backfill:
        # A backfill lists open invoices only: ledger-open ones it did not see were closed
        # while no cursor covered them. Read those by id so none stays open forever.
        with session_scope(engine) as s:
            stale = sorted(set(s.exec(select(t.Invoice.id).where(
                t.Invoice.status == "open", t.Invoice.source == source.system))) - seen)
        for batch in chunks(stale, 100):
            store(replace(source.refresh(batch), cursor=report.cursor))
        report.refreshed = len(stale)
    report.seconds = time.perf_counter() - started
    return report


# --- CRM ----------------------------------------------------------------------------------

def normalize_name(name: str) -> str:
    """Lower case, accents and punctuation off, legal suffixes dropped: "ACME, Inc." ->
    "acme"."""
    text = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    words = re.findall(r"[a-z0-9]+", text.lower())
    kept = [w for w in words if w not in _LEGAL_SUFFIXES]
    return " ".join(kept or words)


def _domain_of(row: t.Customer) -> str | None:
    if row.domain:
        return row.domain.lower()
    if row.ap_contact_email and "@" in row.ap_contact_email:
        return row.ap_contact_email.rsplit("@", 1)[1].lower()
    return None


@dataclass
class _Index:
    links: dict[str, str]  # "<system>:<its id>" -> customer id (billing and CRM links)
    by_domain: dict[str, list[str]]
    by_name: dict[str, list[str]]


def _index(session: Session) -> _Index:
    idx = _Index({}, defaultdict(list), defaultdict(list))
    for row in session.exec(select(t.Customer)):
        ext = _external_ids(row)
        for key, value in ext.items():
            if key == "owned" or not isinstance(value, str):
                continue
            idx.links[f"{key}:{value}"] = row.id
        domain = _domain_of(row)
        if domain:
            idx.by_domain[domain].append(row.id)
        idx.by_name[normalize_name(row.name)].append(row.id)
    return idx


_BILLING_ID_FORMS = {"quickbooks": "qbo-{}"}


def match_company(company: CrmCompany, idx: _Index, crm: str) -> tuple[str | None, str]:
    """The ledger customer a CRM company is, and how it was matched ("" when none)."""
    for system, value in company.billing_ids.items():
        if not value:
            continue
        ledger_id = _BILLING_ID_FORMS.get(system, "{}").format(value)
        hit = idx.links.get(f"{system}:{ledger_id}")
        if hit:
            return hit, f"{system} id"
    hit = idx.links.get(f"{crm}:{company.external_id}")
    if hit:
        return hit, "earlier link"
    if company.domain:
        ids = idx.by_domain.get(company.domain.lower().removeprefix("www."), [])
        if len(ids) == 1:
            return ids[0], "domain"
    ids = idx.by_name.get(normalize_name(company.name), [])
    if len(ids) == 1:
        return ids[0], "name"
    return None, ""


def _apply_company(session: Session, row: t.Customer, company: CrmCompany, *, crm: str,
                   actor: Actor, now: datetime, policy: Policy) -> bool:
    """Copy the CRM-owned fields onto the customer (audited through upsert_ledger)."""
    stored = customer_context(row)
    updated = replace(
        stored,
        owner_email=(company.owner_email or stored.owner_email),
        csm_email=(company.csm_email or stored.csm_email),
        arr=company.arr if company.arr is not None else stored.arr,
        health=company.health if company.health is not None else stored.health,
        strategic=company.strategic,
    )
    ext = _external_ids(row)
    owned = dict(ext.get("owned", {}))
    if company.ap_contact_email:
        updated = replace(updated, ap_contact_email=company.ap_contact_email,
                          ap_contact_name=company.ap_contact_name or stored.ap_contact_name)
        owned["ap_contact"] = crm
    if company.timezone:
        updated = replace(updated, timezone=company.timezone)
        owned["timezone"] = crm
    summary = upsert_ledger(session, customers=[updated], invoices=[], source=crm,
                            actor=actor, now=now, policy=policy)
    row = session.get(t.Customer, row.id) or row
    new_ext = {**ext, crm: company.external_id, "owned": owned}
    if new_ext != ext:
        row.external_ids = json.dumps(new_ext, sort_keys=True)
        if company.domain and not row.domain:
            row.domain = company.domain.lower()
        session.add(row)
    return bool(summary.customers_updated)


def sync_crm(engine: Engine, source: CrmSource, *, policy: Policy, now: datetime,
             full: bool = False, actor: Actor | None = None) -> SyncReport:
    """Match CRM companies to ledger customers and store their context; page by page."""
    actor = actor or Actor(f"sync:{source.system}")
    report = SyncReport(system=source.system, full=full)
    started = time.perf_counter()
    with session_scope(engine) as s:
        cursor = None if full else load_cursor(s, source.system)
        unmatched: dict[str, dict[str, Any]] = (
            {} if full or cursor is None else _stored_unmatched(s, source.system))
    for page in source.pages(cursor, full=full or cursor is None):
        with session_scope(engine) as s:
            idx = _index(s)
            for company in page.companies:
                report.companies_seen += 1
                cid, how = match_company(company, idx, source.system)
                if cid is None:
                    unmatched[company.external_id] = {
                        "id": company.external_id, "name": company.name,
                        "domain": company.domain, "billing_ids": company.billing_ids}
                    report.unmatched += 1
                    continue
                unmatched.pop(company.external_id, None)
                row = s.get(t.Customer, cid)
                assert row is not None
                _apply_company(s, row, company, crm=source.system, actor=actor, now=now,
                               policy=policy)
                report.matched += 1
                log.debug("%s company %s -> customer %s (%s)", source.system,
                          company.external_id, cid, how)
            set_meta(s, _UNMATCHED_KEY.format(system=source.system),
                     json.dumps(sorted(unmatched.values(), key=lambda u: u["id"])))
            save_cursor(s, source.system, page.cursor, now)
        report.pages += 1
        report.api_calls += page.api_calls
        report.cursor = page.cursor
    report.seconds = time.perf_counter() - started
    return report


def _stored_unmatched(session: Session, system: str) -> dict[str, dict[str, Any]]:
    raw = get_meta(session, _UNMATCHED_KEY.format(system=system))
    items = json.loads(raw) if raw else []
    return {str(u["id"]): u for u in items}


@dataclass(frozen=True)
class UnmatchedReport:
    companies: list[dict[str, Any]]  # CRM companies matching no ledger customer
    customers: list[dict[str, str]]  # open-invoice customers with no CRM company


def unmatched_report(session: Session, crm: str = "hubspot") -> UnmatchedReport:
    """What the last syncs could not match, both ways (for `dunning sync --report`)."""
    companies = sorted(_stored_unmatched(session, crm).values(), key=lambda u: u["id"])
    open_customers = set(session.exec(
        select(t.Invoice.customer_id).where(t.Invoice.status == "open").distinct()))
    customers = []
    for batch in chunks(sorted(open_customers)):
        for row in session.exec(select(t.Customer).where(col(t.Customer.id).in_(batch))):
            if crm not in _external_ids(row):
                customers.append({"id": row.id, "name": row.name,
                                  "domain": _domain_of(row) or ""})
    return UnmatchedReport(companies=companies, customers=sorted(customers,
                                                                 key=lambda c: c["id"]))


# --- CRM follow-ups: tasks on escalations, notes for sent reminders -----------------------

def crm_company_of(session: Session, customer_id: str, crm: str = "hubspot") -> str | None:
    row = session.get(t.Customer, customer_id)
    value = _external_ids(row).get(crm) if row is not None else None
    return value if isinstance(value, str) else None


def queue_crm_tasks(session: Session, escalation_ids: Iterable[int], *, now: datetime,
                    crm: str = "hubspot") -> int:
    """Queue a CRM task for the owner of each owner or finance escalation whose customer is
    linked to a CRM company (outbox kind `crm_task`, once per escalation)."""
    queued = 0
    for batch in chunks([str(i) for i in escalation_ids]):
        rows = session.exec(select(t.Escalation, t.Invoice).where(
            col(t.Escalation.id).in_([int(i) for i in batch]),
            t.Escalation.invoice_id == t.Invoice.id)).all()
        for esc, inv in rows:
            if esc.kind == "customer_message":
                continue  # the reminder itself is logged as a note when it is sent
            company = crm_company_of(session, inv.customer_id, crm)
            if company is None:
                continue
            reasons = json.loads(esc.reasons or "[]")
            queued += enqueue(session, key=f"crm-task:{crm}:{esc.id}", kind="crm_task",
                              payload={
                                  "crm": crm, "company_id": company,
                                  "owner_email": esc.owner, "escalation_id": esc.id,
                                  "subject": f"Dunning: {esc.step} for invoice {inv.number}",
                                  "body": "; ".join(str(r) for r in reasons),
                                  "due": esc.scheduled_on.isoformat()},
                              now=now)
    return queued


def queue_crm_note(session: Session, *, invoice_id: str, subject: str, sent_key: str,
                   now: datetime, crm: str = "hubspot") -> bool:
    """Queue a timeline note for a reminder that was sent (outbox kind `crm_note`)."""
    inv = session.get(t.Invoice, invoice_id)
    if inv is None:
        return False
    company = crm_company_of(session, inv.customer_id, crm)
    if company is None:
        return False
    return enqueue(session, key=f"crm-note:{crm}:{sent_key}", kind="crm_note", payload={
        "crm": crm, "company_id": company, "invoice_id": invoice_id,
        "body": f"Reminder sent for invoice {inv.number}: {subject}",
        "when": now.date().isoformat()}, now=now)


def deliver_crm(engine: Engine, crm: CrmSource, *, now: datetime, limit: int = 50
                ) -> dict[str, int]:
    """Create the queued CRM tasks and notes, each once (the outbox's claim/record
    protocol: an item interrupted mid-call goes to needs_human, never twice)."""
    def perform(kind: str, key: str, payload: dict[str, Any]) -> str:
        if kind == "crm_task":
            return crm.create_task(payload["company_id"], owner_email=payload["owner_email"],
                                   subject=payload["subject"], body=payload["body"],
                                   due=date.fromisoformat(payload["due"]))
        return crm.log_note(payload["company_id"], body=payload["body"],
                            when=date.fromisoformat(payload["when"]))

    return deliver_calls(engine, kinds=("crm_task", "crm_note"), perform=perform,
                         actor=Actor(f"sync:{crm.system}"), now=now, limit=limit)


def deliver_quickbooks_sends(engine: Engine, send: Callable[[str, str, str], None], *,
                             now: datetime, limit: int = 50) -> dict[str, int]:
    """Have QuickBooks email the invoice too (`Invoice.send`, QUICKBOOKS_SEND_INVOICES) for
    each approved reminder that went out; `send(invoice_id, email, request_id)`."""
    def perform(kind: str, key: str, payload: dict[str, Any]) -> str:
        # Intuit's requestid is at most 50 characters: a digest of the outbox key.
        send(payload["invoice_id"], payload["to"], hashlib.sha256(key.encode()).hexdigest()[:32])
        return str(payload["invoice_id"])

    return deliver_calls(engine, kinds=("quickbooks_send",), perform=perform,
                         actor=Actor("sync:quickbooks"), now=now, limit=limit)


def queue_quickbooks_send(session: Session, *, invoice_id: str, to: str, sent_key: str,
                          now: datetime) -> bool:
    """Queue `Invoice.send` for a reminder of a QuickBooks invoice that was just emailed."""
    inv = session.get(t.Invoice, invoice_id)
    if inv is None or inv.source != "quickbooks" or "@" not in to:
        return False
    return enqueue(session, key=f"quickbooks-send:{sent_key}", kind="quickbooks_send",
                   payload={"invoice_id": invoice_id, "to": to}, now=now)


__all__: Sequence[str] = (
    "SyncError",
    "SyncReport",
    "UnmatchedReport",
    "deliver_crm",
    "deliver_quickbooks_sends",
    "load_cursor",
    "match_company",
    "normalize_name",
    "queue_crm_note",
    "queue_crm_tasks",
    "queue_quickbooks_send",
    "save_cursor",
    "store_billing_page",
    "sync_billing",
    "sync_crm",
    "sync_state",
    "unmatched_report",
)
