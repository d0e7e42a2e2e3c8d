"""QuickBooksBilling against the loopback QuickBooks fake: the real python-quickbooks and
intuit-oauth clients over HTTP on 127.0.0.1, no network, no mocks."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import select

from connectors.base import BillingPage
from connectors.errors import AuthError, DataError, RateLimitedError, UnavailableError
from connectors.quickbooks_billing import (
    Company,
    MemoryTokenStore,
    QuickBooksBilling,
    country_code,
    decimal_of,
)
from dunning.model import InvoiceRecord, InvoiceStatus
from store import tables as t
from store.engine import session_scope
from tests.fakes.quickbooks_fake import (
    THROTTLED,
    QuickBooksFake,
    fault_body,
    validation_fault,
)

ISSUED = date(2026, 1, 5)


@pytest.fixture
def fake() -> Iterator[QuickBooksFake]:
    with QuickBooksFake() as server:
        yield server


class Sleeps(list[float]):
    """Records the backoff waits instead of sleeping them."""

    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def connect(fake: QuickBooksFake, **overrides: Any) -> QuickBooksBilling:
    options: dict[str, Any] = {
        "client_id": fake.client_id, "client_secret": fake.client_secret,
        "realm_id": fake.realm_id, "refresh_token": "seed-refresh-token",
        "token_store": MemoryTokenStore(), "api_url": fake.api_url,
        "token_url": fake.token_url, "company_timezone": "America/New_York",
        "company_country": "US", "company_currency": "USD", "page_size": 1000,
        "sleep": Sleeps(), "clock": lambda: fake.now, "timeout": 5.0,
        # Open invoices only unless a test asks for the paid history (tested on its own).
        "paid_lookback_days": 0,
    }
    options.update(overrides)
    return QuickBooksBilling(**options)


def expected_record(raw: dict[str, Any], realm_id: str) -> InvoiceRecord:
    """What an open QuickBooks invoice must become, written out from the fake's own row."""
    return InvoiceRecord(
        invoice_id=f"qbo-{raw['Id']}", number=raw.get("DocNumber", raw["Id"]),
        customer_id=f"qbo-{raw['CustomerRef']['value']}",
        issue_date=date.fromisoformat(raw["TxnDate"]),
        due_date=date.fromisoformat(raw["DueDate"]), currency=raw["CurrencyRef"]["value"],
        amount=raw["TotalAmt"], amount_paid=raw["TotalAmt"] - raw["Balance"],
        status=InvoiceStatus.OPEN,
        payment_link=f"https://connect.intuit.com/portal/app/CommerceNetwork/view/"
                     f"scs-v1-{realm_id}-{raw['Id']}")


def seed_ledger(fake: QuickBooksFake, open_count: int, *, customers: int = 40) -> None:
    people = [fake.add_customer(f"Customer {n}", email=f"ap@customer{n}.example",
                                country=("USA", "United States", "Deutschland", "Canada")[n % 4])
              for n in range(customers)]
    for n in range(open_count):
        # Cents that a float would not keep exactly at this size.
        amount = Decimal("9876543.21") + Decimal(n) / 100 if n % 97 == 0 else \
            Decimal("100.10") + Decimal(n % 500)
        fake.add_invoice(people[n % customers], amount, txn_date=ISSUED + timedelta(days=n % 20),
                         doc_number=f"INV-{n:05d}",
                         balance=(amount / 2).quantize(Decimal("0.01")) if n % 10 == 0
                         else None)


def all_invoices(pages: list[BillingPage]) -> list[InvoiceRecord]:
    return [invoice for page in pages for invoice in page.invoices]


# -- full backfill ----------------------------------------------------------------------


