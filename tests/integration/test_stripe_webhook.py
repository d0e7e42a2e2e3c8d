"""POST /stripe/webhook on the real web app (uvicorn), with events made by the loopback
Stripe, signed as Stripe signs them, and cards updated in the Slack sandbox."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from typing import Any

import pytest
import stripe
from sqlalchemy import Engine, create_engine, func
from sqlmodel import select

from bot.app import build_app
from bot.deps import Deps, build_deps
from bot.sandbox.slack_api import SlackSandbox
from bot.settings import load_settings
from bot.web import build_web
from connectors.slack import SlackMessenger, make_client
from dunning.model import CustomerContext
from handlers.jobs import post_cards
from services.common import Actor
from services.importing import upsert_ledger
from services.planning import run_cycle
from services.sync import sync_billing
from store import tables as t
from store.engine import session_scope
from store.repository import customer_context
from tests.fakes.stripe_fake import StripeFake, at, send_webhook
from tests.fakes.stripe_fake import localstripe_url as localstripe_url
from tests.fakes.stripe_fake import stripe_fake as stripe_fake
from tests.integration.test_slack_app import _serve
from tests.integration.test_stripe_connector import Seller

SECRET = "whsec_test_secret"
TOKEN = "xoxb-test"
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
TODAY = date(2026, 11, 24)


@dataclass
class World:
    seller: Seller
    deps: Deps
    sandbox: SlackSandbox
    url: str
    db: Engine
    invoice: str  # open, 14 days past due, owned by dana, with its escalation posted
    customer: str

    def send(self, event: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        status, body = send_webhook(f"{self.url}/stripe/webhook", event, kw.pop(
            "secret", SECRET), **kw)
        return status, json.loads(body)

    def row(self) -> t.Invoice:
        with session_scope(self.db) as s:
            inv = s.get(t.Invoice, self.invoice)
            assert inv is not None
            return inv

    def count(self, model: Any, *where: Any) -> int:
        with session_scope(self.db) as s:
            return int(s.exec(select(func.count()).select_from(model).where(*where)).one())


@pytest.fixture
def w(db: Engine, stripe_fake: StripeFake) -> Iterator[World]:
    stripe_fake.set_time(at(2026, 10, 11, 15))
    client = stripe.StripeClient("sk_test_fake_123",
                                 base_addresses={"api": stripe_fake.base_url},
                                 max_network_retries=0)
    seller = Seller(stripe_fake, client)
    customer = seller.customer("Tailspin Toys", "ap@tailspin.example", "US",
                               tz="America/New_York")
    invoice = seller.invoice(customer, 250_000, "usd", due=at(2026, 11, 10, 17))
    stripe_fake.set_time(NOW)
    sync_billing(db, seller.source(), policy=load_settings().load_policy(), now=NOW)
    with session_scope(db) as s:  # the CRM's part: who owns the account
        row = s.get(t.Customer, customer)
        assert row is not None
        ctx: CustomerContext = replace(customer_context(row), owner_email="dana@example.com")
        upsert_ledger(s, customers=[ctx], invoices=[], source="hubspot", actor=Actor("crm"),
                      now=NOW, policy=load_settings().load_policy())
    with SlackSandbox(token=TOKEN) as sandbox:
        sandbox.add_user("dana@example.com", "dana")
        settings = load_settings(
            database_url=db.url.render_as_string(hide_password=False),
            slack_bot_token=TOKEN, slack_signing_secret="slack-secret",
            slack_api_url=sandbox.base_url, stripe_webhook_secret=SECRET)
        slack = make_client(TOKEN, sandbox.base_url)
        deps = build_deps(settings, SlackMessenger(slack), clock=lambda: NOW, engine=db)
        with session_scope(db) as s:
            run_cycle(s, deps.policy, TODAY, actor=Actor("scheduler"), now=NOW)
        assert post_cards(deps).failed == []
        app = build_app(deps, slack, signing_secret="slack-secret")
        server, thread, url = _serve(build_web(app, deps))
        try:
            yield World(seller, deps, sandbox, url, db, invoice, customer)
        finally:
            server.should_exit = True
            thread.join(timeout=5)


def pay(w: World) -> dict[str, Any]:
    w.seller.client.v1.invoices.pay(w.invoice, params={"paid_out_of_band": True})
    return w.seller.fake.event_of("invoice.paid", w.invoice)


def card_message(w: World) -> Any:
    with session_scope(w.db) as s:
        esc = s.exec(select(t.Escalation).where(t.Escalation.invoice_id == w.invoice)).one()
    assert esc.slack_channel and esc.slack_ts
    return next(m for m in w.sandbox.messages(esc.slack_channel) if m.ts == esc.slack_ts), esc


def test_a_payment_closes_the_escalation_and_updates_its_card_in_one_request(w: World
                                                                             ) -> None:
    before, esc = card_message(w)
    assert esc.state == "posted" and "Closed" not in json.dumps(before.blocks)
    status, body = w.send(pay(w))
    assert status == 200 and body["result"] == "applied"
    assert body["closed_escalations"] == [esc.id]
    after, esc = card_message(w)
    assert esc.state == "closed"
    assert "Closed: invoice paid" in json.dumps(after.blocks)
    row = w.row()
    assert row.status == "paid" and row.amount_paid_minor == 250_000
    assert row.paid_date == date(2026, 11, 24) and row.next_action_on is None


def test_a_duplicate_delivery_has_one_effect(w: World) -> None:
    event = pay(w)
    assert w.send(event)[1]["result"] == "applied"
    status, body = w.send(event)
    assert status == 200 and body["result"] == "duplicate"
    assert w.count(t.Payment, t.Payment.invoice_id == w.invoice) == 1
    assert w.count(t.WebhookEvent) == 1
    assert w.count(t.AuditEvent, t.AuditEvent.action == "escalation.closed") == 1


@pytest.mark.parametrize("how", ["forged", "stale", "missing", "garbled"])
def test_bad_signatures_get_400_and_change_nothing(w: World, how: str) -> None:
    event = pay(w)
    variants: dict[str, dict[str, Any]] = {
        "forged": {"secret": "whsec_someone_else"},
        "stale": {"timestamp": int(time.time()) - 301},
        "missing": {"secret": None},
        "garbled": {"signature": "t=abc,v2=zzz"},
    }
    kw = variants[how]
    status, body = w.send(event, **kw)
    assert status == 400 and body["error"] == "signature verification failed"
    assert body["reason"]
    assert w.row().status == "open" and w.count(t.WebhookEvent) == 0
    assert card_message(w)[1].state == "posted"


def test_a_late_open_snapshot_never_reopens_a_paid_invoice(w: World) -> None:
    w.seller.client.v1.invoices.update(w.invoice, params={"description": "PO 7781"})
    late = w.seller.fake.event_of("invoice.updated", w.invoice)  # open, older
    w.seller.fake.advance(60)
    assert w.send(pay(w))[1]["result"] == "applied"
    status, body = w.send(late)
    assert status == 200 and body["result"].startswith("stale")
    assert w.row().status == "paid"


def test_a_failed_charge_event_sets_payment_failed_on(w: World) -> None:
    s = w.seller
    auto = s.customer("Autopay Ltd", "ap@autopay.example", "GB", card="4000000000000341")
    inv = s.invoice(auto, 9_900, "gbp", auto=True)
    with pytest.raises(Exception, match="declined"):
        s.client.v1.invoices.pay(inv)
    status, body = w.send(s.fake.event_of("invoice.payment_failed", inv))
    assert status == 200 and body["result"] == "applied"
    with session_scope(w.db) as ses:
        row = ses.get(t.Invoice, inv)
        assert row is not None and row.payment_failed_on == date(2026, 11, 24)
        assert row.status == "open"
        assert ses.get(t.Customer, auto) is not None  # made from the invoice snapshot


def test_a_slack_failure_does_not_fail_the_webhook(w: World) -> None:
    w.sandbox.fail_next("chat.update", status=500, times=10)
    status, body = w.send(pay(w))
    assert status == 200 and body["result"] == "applied"
    assert card_message(w)[1].state == "closed"


def test_database_down_answers_503_so_stripe_retries(w: World) -> None:
    down = replace(w.deps, engine=create_engine(
        "postgresql+psycopg://postgres@127.0.0.1:1/none", connect_args={"connect_timeout": 1}))
    app = build_app(down, make_client(TOKEN, w.sandbox.base_url), signing_secret="x")
    server, thread, url = _serve(build_web(app, down))
    try:
        status, _ = send_webhook(f"{url}/stripe/webhook", pay(w), SECRET)
    finally:
        server.should_exit = True
        thread.join(timeout=5)
    assert status == 503
    assert w.row().status == "open"
