"""The sync service over a real database: pages and cursors stored together, crash resume,
CRM matching and field ownership, CRM follow-ups through the outbox.

The sources here are small in-memory implementations of the project's own BillingSource /
CrmSource protocols (the vendor connectors are tested against their loopback fakes in
test_stripe_*, test_quickbooks_*, test_hubspot_*).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime
from decimal import Decimal

import pytest
from sqlalchemy import Engine, func
from sqlmodel import select

from connectors.base import BillingPage, CrmCompany, CrmPage
from connectors.errors import UnavailableError
from dunning.model import CustomerContext, InvoiceRecord, InvoiceStatus
from dunning.policy import DEFAULT_POLICY
from services.common import Actor
from services.planning import run_cycle
from services.sync import (
    SyncError,
    deliver_crm,
    load_cursor,
    normalize_name,
    sync_billing,
    sync_crm,
    unmatched_report,
)
from store import tables as t
from store.engine import session_scope

NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
P = DEFAULT_POLICY


def customer(i: int, **kw: object) -> CustomerContext:
    base = CustomerContext(customer_id=f"cus_{i:03d}", name=f"Customer {i} Inc.",
                           country="US", timezone="America/New_York", currency="USD",
                           ap_contact_email=f"ap@customer{i}.com")
    return replace(base, **kw)  # type: ignore[arg-type]


def invoice(i: int, cust: int, *, due: date = date(2026, 10, 1), amount: str = "1200.00",
            status: InvoiceStatus = InvoiceStatus.OPEN) -> InvoiceRecord:
    return InvoiceRecord(invoice_id=f"in_{i:04d}", number=f"INV-{i:04d}",
                         customer_id=f"cus_{cust:03d}", issue_date=date(2026, 9, 1),
                         due_date=due, currency="USD", amount=Decimal(amount), status=status)


@dataclass
class ListBilling:
    """Pages from a list; the cursor is the index of the next page; can fail after N pages."""

    page_list: list[BillingPage]
    system: str = "stripe"
    fail_after: int | None = None
    asked: list[str | None] = field(default_factory=list)

    def pages(self, cursor: str | None, *, full: bool) -> Iterator[BillingPage]:
        self.asked.append(cursor)
        start = 0 if full or cursor is None else int(cursor)
        for n, page in enumerate(self.page_list[start:], start=start):
            if self.fail_after is not None and n >= self.fail_after:
                raise UnavailableError(self.system, "connection reset mid-page")
            yield replace(page, cursor=str(n + 1))

    def check(self) -> str:
        return "stripe: ok"

    def refresh(self, invoice_ids: Sequence[str]) -> BillingPage:
        known = {r.invoice_id: r for p in self.page_list for r in p.invoices}
        return BillingPage(customers=[], cursor=None, invoices=[
            known.get(i) or replace(invoice(0, 0), invoice_id=i, customer_id="",
                                    status=InvoiceStatus.VOID) for i in invoice_ids])


def pages_of(n_pages: int, per_page: int) -> list[BillingPage]:
    out = []
    for p in range(n_pages):
        ids = range(p * per_page, (p + 1) * per_page)
        out.append(BillingPage(customers=[customer(i) for i in ids],
                               invoices=[invoice(i, i) for i in ids], cursor=None,
                               customer_domains={f"cus_{i:03d}": f"customer{i}.com"
                                                 for i in ids}, api_calls=1))
    return out


def count(db: Engine, table: type) -> int:
    with session_scope(db) as s:
        return int(s.exec(select(func.count()).select_from(table)).one())


def test_pages_and_cursor_are_stored_together_and_a_crash_resumes(db: Engine) -> None:
    source = ListBilling(pages_of(4, 5), fail_after=2)
    with pytest.raises(UnavailableError):
        sync_billing(db, source, policy=P, now=NOW, full=True)
    with session_scope(db) as s:
        assert load_cursor(s, "stripe") == "2"  # two pages stored, with their cursor
    assert count(db, t.Invoice) == 10
    source.fail_after = None
    report = sync_billing(db, source, policy=P, now=NOW)
    assert source.asked[-1] == "2"  # resumed after the last stored page, not from scratch
    assert report.pages == 2 and report.invoices_seen == 10
    assert count(db, t.Invoice) == 20 and count(db, t.Customer) == 20
    # A full re-sync of the same data changes nothing and duplicates nothing.
    again = sync_billing(db, source, policy=P, now=NOW, full=True)
    assert again.totals["invoices_unchanged"] == 20
    assert again.totals["invoices_created"] == 0
    assert count(db, t.Invoice) == 20
    with session_scope(db) as s:
        row = s.get(t.Customer, "cus_003")
        assert row is not None and row.domain == "customer3.com"
        assert json.loads(row.external_ids)["stripe"] == "cus_003"


def test_a_page_with_an_unknown_customer_is_refused_whole(db: Engine) -> None:
    bad = BillingPage(customers=[], invoices=[invoice(1, 99)], cursor="x")
    with pytest.raises(SyncError, match="cus_099"):
        sync_billing(db, ListBilling([bad]), policy=P, now=NOW, full=True)
    assert count(db, t.Invoice) == 0
    with session_scope(db) as s:
        assert load_cursor(s, "stripe") is None  # the cursor did not move past it


@dataclass
class ListCrm:
    companies: list[CrmCompany]
    system: str = "hubspot"
    tasks: list[dict[str, object]] = field(default_factory=list)
    notes: list[dict[str, object]] = field(default_factory=list)

    def pages(self, cursor: str | None, *, full: bool) -> Iterator[CrmPage]:
        yield CrmPage(companies=self.companies, cursor="end", api_calls=1)

    def check(self) -> str:
        return "hubspot: ok"

    def create_task(self, company_id: str, *, owner_email: str | None, subject: str,
                    body: str, due: date) -> str:
        self.tasks.append({"company": company_id, "owner": owner_email, "subject": subject,
                           "due": due})
        return f"task-{len(self.tasks)}"

    def log_note(self, company_id: str, *, body: str, when: date) -> str:
        self.notes.append({"company": company_id, "body": body, "when": when})
        return f"note-{len(self.notes)}"


def test_name_normalization() -> None:
    assert normalize_name("ACME, Inc.") == "acme"
    assert normalize_name("Müller GmbH") == "muller"
    assert normalize_name("The Company") == "the company"  # nothing left: keep the words


def test_crm_matching_by_billing_id_domain_and_name_and_unmatched_listed(db: Engine) -> None:
    sync_billing(db, ListBilling(pages_of(1, 4)), policy=P, now=NOW, full=True)
    crm = ListCrm([
        CrmCompany("h1", "Totally Different Name", billing_ids={"stripe": "cus_000"},
                   owner_email="dana@example.com", arr=Decimal("120000"), health=40),
        CrmCompany("h2", "Other", domain="customer1.com", owner_email="sam@example.com"),
        CrmCompany("h3", "customer 2", owner_email="kim@example.com",
                   ap_contact_name="Pat Payable", ap_contact_email="pat@customer2.com"),
        CrmCompany("h9", "Nobody We Bill", domain="nobody.example"),
    ])
    report = sync_crm(db, crm, policy=P, now=NOW, full=True)
    assert (report.matched, report.unmatched) == (3, 1)
    with session_scope(db) as s:
        c0, c1, c2 = (s.get(t.Customer, f"cus_00{i}") for i in range(3))
        assert c0 is not None and c1 is not None and c2 is not None
        assert c0.owner_email == "dana@example.com" and c0.health == 40
        assert c0.arr_minor == 12_000_000
        assert c1.owner_email == "sam@example.com"
        assert c2.ap_contact_email == "pat@customer2.com"
        assert json.loads(c0.external_ids)["hubspot"] == "h1"
        rep = unmatched_report(s)
    assert [c["id"] for c in rep.companies] == ["h9"]
    assert [c["id"] for c in rep.customers] == ["cus_003"]

    # A later billing sync keeps what the CRM owns (owner, ARR, health, its AP contact)...
    changed = pages_of(1, 4)
    changed[0] = replace(changed[0], customers=[
        replace(c, name=c.name.upper(), ap_contact_email="billing@new.example")
        for c in changed[0].customers])
    sync_billing(db, ListBilling(changed), policy=P, now=NOW, full=True)
    with session_scope(db) as s:
        c0, c2 = s.get(t.Customer, "cus_000"), s.get(t.Customer, "cus_002")
        assert c0 is not None and c2 is not None
        assert c0.owner_email == "dana@example.com" and c0.health == 40
        assert c0.name == "CUSTOMER 0 INC."  # ...and takes what billing owns
        assert c0.ap_contact_email == "billing@new.example"  # the CRM named no AP contact
        assert c2.ap_contact_email == "pat@customer2.com"  # the CRM's AP contact stays
    # Once linked, a renamed company still matches (the earlier link).
    crm.companies = [replace(crm.companies[1], name="Renamed", domain=None)]
    assert sync_crm(db, crm, policy=P, now=NOW, full=True).matched == 1


def test_crm_tasks_for_owner_escalations_and_notes_for_sent_reminders(db: Engine) -> None:
    old = BillingPage(customers=[customer(1, owner_email="dana@example.com")],
                      invoices=[invoice(1, 1, due=date(2026, 8, 3), amount="9000.00")],
                      cursor=None)
    sync_billing(db, ListBilling([old]), policy=P, now=NOW, full=True)
    crm = ListCrm([CrmCompany("h1", "x", billing_ids={"stripe": "cus_001"},
                              owner_email="dana@example.com")])
    sync_crm(db, crm, policy=P, now=NOW, full=True)
    with session_scope(db) as s:
        result = run_cycle(s, P, date(2026, 11, 24), actor=Actor("scheduler"), now=NOW)
    kinds = {p.action.kind.value for p in result.created}
    assert kinds - {"customer_message"}, "the 113-days-late invoice needs an owner/finance step"
    assert count(db, t.Outbox) == 1
    counts = deliver_crm(db, crm, now=NOW)
    assert counts["sent"] == 1 and len(crm.tasks) == 1
    assert crm.tasks[0]["company"] == "h1" and crm.tasks[0]["owner"] == "dana@example.com"
    assert deliver_crm(db, crm, now=NOW)["sent"] == 0  # never twice
    assert len(crm.tasks) == 1

    from services.sync import queue_crm_note
    with session_scope(db) as s:
        assert queue_crm_note(s, invoice_id="in_0001", subject="Overdue: INV-0001",
                              sent_key="email:1", now=NOW)
        assert not queue_crm_note(s, invoice_id="in_0001", subject="Overdue: INV-0001",
                                  sent_key="email:1", now=NOW)
    deliver_crm(db, crm, now=NOW)
    assert len(crm.notes) == 1 and "INV-0001" in str(crm.notes[0]["body"])


def test_a_deleted_invoice_known_only_by_id_voids_the_stored_one(db: Engine) -> None:
    sync_billing(db, ListBilling(pages_of(1, 2)), policy=P, now=NOW, full=True)
    gone = [replace(invoice(0, 0), customer_id="", amount=Decimal("0"),
                    status=InvoiceStatus.VOID),
            replace(invoice(77, 0), customer_id="", amount=Decimal("0"),
                    status=InvoiceStatus.VOID)]
    report = sync_billing(db, ListBilling([BillingPage([], gone, None)]), policy=P, now=NOW,
                          full=True)
    # in_0000 voided by the page; in_0001 not listed by a full sync, so read by id: gone too.
    assert report.totals["invoices_closed"] == 2 and report.refreshed == 1
    with session_scope(db) as s:
        row = s.get(t.Invoice, "in_0000")
        assert row is not None and row.status == "void" and row.amount_minor == 120000
        assert s.get(t.Invoice, "in_0077") is None  # never ours: nothing stored