def test_backfill_of_2500_open_invoices_is_three_pages_mapped_exactly(
        fake: QuickBooksFake) -> None:
    seed_ledger(fake, 2500)
    paid = fake.add_invoice(fake.customers["2"], "50.00", txn_date=ISSUED, balance="0")
    connector = connect(fake)

    pages = list(connector.pages(None, full=True))

    assert len(pages) == 3
    invoices = all_invoices(pages)
    assert len(invoices) == 2500 == len({i.invoice_id for i in invoices})
    expected = {f"qbo-{i}": expected_record(raw, fake.realm_id) for i, raw in fake.invoices.items()
                if raw["Balance"] > 0}
    assert {i.invoice_id: i for i in invoices} == expected
    assert f"qbo-{paid['Id']}" not in {i.invoice_id for i in invoices}
    big = [i for i in invoices if i.amount > Decimal("9000000")]
    assert big and all(i.amount.as_tuple().exponent == -2 for i in big)
    for page in pages:
        assert {i.customer_id for i in page.invoices} <= {c.customer_id for c in page.customers}
        assert page.api_calls == 2  # the invoice page and its customers by id
    cursors = [json.loads(p.cursor or "") for p in pages]
    assert [c["mode"] for c in cursors] == ["full", "full", "cdc"]
    # The hand-over to CDC asks from before the backfill began, never after it.
    assert datetime.fromisoformat(cursors[-1]["since"]) <= fake.now
    assert fake.count("query") == 6


def test_customers_are_mapped_from_the_billing_record(fake: QuickBooksFake) -> None:
    rows = [
        fake.add_customer("Müller GmbH", email="buchhaltung@mueller.de, ceo@mueller.de",
                          country="Deutschland", currency="EUR", given_name="Anna",
                          family_name="Schmidt"),
        fake.add_customer("Solo Consulting", email="solo@gmail.com", country="U.S.A.",
                          web="https://www.solo-consulting.example/about"),
        fake.add_customer("Nowhere Ltd", email=None, country="Atlantis"),
        fake.add_customer("Tokyo KK", email="ar@tokyo.example.jp", country="Japan",
                          currency="JPY"),
    ]
    for row in rows:
        fake.add_invoice(row, "12000" if row["CurrencyRef"]["value"] == "JPY" else "10.00",
                         txn_date=ISSUED)
    page, = connect(fake).pages(None, full=True)

    by_name = {c.name: c for c in page.customers}
    mueller = by_name["Müller GmbH"]
    assert (mueller.country, mueller.timezone, mueller.currency) == ("DE", "Europe/Berlin", "EUR")
    assert (mueller.ap_contact_name, mueller.ap_contact_email) == (
        "Anna Schmidt", "buchhaltung@mueller.de")
    solo = by_name["Solo Consulting"]
    assert (solo.country, solo.timezone, solo.ap_contact_name) == (
        "US", "America/New_York", None)
    nowhere = by_name["Nowhere Ltd"]
    assert (nowhere.country, nowhere.ap_contact_email) == ("US", None)
    assert page.customer_domains == {
        mueller.customer_id: "mueller.de",
        solo.customer_id: "solo-consulting.example",  # free mail: the web address instead
        by_name["Tokyo KK"].customer_id: "tokyo.example.jp",
    }
    yen = next(i for i in page.invoices if i.currency == "JPY")
    assert yen.amount == Decimal("12000") and isinstance(yen.amount, Decimal)


def test_country_names_and_exact_amounts() -> None:
    assert [country_code(n, "GB") for n in (
        "USA", "United States", "Deutschland", "Österreich", "España", "de", " uk ", "Mars",
        None, "")] == ["US", "US", "DE", "AT", "ES", "DE", "GB", "GB", "GB", "GB"]
    assert decimal_of(Decimal("0.10")) + decimal_of(Decimal("0.20")) == Decimal("0.30")
    assert decimal_of(7) == Decimal(7)
    with pytest.raises(DataError):
        decimal_of(0.1)
    assert Company().currency == "USD"


def test_a_page_paid_away_under_the_backfill_loses_no_open_invoice(
        fake: QuickBooksFake) -> None:
    """Invoices paid between two page reads shift the offsets; the overlap covers that."""
    seed_ledger(fake, 450, customers=5)
    connector = connect(fake, page_size=100)
    pages = connector.pages(None, full=True)
    first = next(pages)
    for invoice in first.invoices[:4]:  # paid while the sync stores page one
        fake.pay(invoice.invoice_id.removeprefix("qbo-"))
    rest = list(pages)

    delivered = [i.invoice_id for i in all_invoices([first, *rest])]
    still_open = {f"qbo-{i}" for i, raw in fake.invoices.items() if raw["Balance"] > 0}
    assert still_open <= set(delivered)
    assert len(delivered) == len(set(delivered)) == 450  # none twice within one run


