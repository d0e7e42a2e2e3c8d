"""StripeBilling against a loopback Stripe: the real stripe-python client talks HTTP to
`StripeFake` (invoices, events) in front of a real localstripe (customers, cards, charges).
Every fixture is created through the same SDK, so the requests are the real ones."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine, func
from sqlmodel import select

from connectors.base import BillingPage
from connectors.errors import AuthError, UnavailableError
from connectors.stripe_billing import StripeBilling
from dunning.model import InvoiceStatus
from dunning.policy import DEFAULT_POLICY
from services.sync import load_cursor, sync_billing
from store import tables as t
from store.engine import session_scope
from tests.fakes.stripe_fake import API_KEY, StripeFake, at
from tests.fakes.stripe_fake import localstripe_url as localstripe_url
from tests.fakes.stripe_fake import stripe_fake as stripe_fake

START = at(2026, 11, 2, 15)  # when the invoices are issued
DUE = at(2026, 11, 30, 3)  # 03:00 UTC: still the 29th in the Americas


@dataclass
class Seller:
    """A Stripe account seen through the SDK: customers, cards and invoices."""

    fake: StripeFake
    client: stripe.StripeClient
    sleeps: list[float] = field(default_factory=list)

    def customer(self, name: str, email: str, country: str, *, tz: str | None = None,
                 card: str | None = None, ap_name: str | None = None) -> str:
        metadata = {k: v for k, v in (("timezone", tz), ("ap_contact_name", ap_name)) if v}
        cus = self.client.v1.customers.create(params={
            "name": name, "email": email, "address": {"country": country},
            "metadata": metadata})
        if card:
            pm = self.client.v1.payment_methods.create(params={
                "type": "card", "card": {"number": card, "exp_month": 12, "exp_year": 2030,
                                         "cvc": "123"}})
            self.client.v1.payment_methods.attach(pm.id, params={"customer": cus.id})
            self.client.v1.customers.update(cus.id, params={
                "invoice_settings": {"default_payment_method": pm.id}})
        return str(cus.id)

    def invoice(self, customer: str, minor: int, currency: str = "usd", *,
                auto: bool = False, due: int | None = DUE, finalize: bool = True) -> str:
        self.client.v1.invoice_items.create(params={
            "customer": customer, "amount": minor, "currency": currency})
        params: dict[str, Any] = {"customer": customer}
        if auto:
            params["collection_method"] = "charge_automatically"
        else:
            params.update(collection_method="send_invoice", due_date=due)
        inv = self.client.v1.invoices.create(params=params)  # type: ignore[arg-type]
        if finalize:
            self.client.v1.invoices.finalize_invoice(inv.id)
        return str(inv.id)

    def source(self, **kw: Any) -> StripeBilling:
        kw.setdefault("page_size", 100)
        kw.setdefault("timeout", 5.0)
        # Open invoices only unless a test asks for the paid history (tested on its own).
        kw.setdefault("paid_lookback_days", 0)
        return StripeBilling(API_KEY, self.fake.base_url, "America/New_York", "US",
                             sleep=self.sleeps.append, clock=lambda: self.fake.now, **kw)


@pytest.fixture
def seller(stripe_fake: StripeFake) -> Iterator[Seller]:
    stripe_fake.set_time(START)
    client = stripe.StripeClient(API_KEY, base_addresses={"api": stripe_fake.base_url},
                                 max_network_retries=0)
    yield Seller(stripe_fake, client)


def invoice_ids(pages: list[BillingPage]) -> list[str]:
    return [i.invoice_id for p in pages for i in p.invoices]


def test_backfill_pages_open_invoices_with_exact_amounts_and_local_dates(seller: Seller
                                                                         ) -> None:
    acme = seller.customer("Acme GmbH", "AP@Acme.de", "DE", tz="Europe/Berlin",
                           ap_name="Jutta Ap")
    kyoto = seller.customer("Kyoto KK", "ar@kyoto.jp", "JP")
    west = seller.customer("West LLC", "pay@west.example", "US", tz="America/Los_Angeles")
    eur = seller.invoice(acme, 123456, "eur")
    jpy = seller.invoice(kyoto, 150000, "jpy")
    usd = seller.invoice(west, 99, "usd")
    extra = [seller.invoice(west, 1000 + n) for n in range(2)]
    paid = seller.invoice(west, 500)
    seller.client.v1.invoices.pay(paid, params={"paid_out_of_band": True})
    void = seller.invoice(west, 700)
    seller.client.v1.invoices.void_invoice(void)
    draft = seller.invoice(west, 800, finalize=False)

    pages = list(seller.source(page_size=2).pages(None, full=True))

    assert [len(p.invoices) for p in pages] == [2, 2, 1]
    assert sorted(invoice_ids(pages)) == sorted([eur, jpy, usd, *extra])
    assert not {paid, void, draft} & set(invoice_ids(pages))
    # One list call per page, plus the event position noted before the first one.
    assert [p.api_calls for p in pages] == [2, 1, 1]
    assert [json.loads(p.cursor or "")["phase"] for p in pages] == [
        "backfill", "backfill", "events"]
    records = {i.invoice_id: i for p in pages for i in p.invoices}
    assert records[eur].amount == Decimal("1234.56") and records[eur].currency == "EUR"
    assert records[jpy].amount == Decimal("150000") and records[jpy].currency == "JPY"
    assert records[usd].amount == Decimal("0.99") and records[usd].amount_paid == 0
    assert records[eur].due_date == date(2026, 11, 30)  # 04:00 in Berlin
    assert records[jpy].due_date == date(2026, 11, 30)  # 12:00 in Tokyo
    assert records[usd].due_date == date(2026, 11, 29)  # 19:00 the day before in LA
    assert records[usd].issue_date == date(2026, 11, 2)
    assert records[eur].status is InvoiceStatus.OPEN and records[eur].number.startswith("FAKE-")
    assert records[eur].payment_link == seller.fake.invoices[eur]["hosted_invoice_url"]
    assert records[eur].payment_failed_on is None
    customers = {c.customer_id: c for p in pages for c in p.customers}
    assert customers[acme].timezone == "Europe/Berlin" and customers[acme].country == "DE"
    assert customers[acme].ap_contact_email == "AP@Acme.de"
    assert customers[acme].ap_contact_name == "Jutta Ap" and not customers[acme].autopay
    assert customers[kyoto].timezone == "Asia/Tokyo"  # no metadata: the country's zone
    assert customers[kyoto].currency == "JPY"
    domains = {k: v for p in pages for k, v in p.customer_domains.items()}
    assert domains == {acme: "acme.de", kyoto: "kyoto.jp", west: "west.example"}


def test_failed_automatic_charge_sets_payment_failed_on_and_autopay(seller: Seller) -> None:
    declines = seller.customer("Decline Co", "ap@decline.example", "GB",
                               card="4000000000000341")
    good = seller.customer("Good Co", "ap@good.example", "GB", card="4242424242424242")
    failing = seller.invoice(declines, 4200, "gbp", auto=True)
    paying = seller.invoice(good, 4200, "gbp", auto=True)
    seller.fake.advance(3600)
    with pytest.raises(stripe.CardError):
        seller.client.v1.invoices.pay(failing)
    seller.client.v1.invoices.pay(paying)

    pages = list(seller.source().pages(None, full=True))

    [record] = [i for p in pages for i in p.invoices]
    assert record.invoice_id == failing
    assert record.payment_failed_on == date(2026, 11, 2)  # the first attempt, London date
    assert record.due_date == date(2026, 11, 2)  # charged automatically: due when issued
    [customer] = [c for p in pages for c in p.customers]
    assert customer.customer_id == declines and customer.autopay
    assert seller.fake.invoices[paying]["status"] == "paid"


def test_incremental_sync_returns_only_changes_with_few_calls(seller: Seller) -> None:
    west = seller.customer("West LLC", "pay@west.example", "US")
    east = seller.customer("East Inc", "ap@east.example", "US")
    ids = [seller.invoice(west if n % 2 else east, 10_000 + n) for n in range(30)]
    source = seller.source(page_size=10)
    backfill = list(source.pages(None, full=True))
    assert len(invoice_ids(backfill)) == 30
    cursor = backfill[-1].cursor

    seller.fake.advance(600)
    seller.client.v1.invoices.pay(ids[3], params={"paid_out_of_band": True})
    seller.client.v1.invoices.void_invoice(ids[4])
    seller.client.v1.invoices.mark_uncollectible(ids[5])
    seller.client.v1.customers.update(east, params={"name": "East Incorporated"})
    calls_before = seller.fake.api_calls()
    pages = list(source.pages(cursor, full=False))

    changed = {i.invoice_id: i.status for p in pages for i in p.invoices}
    assert changed == {ids[3]: InvoiceStatus.PAID, ids[4]: InvoiceStatus.VOID,
                       ids[5]: InvoiceStatus.UNCOLLECTIBLE}
    paid = next(i for p in pages for i in p.invoices if i.invoice_id == ids[3])
    assert paid.amount_paid == Decimal("100.03") and paid.paid_date == date(2026, 11, 2)
    names = {c.customer_id: c.name for p in pages for c in p.customers}
    assert names[east] == "East Incorporated"
    calls = sum(p.api_calls for p in pages)
    assert calls == seller.fake.api_calls() - calls_before
    assert calls <= 3  # one event page, one customer fetch, nothing per ledger invoice

    again = list(source.pages(pages[-1].cursor, full=False))
    assert invoice_ids(again) == [] and sum(p.api_calls for p in again) == 1


def test_changes_made_during_a_backfill_come_with_the_next_incremental(seller: Seller
                                                                       ) -> None:
    west = seller.customer("West LLC", "pay@west.example", "US")
    ids = [seller.invoice(west, 1000 + n) for n in range(4)]
    source = seller.source(page_size=2)
    pages = source.pages(None, full=True)
    first = next(pages)
    seller.fake.advance(60)
    listed_later = next(i for i in ids if i not in invoice_ids([first]))
    seller.client.v1.invoices.pay(listed_later, params={"paid_out_of_band": True})
    late = seller.invoice(west, 4242)  # newer than the listing's position: not listed
    rest = list(pages)
    assert late not in invoice_ids([first, *rest])

    follow = list(source.pages(rest[-1].cursor, full=False))

    statuses = {i.invoice_id: i.status for p in follow for i in p.invoices}
    assert statuses[late] is InvoiceStatus.OPEN
    assert statuses[listed_later] is InvoiceStatus.PAID


def test_rate_limit_storm_server_errors_timeouts_and_drops_are_retried(seller: Seller
                                                                       ) -> None:
    west = seller.customer("West LLC", "pay@west.example", "US")
    ids = {seller.invoice(west, 1000 + n) for n in range(5)}
    fake = seller.fake
    fake.fail("/v1/invoices", "429", times=3, retry_after="2")
    fake.fail("/v1/invoices", "500", times=2)
    fake.fail("/v1/invoices", "slow", delay=1.5)
    fake.fail("/v1/invoices", "drop")
    fake.fail("/v1/events", "429", times=1, retry_after="1")

    pages = list(seller.source(page_size=2, attempts=10, timeout=0.4).pages(None, full=True))

    assert set(invoice_ids(pages)) == ids and len(invoice_ids(pages)) == 5
    # Retry-After is honoured (2 s for invoices, 1 s for events); the rest back off.
    assert seller.sleeps.count(2.0) == 3 and seller.sleeps.count(1.0) >= 1
    assert len(seller.sleeps) == 3 + 2 + 1 + 1 + 1
    assert sum(p.api_calls for p in pages) == 1 + 1 + 3 + 7  # events, pages, retries


def test_a_vendor_outage_beyond_the_attempts_raises_unavailable(seller: Seller) -> None:
    seller.invoice(seller.customer("West LLC", "pay@west.example", "US"), 1000)
    seller.fake.fail("/v1/invoices", "500", times=10)
    with pytest.raises(UnavailableError, match="stripe"):
        list(seller.source(attempts=3).pages(None, full=True))
    assert len(seller.sleeps) == 2


def test_a_crash_mid_page_resumes_from_the_cursor_without_duplicates_or_gaps(
        seller: Seller) -> None:
    west = seller.customer("West LLC", "pay@west.example", "US")
    ids = {seller.invoice(west, 1000 + n) for n in range(7)}
    seller.fake.fail("/v1/invoices", "drop", skip=2)  # the third page is cut mid-body
    stored: list[BillingPage] = []
    with pytest.raises(UnavailableError):
        for page in seller.source(page_size=2, attempts=1).pages(None, full=True):
            stored.append(page)
    assert len(stored) == 2
    resumed = list(seller.source(page_size=2).pages(stored[-1].cursor, full=False))
    every = invoice_ids(stored) + invoice_ids(resumed)
    assert sorted(every) == sorted(ids)  # no duplicate, nothing lost
    first_resumed = [c for c in seller.fake.calls if c[1] == "/v1/invoices"][-len(resumed)]
    assert first_resumed[2]["starting_after"] == invoice_ids(stored)[-1]


def test_sync_into_the_ledger_resumes_after_a_crash(seller: Seller, db: Engine) -> None:
    west = seller.customer("West LLC", "pay@west.example", "US")
    ids = {seller.invoice(west, 1000 + n) for n in range(5)}
    now = datetime(2026, 11, 2, 16, tzinfo=UTC)
    seller.fake.fail("/v1/invoices", "drop", skip=1)
    with pytest.raises(UnavailableError):
        sync_billing(db, seller.source(page_size=2, attempts=1), policy=DEFAULT_POLICY,
                     now=now)
    with session_scope(db) as s:
        assert json.loads(load_cursor(s, "stripe") or "")["phase"] == "backfill"
        assert s.exec(select(func.count()).select_from(t.Invoice)).one() == 2
    report = sync_billing(db, seller.source(page_size=2), policy=DEFAULT_POLICY, now=now)
    assert report.invoices_seen == 3
    with session_scope(db) as s:
        assert set(s.exec(select(t.Invoice.id))) == ids
        created = s.exec(select(func.count()).select_from(t.AuditEvent).where(
            t.AuditEvent.action == "invoice.created")).one()
        assert created == 5
        assert json.loads(load_cursor(s, "stripe") or "")["phase"] == "events"


def test_a_bad_key_is_an_auth_error_that_names_the_setting(seller: Seller) -> None:
    bad = StripeBilling("sk_test_wrong_key", seller.fake.base_url, "UTC", "US",
                        sleep=seller.sleeps.append)
    with pytest.raises(AuthError) as err:
        bad.check()
    assert "STRIPE_API_KEY" in str(err.value) and "sk_test_wrong_key" not in str(err.value)
    assert seller.sleeps == []  # a person must act: no retries


def test_check_says_what_works_in_one_line(seller: Seller) -> None:
    line = seller.source().check()
    assert line.startswith("stripe: OK") and "\n" not in line and API_KEY not in line


def test_a_full_sync_reads_by_id_the_ledger_open_invoices_it_did_not_list(
        seller: Seller, db: Engine) -> None:
    """Paid or voided while no event cursor covered them (events older than Stripe keeps,
    or a fresh cursor): a backfill lists open invoices only, so the sync reads the rest."""
    west = seller.customer("West LLC", "pay@west.example", "US")
    paid, voided, still = (seller.invoice(west, 1000 + n) for n in range(3))
    now = datetime(2026, 11, 2, 16, tzinfo=UTC)
    sync_billing(db, seller.source(), policy=DEFAULT_POLICY, now=now)
    seller.client.v1.invoices.pay(paid, params={"paid_out_of_band": True})
    seller.client.v1.invoices.void_invoice(voided)
    report = sync_billing(db, seller.source(), policy=DEFAULT_POLICY, now=now, full=True)
    assert report.refreshed == 2
    with session_scope(db) as s:
        status = {i.id: i.status for i in s.exec(select(t.Invoice))}
    assert status == {paid: "paid", voided: "void", still: "open"}


def test_a_full_backfill_brings_the_paid_history_of_the_lookback_with_paid_dates(
        seller: Seller, db: Engine) -> None:
    """Risk scoring needs each customer's settled invoices: the backfill lists the invoices
    paid within `paid_lookback_days` after the open ones, resumably, and only its very last
    page hands over to the event cursor; an incremental run reads events only."""
    west = seller.customer("West LLC", "pay@west.example", "US")
    seller.fake.set_time(at(2025, 10, 1))
    too_old = seller.invoice(west, 100, due=at(2025, 10, 31))
    seller.client.v1.invoices.pay(too_old, params={"paid_out_of_band": True})
    seller.fake.set_time(at(2026, 7, 1))
    history = []
    for n in range(3):
        inv = seller.invoice(west, 2000 + n, due=at(2026, 7, 31))
        seller.fake.set_time(at(2026, 8, 10 + n, 20))  # 16:00 in New York: paid on the day
        seller.client.v1.invoices.pay(inv, params={"paid_out_of_band": True})
        history.append(inv)
    voided = seller.invoice(west, 700)
    seller.client.v1.invoices.void_invoice(voided)
    seller.fake.set_time(START)
    open_ = [seller.invoice(west, 1000 + n) for n in range(3)]
    source = seller.source(page_size=2, paid_lookback_days=365,
                           attempts=1)  # the clock is the fake's: 2026-11-02

    seller.fake.fail("/v1/invoices", "drop", skip=3)  # open 1, open 2, paid 1, then a drop
    with pytest.raises(UnavailableError):
        sync_billing(db, source, policy=DEFAULT_POLICY, now=datetime(2026, 11, 2, tzinfo=UTC))
    with session_scope(db) as s:
        cursor = json.loads(load_cursor(s, "stripe") or "")
    assert (cursor["phase"], cursor["part"]) == ("backfill", "paid")
    assert cursor["paid_since"] == at(2026, 11, 2, 15) - 365 * 86400

    report = sync_billing(db, seller.source(page_size=2, paid_lookback_days=365),
                          policy=DEFAULT_POLICY, now=datetime(2026, 11, 2, tzinfo=UTC))
    assert report.invoices_seen == 1  # resumed after the stored paid page, nothing repeated
    paid_calls = [c[2] for c in seller.fake.calls
                  if c[1] == "/v1/invoices" and c[2].get("status") == "paid"]
    assert paid_calls and all(c["created"] == {"gte": str(cursor["paid_since"])}
                              for c in paid_calls)
    with session_scope(db) as s:
        rows = {i.id: i for i in s.exec(select(t.Invoice))}
        assert json.loads(load_cursor(s, "stripe") or "")["phase"] == "events"
    assert set(rows) == {*open_, *history}  # not the one paid before the lookback, no void
    assert [rows[i].paid_date for i in history] == [date(2026, 8, 10 + n) for n in range(3)]
    assert {rows[i].status for i in history} == {"paid"}
    assert rows[history[0]].amount_paid_minor == 2000

    before = len(seller.fake.calls)
    sync_billing(db, seller.source(page_size=2, paid_lookback_days=365),
                 policy=DEFAULT_POLICY, now=datetime(2026, 11, 2, tzinfo=UTC))
    assert not [c for c in seller.fake.calls[before:] if c[1] == "/v1/invoices"]
