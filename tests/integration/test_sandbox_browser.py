"""The sandbox page in headless Chromium (Playwright driving Debian's /usr/bin/chromium).

A person opens the page, approves a draft in its modal, logs a promise, snoozes a card,
asks `/dunning status acme`, switches to an outsider and is refused, reads the digest and
moves to the next business day. Every click goes from the browser to the page server,
which signs it like Slack for the real bot's /slack/events; after each step the ledger in
the database and the card on the page are checked. Screenshots land in
`test-artifacts/sandbox/` (git-ignored) for a person to look at.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from blocks.ids import SnoozePreset
from blocks.modals import calendar_quarter_end, snooze_until
from bot.sandbox.page import build_page
from bot.sandbox.screenshot import chromium_path
from bot.sandbox.workspace import BackgroundServer, Workspace, bind_loopback, serve_in_thread
from dunning.money import format_money, from_minor
from services.planning import LAST_CYCLE_KEY
from store import tables as t
from store.engine import session_scope
from store.repository import get_meta

playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright for Python is not installed: "
    "pip install playwright (it drives the system Chromium; no browser download)")

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "sandbox"
TODAY = date(2026, 11, 24)
STEP_MS = 5_000  # the longest any one step may take in the browser


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        pytest.skip("no Chromium found (looked for /usr/bin/chromium and on PATH): "
                    "apt-get install chromium")
    with playwright_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def served(db_url: str) -> Iterator[tuple[Workspace, BackgroundServer]]:
    with Workspace(db_url=db_url, today=TODAY, ticking=False) as ws:
        ws.run_day()
        sock = bind_loopback()
        page = serve_in_thread(build_page(ws, port=sock.getsockname()[1]), sock,
                               name="sandbox-page")
        try:
            yield ws, page
        finally:
            page.stop()


@pytest.fixture
def page(browser: Any, served: tuple[Workspace, BackgroundServer]) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(STEP_MS)
    errors: list[str] = []
    opened.on("pageerror", lambda exc: errors.append(str(exc)))
    try:
        yield opened
    finally:
        context.close()
    assert errors == [], f"JavaScript errors on the page: {errors}"


class Shots:
    def __init__(self, request: pytest.FixtureRequest) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.prefix = re.sub(r"\W+", "-", request.node.name).strip("-")

    def path(self, name: str) -> str:
        return str(ARTIFACTS / f"{self.prefix}-{name}.png")


def escalation(ws: Workspace, number: str) -> t.Escalation:
    with session_scope(ws.deps.engine) as s:
        invoice = s.exec(select(t.Invoice).where(t.Invoice.number == number)).one()
        row = s.exec(select(t.Escalation).where(t.Escalation.invoice_id == invoice.id,
                                                t.Escalation.plan_date == TODAY)).one()
        s.expunge(row)
        return row


def act_as(page: Any, key: str, channel: str) -> None:
    page.select_option("#persona", key)
    page.locator(f'.channel-link[data-name="{channel}"]').click()
    playwright_api.expect(page.locator("#channel-name")).to_have_text(f"# {channel}")


def card(page: Any, customer: str) -> Any:
    return page.locator(".msg-wrap", has=page.locator(".header", has_text=customer))


def submit_modal(page: Any) -> None:
    page.locator(".modal-foot .btn-primary").click()
    playwright_api.expect(page.locator("#modal-layer")).to_be_hidden()


def test_a_day_in_the_sandbox_from_the_browser(
        page: Any, served: tuple[Workspace, BackgroundServer],
        request: pytest.FixtureRequest) -> None:
    expect = playwright_api.expect
    ws, server = served
    shots = Shots(request)
    page.goto(f"{server.url}/")
    expect(page.locator("#today")).to_have_text("Tue 24 Nov 2026")

    # 1. Mei (the AE) approves the Juniper Labs nudge after editing the subject.
    act_as(page, "mei", "ar-mei")
    juniper = card(page, "Juniper Labs Inc")
    juniper.get_by_role("button", name="Approve & send…").click()
    modal = page.locator(".modal")
    expect(modal.locator(".modal-title")).to_have_text("Approve & send")
    page.screenshot(path=shots.path("1-approve-modal"))
    subject = "Invoice 2026-00404: a friendly reminder"
    modal.locator('[data-block-id="subject"] input').fill(subject)
    submit_modal(page)
    expect(juniper).to_contain_text("Approved by @Mei Tanaka")
    expect(juniper.get_by_role("button", name="Approve & send…")).to_have_count(0)
    juniper.locator(".blk").last.scroll_into_view_if_needed()  # taller than the window
    page.screenshot(path=shots.path("2-approved-card"))
    row = escalation(ws, "2026-00404")
    assert row.state == "approved" and row.handled_by == ws.persona("mei").user_id
    with session_scope(ws.deps.engine) as s:
        [queued] = s.exec(select(t.Outbox)).all()
        assert json.loads(queued.payload)["subject"] == subject
        assert json.loads(queued.payload)["to"] == ["ap@juniperlabs.example"]

    # 2. A promise to pay on Cedar Health, with the date picked in the modal.
    cedar = card(page, "Cedar Health Ltd")
    cedar.get_by_role("button", name="Promise to pay").click()
    expect(modal.locator(".modal-title")).to_have_text("Promise to pay")
    modal.locator('[data-block-id="date"] input[type="date"]').fill("2026-12-04")
    page.screenshot(path=shots.path("3-promise-modal"))
    submit_modal(page)
    expect(cedar.get_by_role("button", name="Promise to pay")).to_have_count(0)
    row = escalation(ws, "2026-00356")
    assert row.state == "skipped" and "2026-12-04" in (row.note or "")
    with session_scope(ws.deps.engine) as s:
        [promise] = s.exec(select(t.Promise).where(t.Promise.invoice_id == row.invoice_id,
                                                   t.Promise.status == "open")).all()
        assert promise.promised_date == date(2026, 12, 4)
        assert promise.created_by == "mei.tanaka@example.com"

    # 3. Snooze Redwood Health for a week.
    redwood = card(page, "Redwood Health Ltd")
    redwood.get_by_role("button", name="Snooze").click()
    expect(modal.locator(".modal-title")).to_have_text("Snooze")
    modal.locator(f'input[type="radio"][value="{SnoozePreset.ONE_WEEK.value}"]').check()
    page.locator(".modal-foot .btn-primary").click()  # no reason yet: Slack's client refuses
    expect(modal.locator('[data-block-id="reason"] .input-error')).to_be_visible()
    modal.locator('[data-block-id="reason"] input').fill("Owner on leave this week")
    submit_modal(page)
    until = snooze_until(SnoozePreset.ONE_WEEK, today=TODAY,
                         quarter_end=calendar_quarter_end(TODAY), custom=None)
    assert until is not None
    expect(redwood).to_contain_text(until.isoformat())
    row = escalation(ws, "2026-00415")
    assert row.state == "skipped"
    with session_scope(ws.deps.engine) as s:
        invoice = s.get(t.Invoice, row.invoice_id)
        assert invoice is not None
        [snooze] = s.exec(select(t.Snooze).where(t.Snooze.target == invoice.customer_id)).all()
        assert snooze.until == until and snooze.reason == "Owner on leave this week"
    redwood.screenshot(path=shots.path("4-snoozed-card"))

    # 4. Finance asks for Acme's status; the answer is theirs alone.
    act_as(page, "fatima", "ar-mei")
    page.locator("#composer-input").fill("/dunning status acme")
    page.locator("#composer-input").press("Enter")
    answer = page.locator(".msg-wrap.ephemeral", has_text="Acme Corporation")
    expect(answer).to_be_visible()
    with session_scope(ws.deps.engine) as s:
        acme = s.exec(select(t.Invoice).where(t.Invoice.customer_id == "C-1001",
                                              t.Invoice.status == "open")).all()
        open_minor = sum(i.amount_minor - i.amount_paid_minor for i in acme)
    expect(answer).to_contain_text(format_money(from_minor(open_minor, "USD"), "USD"))
    assert from_minor(open_minor, "USD") > Decimal(0)
    answer.screenshot(path=shots.path("5-status-acme"))

    # 5. The outsider sees neither finance's answer nor may act on a card.
    act_as(page, "oscar", "ar-mei")
    expect(page.locator(".msg-wrap.ephemeral")).to_have_count(0)
    act_as(page, "oscar", "ar-luis")
    summit = card(page, "Summit Logistics Inc")
    summit.get_by_role("button", name="Approve & send…").click()
    refusal = page.locator(".msg-wrap.ephemeral", has_text="Sorry, only")
    expect(refusal).to_be_visible()
    expect(page.locator("#modal-layer")).to_be_hidden()
    assert escalation(ws, "2026-00333").state == "posted"
    page.screenshot(path=shots.path("6-outsider-refused"))

    # 6. The manager's digest carries the DSO chart.
    act_as(page, "morgan", "ar-managers")
    chart = page.locator(".msg-wrap img.image").first
    expect(chart).to_be_visible()
    assert chart.evaluate("img => img.complete && img.naturalWidth > 0")
    chart.scroll_into_view_if_needed()
    page.screenshot(path=shots.path("7-digest"))

    # 7. Next business day: the clock moves and that day's cycle runs.
    page.locator("#next-day").click()
    expect(page.locator("#today")).to_have_text("Wed 25 Nov 2026")
    with session_scope(ws.deps.engine) as s:
        assert get_meta(s, LAST_CYCLE_KEY) == "2026-11-25"
    expect(page.locator(".day span", has_text="Wednesday, November 25")).to_have_count(1)
    page.screenshot(path=shots.path("8-next-day"))