# -- change data capture ----------------------------------------------------------------


def test_incremental_sync_returns_only_what_changed(fake: QuickBooksFake) -> None:
    seed_ledger(fake, 30, customers=6)
    fake.now += timedelta(hours=1)  # the ledger is older than the backfill
    connector = connect(fake)
    backfill = list(connector.pages(None, full=True))
    cursor = backfill[-1].cursor
    ids = sorted(fake.invoices, key=int)
    paid_id, void_id, deleted_id, partial_id = ids[1], ids[2], ids[3], ids[5]

    fake.now += timedelta(hours=1)
    payment = fake.pay(paid_id, on=date(2026, 3, 1))
    fake.pay(partial_id, "1.00", on=date(2026, 3, 2))
    fake.void(void_id)
    fake.delete(deleted_id)
    renamed = fake.update_customer(sorted(fake.customers, key=int)[1],
                                   DisplayName="Customer Renamed")
    newcomer = fake.add_customer("Newcomer Inc", email="ap@newcomer.example", country="Canada")
    new_invoice = fake.add_invoice(newcomer, "42.00", txn_date=date(2026, 3, 2))
    fake.now += timedelta(hours=1)
    before = fake.counts()

    page, = connector.pages(cursor, full=False)

    calls = fake.counts() - before
    # One CDC call, plus one query for the customers of changed invoices CDC did not bring;
    # the access token expired in those two hours, so it was refreshed first.
    assert calls == {"cdc": 1, "query": 1, "token": 1}
    assert page.api_calls == 2
    by_id = {i.invoice_id: i for i in page.invoices}
    assert set(by_id) == {f"qbo-{x}" for x in (paid_id, void_id, deleted_id, partial_id,
                                                new_invoice["Id"])}
    paid = by_id[f"qbo-{paid_id}"]
    assert (paid.status, paid.paid_date, paid.amount_paid) == (
        InvoiceStatus.PAID, date.fromisoformat(payment["TxnDate"]), paid.amount)
    partial = by_id[f"qbo-{partial_id}"]
    assert (partial.status, partial.amount_paid) == (InvoiceStatus.OPEN, Decimal("1.00"))
    assert by_id[f"qbo-{void_id}"].status is InvoiceStatus.VOID
    tombstone = by_id[f"qbo-{deleted_id}"]
    assert (tombstone.status, tombstone.customer_id) == (InvoiceStatus.VOID, "")
    assert by_id[f"qbo-{new_invoice['Id']}"].status is InvoiceStatus.OPEN
    names = {c.customer_id: c.name for c in page.customers}
    assert names[f"qbo-{renamed['Id']}"] == "Customer Renamed"
    assert names[f"qbo-{newcomer['Id']}"] == "Newcomer Inc"
    assert {i.customer_id for i in page.invoices} - {""} <= set(names)

    fake.now += timedelta(hours=1)
    quiet, = connector.pages(page.cursor, full=False)
    assert (quiet.invoices, quiet.customers, quiet.api_calls) == ([], [], 1)


def test_paid_date_comes_from_a_payment_outside_the_change_window(
        fake: QuickBooksFake) -> None:
    """An invoice touched now but paid earlier: its Payment is read by id."""
    customer = fake.add_customer("Late Touch", email="ap@late.example")
    invoice = fake.add_invoice(customer, "80.00", txn_date=ISSUED)
    fake.pay(invoice["Id"], on=date(2026, 2, 20))
    fake.now += timedelta(days=1)
    since = fake.now
    fake.now += timedelta(hours=1)
    fake.update_invoice(invoice["Id"], PrivateNote="thanks")  # only the invoice changed
    fake.now += timedelta(hours=1)
    cursor = json.dumps({"v": 1, "mode": "cdc", "since": since.isoformat()})

    page, = connect(fake).pages(cursor, full=False)

    record, = page.invoices
    assert (record.status, record.paid_date) == (InvoiceStatus.PAID, date(2026, 2, 20))
    assert fake.count("query") == 2  # the payment by id, the customer by id


def test_cursor_older_than_the_cdc_window_falls_back_to_a_full_backfill(
        fake: QuickBooksFake) -> None:
    seed_ledger(fake, 12, customers=3)
    old = json.dumps({"v": 1, "mode": "cdc", "since": (fake.now - timedelta(days=31))
                      .isoformat()})
    pages = list(connect(fake).pages(old, full=False))
    assert len(all_invoices(pages)) == 12
    assert fake.count("cdc") == 0


def test_a_truncated_change_set_is_paged_by_update_time_instead(fake: QuickBooksFake) -> None:
    since = fake.now - timedelta(minutes=1)
    seed_ledger(fake, 1005, customers=5)
    cursor = json.dumps({"v": 1, "mode": "cdc", "since": since.isoformat()})

    pages = list(connect(fake).pages(cursor, full=False))

    assert fake.count("cdc") == 1
    assert len(pages) == 2
    assert len({i.invoice_id for i in all_invoices(pages)}) == 1005
    assert json.loads(pages[-1].cursor or "")["mode"] == "cdc"


# -- faults -----------------------------------------------------------------------------


def test_a_429_storm_is_waited_out_as_retry_after_says(fake: QuickBooksFake) -> None:
    seed_ledger(fake, 5, customers=2)
    fake.fail("query", times=3, status=429, body=THROTTLED, headers={"Retry-After": "0"})
    sleeps = Sleeps()
    pages = list(connect(fake, sleep=sleeps).pages(None, full=True))
    assert len(all_invoices(pages)) == 5
    assert sleeps == [0.0, 0.0, 0.0]


def test_outages_timeouts_and_dropped_pages_recover(fake: QuickBooksFake) -> None:
    seed_ledger(fake, 25, customers=3)
    fake.fail("query", times=1, status=503, body="<html>Service Unavailable</html>")
    fake.fail("query", times=1, status=500, body=fault_body(
        "An application error has occurred", "Internal Server Error", "10000", "SystemFault"))
    fake.fail("query", times=1, delay=2.0)  # slower than the client waits
    fake.fail("query", times=1, drop=True)  # cut off mid-body
    sleeps = Sleeps()
    pages = list(connect(fake, sleep=sleeps, timeout=0.3, page_size=10).pages(None, full=True))
    assert len({i.invoice_id for i in all_invoices(pages)}) == 25
    assert len(sleeps) == 4


def test_an_outage_that_lasts_gives_up_as_unavailable(fake: QuickBooksFake) -> None:
    fake.fail("companyinfo", times=10, status=502, body="bad gateway")
    with pytest.raises(UnavailableError, match="HTTP 502"):
        connect(fake, attempts=3).check()
    assert fake.count("companyinfo") == 3


def test_rate_limit_that_lasts_is_reported_with_retry_after(fake: QuickBooksFake) -> None:
    fake.fail("cdc", times=10, status=429, body=THROTTLED, headers={"Retry-After": "7"})
    cursor = json.dumps({"v": 1, "mode": "cdc", "since": fake.now.isoformat()})
    sleeps = Sleeps()
    with pytest.raises(RateLimitedError) as caught:
        list(connect(fake, attempts=2, sleep=sleeps).pages(cursor, full=False))
    assert caught.value.retry_after == 7.0
    assert sleeps == [7.0]


def test_validation_fault_is_a_data_error_with_the_detail_and_no_retry(
        fake: QuickBooksFake) -> None:
    fake.fail("query", status=400, body=validation_fault(
        "Property Balance is not queryable for this account", code="4001"))
    with pytest.raises(DataError, match="Property Balance is not queryable"):
        list(connect(fake).pages(None, full=True))
    assert fake.count("query") == 1


def test_authorization_fault_is_an_auth_error(fake: QuickBooksFake) -> None:
    fake.fail("companyinfo", status=403, body=fault_body(
        "ApplicationAuthorizationFailed", "Insufficient scope", "003100",
        "AuthorizationFault"))
    with pytest.raises(AuthError, match="Insufficient scope"):
        connect(fake).check()


def test_crash_mid_backfill_resumes_from_the_stored_cursor(fake: QuickBooksFake) -> None:
    seed_ledger(fake, 2500)
    tokens = MemoryTokenStore()  # shared like the database row: the seed is rotated away
    crashing = connect(fake, attempts=1, token_store=tokens).pages(None, full=True)
    stored = [next(crashing)]  # the sync stored page one and its cursor
    fake.fail("query", drop=True)  # then the connection dies reading page two
    with pytest.raises(UnavailableError):
        next(crashing)

    resumed = list(connect(fake, token_store=tokens).pages(stored[-1].cursor, full=False))
    assert len(resumed) == 2
    assert fake.count("cdc") == 0
    store: dict[str, InvoiceRecord] = {}
    for page in [*stored, *resumed]:
        ids = [i.invoice_id for i in page.invoices]
        assert len(ids) == len(set(ids))
        store.update((i.invoice_id, i) for i in page.invoices)  # the sync's upsert
    assert set(store) == {f"qbo-{i}" for i in fake.invoices}
    assert json.loads(resumed[-1].cursor or "")["mode"] == "cdc"


# -- the rest of the API ----------------------------------------------------------------


def test_check_names_the_company(fake: QuickBooksFake) -> None:
    assert connect(fake).check() == f"QuickBooks: Acme AR Ltd (realm {fake.realm_id})"


def test_send_invoice_emails_once_even_when_the_answer_is_lost(fake: QuickBooksFake) -> None:
    customer = fake.add_customer("Send Co", email="ap@send.example")
    invoice = fake.add_invoice(customer, "19.99", txn_date=ISSUED)
    fake.fail("send", drop=True)  # QuickBooks sent it, but the answer never arrived

    connect(fake).send_invoice(f"qbo-{invoice['Id']}", "controller@send.example")

    assert fake.sent == [(invoice["Id"], "controller@send.example")]
    assert fake.count("send") == 2
    sends = [c for c in fake.calls if c.endpoint == "send"]
    assert sends[0].query["requestid"] == sends[1].query["requestid"]
    assert fake.invoices[invoice["Id"]]["EmailStatus"] == "EmailSent"


def test_send_invoice_refuses_unknown_or_foreign_ids(fake: QuickBooksFake) -> None:
    connector = connect(fake)
    with pytest.raises(DataError, match="Object Not Found"):
        connector.send_invoice("qbo-424242", "ap@x.example")
    with pytest.raises(DataError, match="not a QuickBooks id"):
        connector.send_invoice("in_1Nstripe", "ap@x.example")
    assert fake.sent == []


def test_a_full_backfill_brings_the_paid_history_with_payment_dates(
        fake: QuickBooksFake) -> None:
    """Risk scoring needs settled invoices: after the open ones, the backfill pages
    `Balance = '0'` invoices issued within the lookback (paid date = the linked Payment's
    TxnDate), resumably; only its last page hands over to CDC; incremental runs use CDC."""
    seed_ledger(fake, 3, customers=2)
    cust = fake.customers["2"]
    old = fake.add_invoice(cust, "10.00", txn_date=date(2025, 2, 1))  # before the lookback
    fake.pay(old["Id"], on=date(2025, 3, 1))
    history = []
    for n in range(5):
        inv = fake.add_invoice(cust, f"{100 + n}.00", txn_date=date(2025, 6, 1 + n))
        fake.pay(inv["Id"], on=date(2025, 7, 10 + n))
        history.append(inv["Id"])
    voided = fake.add_invoice(cust, "9.00", txn_date=date(2025, 6, 9))
    fake.void(voided["Id"])  # Balance 0 too: listed, and stored as void
    tokens = MemoryTokenStore()
    crashing = connect(fake, page_size=2, paid_lookback_days=365, attempts=1,
                       token_store=tokens).pages(None, full=True)
    stored = [next(crashing), next(crashing), next(crashing)]  # open 2 + 1, then paid 1
    assert [json.loads(p.cursor or "")["mode"] for p in stored] == ["full", "paid", "paid"]
    fake.fail("query", drop=True)
    with pytest.raises(UnavailableError):
        next(crashing)

    resumed = list(connect(fake, page_size=2, paid_lookback_days=365, token_store=tokens)
                   .pages(stored[-1].cursor, full=False))
    assert json.loads(resumed[-1].cursor or "")["mode"] == "cdc"
    assert all(json.loads(p.cursor or "")["mode"] == "paid" for p in resumed[:-1])
    sqls = [c.body for c in fake.calls if c.endpoint == "query" and "Balance = '0'" in c.body]
    assert sqls and all("TxnDate >= '2025-03-02'" in q for q in sqls)  # fake.now 2026-03-02
    records: dict[str, InvoiceRecord] = {}
    for page in [*stored, *resumed]:
        records.update((i.invoice_id, i) for i in page.invoices)
    assert f"qbo-{old['Id']}" not in records
    paid = [records[f"qbo-{i}"] for i in history]
    assert [r.paid_date for r in paid] == [date(2025, 7, 10 + n) for n in range(5)]
    assert {r.status for r in paid} == {InvoiceStatus.PAID}
    assert paid[0].amount_paid == Decimal("100.00")
    assert records[f"qbo-{voided['Id']}"].status is InvoiceStatus.VOID
    assert len([r for r in records.values() if r.status is InvoiceStatus.OPEN]) == 3

    before = fake.count("query")
    list(connect(fake, paid_lookback_days=365, token_store=tokens)
         .pages(resumed[-1].cursor, full=False))
    assert fake.count("query") == before and fake.count("cdc") == 1


def test_approved_reminders_of_quickbooks_invoices_are_also_sent_by_quickbooks_once(
        fake: QuickBooksFake, db: Engine) -> None:
    """QUICKBOOKS_SEND_INVOICES: the email goes out (outbox), which queues `Invoice.send` in
    the same transaction; the QuickBooks call is made once, however often delivery runs."""
    from email.message import EmailMessage

    from dunning.policy import DEFAULT_POLICY
    from services.cards import Person, Roles, approve_draft, ensure_draft, load_card
    from services.common import Actor
    from services.delivery import deliver_outbox
    from services.planning import run_cycle
    from services.sync import deliver_quickbooks_sends, sync_billing

    class Sink:
        def __init__(self) -> None:
            self.sent: list[EmailMessage] = []

        def send(self, message: EmailMessage) -> None:
            self.sent.append(message)

    customer = fake.add_customer("Send Co", email="ap@send.example")
    invoice = fake.add_invoice(customer, "1200.00", txn_date=date(2026, 10, 2),
                               due_date=date(2026, 11, 2))  # 20 days late: firm notice
    now = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
    qbo = connect(fake)  # one instance: the fake rotates refresh tokens
    sync_billing(db, qbo, policy=DEFAULT_POLICY, now=now, full=True)
    with session_scope(db) as s:
        result = run_cycle(s, DEFAULT_POLICY, date(2026, 11, 24), actor=Actor("scheduler"),
                           now=now)
        esc = s.exec(select(t.Escalation).where(
            t.Escalation.kind == "customer_message")).one()
        assert esc.id is not None and result.created
        ensure_draft(s, esc.id, sender_name="AR", now=now)
        card = load_card(s, DEFAULT_POLICY, esc.id, date(2026, 11, 24))
        assert card.draft is not None
        approve_draft(s, card, roles=Roles(finance=frozenset({"U_FIN"})),
                      person=Person("U_FIN", "fin@example.com"), subject=card.draft.subject,
                      body=card.draft.body, sender="ar@vendor.example", now=now)
    sink = Sink()
    assert len(deliver_outbox(db, sink, now=now, quickbooks_send=True).sent) == 1

    def send(iid: str, to: str, request_id: str) -> None:
        qbo.send_invoice(iid, to, request_id=request_id)

    assert deliver_quickbooks_sends(db, send, now=now)["sent"] == 1
    assert deliver_quickbooks_sends(db, send, now=now)["sent"] == 0
    assert fake.sent == [(invoice["Id"], "ap@send.example")]
    assert len(sink.sent) == 1
