"""The Slack app end to end: the real web process (uvicorn) receives requests signed exactly
as Slack signs them; the real Bolt app and WebClient talk to the loopback Slack sandbox;
approved email goes to a real SMTP server (aiosmtpd).

cycle -> cards posted -> click -> modal -> submit -> ledger -> outbox -> email -> card updated
"""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import pytest
import uvicorn
from sqlalchemy import Engine, func
from sqlmodel import select

from bot.app import build_app
from bot.deps import Deps, build_deps
from bot.sandbox.slack_api import SlackSandbox
from bot.settings import load_settings
from bot.web import build_web
from connectors.email import SmtpSender
from connectors.slack import SlackMessenger, make_client
from handlers.jobs import post_cards
from services.common import Actor
from services.delivery import deliver_outbox
from services.planning import run_cycle
from store import tables as t
from store.engine import session_scope
from tests.integration.test_delivery import Capture, free_port
from tests.integration.test_services import TODAY, import_samples

SECRET = "test-signing-secret"
TOKEN = "xoxb-test"
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)


@dataclass
class World:
    sandbox: SlackSandbox
    deps: Deps
    url: str
    users: dict[str, str]  # name -> Slack user id
    db: Engine

    def signed(self, body: bytes, *, ts: int | None = None, secret: str = SECRET,
               signature: str | None = None, headers: dict[str, str] | None = None
               ) -> tuple[int, bytes]:
        stamp = str(ts if ts is not None else int(time.time()))
        sig = signature if signature is not None else "v0=" + hmac.new(
            secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
        req = urllib.request.Request(f"{self.url}/slack/events", data=body, method="POST")
        req.add_header("Content-Type", "application/json" if body.startswith(b"{")
                       else "application/x-www-form-urlencoded")
        req.add_header("X-Slack-Request-Timestamp", stamp)
        if sig:
            req.add_header("X-Slack-Signature", sig)
        for k, v in (headers or {}).items():
            req.add_header(k, v)
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def command(self, user: str, text: str) -> tuple[int, dict[str, Any]]:
        body = urllib.parse.urlencode({
            "token": "x", "team_id": self.sandbox.team_id, "channel_id": self.sandbox.general_id,
            "user_id": self.users[user], "command": "/dunning", "text": text,
            "response_url": self.sandbox.response_url(channel=self.sandbox.general_id,
                                                      user=self.users[user], message_ts=""),
            "trigger_id": self.sandbox.issue_trigger_id(self.users[user]),
        }).encode()
        status, raw = self.signed(body)
        return status, (json.loads(raw) if raw.strip() else {})

    def interact(self, payload: dict[str, Any], **kw: Any) -> tuple[int, dict[str, Any]]:
        body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
        status, raw = self.signed(body, **kw)
        if payload.get("type") == "view_submission":
            # The answer comes first; the card is updated right after (bot.background).
            assert self.deps.card_updates.drain(timeout=10)
        return status, (json.loads(raw) if raw.strip() else {})

    def click(self, user: str, message: Any, action_id: str, *,
              selected: str | None = None) -> tuple[int, dict[str, Any]]:
        element = next(e for b in message.blocks if b["type"] == "actions"
                       for e in b["elements"] if e["action_id"] == action_id)
        action: dict[str, Any] = {"action_id": action_id, "block_id": "", "type": element["type"],
                                  "action_ts": "1"}
        for b in message.blocks:
            if b["type"] == "actions" and element in b["elements"]:
                action["block_id"] = b.get("block_id", "")
        if "value" in element:
            action["value"] = element["value"]
        if selected is not None:
            action["selected_option"] = {"value": selected}
        return self.interact({
            "type": "block_actions", "user": {"id": self.users[user]},
            "team": {"id": self.sandbox.team_id},
            "trigger_id": self.sandbox.issue_trigger_id(self.users[user]),
            "container": {"type": "message", "message_ts": message.ts,
                          "channel_id": message.channel},
            "channel": {"id": message.channel}, "message": {"ts": message.ts},
            "response_url": self.sandbox.response_url(channel=message.channel,
                                                      user=self.users[user],
                                                      message_ts=message.ts),
            "actions": [action],
        })

    def submit(self, user: str, view: Any, values: dict[str, dict[str, Any]],
               **kw: Any) -> tuple[int, dict[str, Any]]:
        return self.interact({
            "type": "view_submission", "user": {"id": self.users[user]},
            "team": {"id": self.sandbox.team_id},
            "view": {"id": view.id, "type": "modal", "callback_id": view.callback_id,
                     "private_metadata": view.private_metadata, "hash": "h",
                     "state": {"values": values}},
        }, **kw)


def _serve(app: Any) -> tuple[uvicorn.Server, threading.Thread, str]:
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.02)
    return server, thread, f"http://127.0.0.1:{port}"


@pytest.fixture
def world(db: Engine) -> Iterator[World]:
    import_samples(db)
    with SlackSandbox(token=TOKEN) as sandbox:
        users = {
            "dana": sandbox.add_user("dana.reyes@example.com", "dana"),
            "sam": sandbox.add_user("sam.okafor@example.com", "sam"),
            "fin": sandbox.add_user("fin@example.com", "fin"),
            "mallory": sandbox.add_user("mallory@example.com", "mallory"),
        }
        settings = load_settings(
            database_url=db.url.render_as_string(hide_password=False),
            slack_bot_token=TOKEN, slack_signing_secret=SECRET,
            slack_api_url=sandbox.base_url, dunning_finance_users="fin@example.com",
            smtp_from="ar@vendor.example")
        client = make_client(TOKEN, sandbox.base_url)
        deps = build_deps(settings, SlackMessenger(client), clock=lambda: NOW, engine=db)
        app = build_app(deps, client, signing_secret=SECRET)
        server, thread, url = _serve(build_web(app, deps))
        try:
            yield World(sandbox, deps, url, users, db)
        finally:
            server.should_exit = True
            thread.join(timeout=5)


def cards_posted(w: World) -> dict[str, Any]:
    with session_scope(w.db) as s:
        run_cycle(s, w.deps.policy, TODAY, actor=Actor("scheduler"), now=NOW)
    result = post_cards(w.deps)
    assert result.failed == [] and result.posted == 4
    out = {}
    with session_scope(w.db) as s:
        for esc in s.exec(select(t.Escalation)):
            assert esc.slack_channel and esc.slack_ts and esc.state == "posted"
            msg = next(m for m in w.sandbox.messages(esc.slack_channel) if m.ts == esc.slack_ts)
            out[esc.invoice_id] = msg
    return out


def test_whole_loop_from_cycle_to_email_and_card_updated(world: World) -> None:
    w = world
    cards = cards_posted(w)
    nudge = cards["INV-5003"]  # Tailspin, owned by dana: posted to dana's DM
    assert nudge.channel == w.deps.messenger.dm_channel(w.users["dana"])
    assert "Tailspin Toys Ltd" in json.dumps(nudge.blocks) and nudge.text
    status, _ = w.click("dana", nudge, "esc_approve")
    assert status == 200
    [modal] = w.sandbox.views()
    assert modal.callback_id == "v_approve"
    subject = json.dumps(modal.blocks)
    assert "2026-0313" in subject
    status, body = w.submit("dana", modal, {
        "subject": {"subject_input": {"type": "plain_text_input",
                                      "value": "Reminder: invoice 2026-0313"}},
        "body": {"body_input": {"type": "plain_text_input",
                                "value": "Hello,\nInvoice 2026-0313 for 1,200.00 GBP is due."}},
    })
    assert status == 200 and body == {}
    with session_scope(w.db) as s:
        item = s.exec(select(t.Outbox)).one()
        assert item.status == "pending"
        assert json.loads(item.payload)["subject"] == "Reminder: invoice 2026-0313"
    updated = [c for c in w.sandbox.calls("chat.update") if c.args.get("ts") == nudge.ts]
    assert updated and "Approved" in json.dumps(updated[-1].args.get("blocks"))
    capture = Capture()
    from aiosmtpd.controller import Controller
    port = free_port()
    controller = Controller(capture, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        sent = deliver_outbox(w.db, SmtpSender("127.0.0.1", port), now=NOW)
    finally:
        controller.stop()
    assert len(sent.sent) == 1 and capture.messages[0]["Subject"] == "Reminder: invoice 2026-0313"


def test_outsider_is_refused_politely_and_nothing_changes(world: World) -> None:
    w = world
    cards = cards_posted(w)
    status, _ = w.click("mallory", cards["INV-5003"], "esc_approve")
    assert status == 200
    assert w.sandbox.views() == []
    [reply] = w.sandbox.responses()
    assert "only" in reply.text.lower() and "nothing was changed" in reply.text.lower()
    with session_scope(w.db) as s:
        assert s.exec(select(func.count()).select_from(t.Outbox)).one() == 0


def test_finance_approval_is_finance_only(world: World) -> None:
    w = world
    cards = cards_posted(w)
    acme = cards["INV-5001"]  # pause_warning: finance approves
    w.click("dana", acme, "esc_approve")
    assert w.sandbox.views() == []
    w.click("fin", acme, "esc_approve")
    assert [v.callback_id for v in w.sandbox.views()] == ["v_approve"]


def test_second_submission_says_who_handled_it_and_changes_nothing(world: World) -> None:
    w = world
    cards = cards_posted(w)
    w.click("dana", cards["INV-5003"], "esc_reject")
    [modal] = w.sandbox.views()
    values = {"reason": {"reason_input": {"type": "plain_text_input",
                                          "value": "customer paid by cheque yesterday"}}}
    assert w.submit("dana", modal, values) == (200, {})
    status, body = w.submit("dana", modal, values, headers={"X-Slack-Retry-Num": "1"})
    assert status == 200 and body["response_action"] == "update"
    assert "Already handled" in json.dumps(body["view"])
    with session_scope(w.db) as s:
        esc = s.exec(select(t.Escalation).where(t.Escalation.invoice_id == "INV-5003")).one()
        assert esc.state == "rejected" and esc.note == "customer paid by cheque yesterday"


@pytest.mark.parametrize("case", ["forged", "stale", "missing"])
def test_bad_signatures_get_401_and_change_nothing(world: World, case: str) -> None:
    w = world
    body = urllib.parse.urlencode({"command": "/dunning", "text": "status acme",
                                   "user_id": w.users["dana"]}).encode()
    kw: dict[str, Any] = {
        "forged": {"secret": "wrong-secret"},
        "stale": {"ts": int(time.time()) - 6 * 60},
        "missing": {"signature": ""},
    }[case]
    status, _ = w.signed(body, **kw)
    assert status == 401
    assert w.sandbox.calls("chat.postMessage") == []


def test_status_command_answers_in_the_ack(world: World) -> None:
    w = world
    status, body = w.command("sam", "status northwind")
    assert status == 200 and body["response_type"] == "ephemeral"
    assert "Northwind Traders GmbH" in json.dumps(body["blocks"])
    for garbage in ("", "help", "frobnicate", "status", "x" * 5000, "status zzqxv"):
        status, body = w.command("sam", garbage)
        assert status == 200 and body.get("blocks"), garbage
        assert "/dunning status" in json.dumps(body) or "no customer" in json.dumps(body)


def test_rate_limited_slack_is_retried_and_the_card_still_posts(world: World) -> None:
    w = world
    w.sandbox.fail_next("chat.postMessage", status=429, retry_after=0, times=2)
    with session_scope(w.db) as s:
        run_cycle(s, w.deps.policy, TODAY, actor=Actor("scheduler"), now=NOW)
    result = post_cards(w.deps)
    assert result.posted == 4 and result.failed == []


def test_app_home_shows_the_viewers_queue(world: World) -> None:
    w = world
    cards_posted(w)
    body = json.dumps({
        "type": "event_callback", "team_id": w.sandbox.team_id, "api_app_id": "A1",
        "event_id": "Ev1", "event_time": 1,
        "event": {"type": "app_home_opened", "user": w.users["dana"], "tab": "home",
                  "channel": "D1", "event_ts": "1.0"},
    }).encode()
    status, _ = w.signed(body)
    assert status == 200
    home = w.sandbox.home_view(w.users["dana"])
    assert home is not None
    text = json.dumps(home.blocks)
    assert "Your queue (2)" in text and "Tailspin Toys Ltd" in text and "Acme" in text


def test_finance_write_off_from_the_critical_card(world: World) -> None:
    w = world
    cards = cards_posted(w)
    contoso = cards["INV-5004"]  # service_pause: a finance decision
    w.click("sam", contoso, "esc_finance", selected="write_off")
    assert w.sandbox.views() == []  # the owner may not decide: finance only
    w.click("fin", contoso, "esc_finance", selected="write_off")
    [modal] = w.sandbox.views()
    assert modal.callback_id == "v_finance"
    status, body = w.submit("fin", modal, {})
    assert status == 200 and body["response_action"] == "errors"  # a write-off needs a note
    status, body = w.submit("fin", modal, {"note": {"note_input": {
        "type": "plain_text_input", "value": "insolvency filed; agreed with the CFO"}}})
    assert (status, body) == (200, {})
    with session_scope(w.db) as s:
        inv = s.get(t.Invoice, "INV-5004")
        assert inv is not None and inv.status == "uncollectible" and inv.next_action_on is None


def test_snooze_promise_and_dispute_from_cards(world: World) -> None:
    w = world
    cards = cards_posted(w)
    w.click("sam", cards["INV-5002"], "esc_promise")
    [promise] = w.sandbox.views()
    assert w.submit("sam", promise, {
        "date": {"date_input": {"type": "datepicker", "selected_date": "2026-12-04"}},
        "amount": {"amount_input": {"type": "plain_text_input", "value": "4,000.00"}},
    }) == (200, {})
    w.click("dana", cards["INV-5003"], "esc_snooze")
    snooze = w.sandbox.views()[-1]
    assert w.submit("dana", snooze, {
        "preset": {"preset_input": {"type": "static_select",
                                    "selected_option": {"value": "1w"}}},
        "reason": {"reason_input": {"type": "plain_text_input", "value": "AE on PTO"}},
    }) == (200, {})
    w.click("fin", cards["INV-5001"], "esc_dispute")
    dispute = w.sandbox.views()[-1]
    _status, body = w.submit("fin", dispute, {
        "category": {"category_input": {"type": "static_select",
                                        "selected_option": {"value": "pricing"}}},
        "amount": {"amount_input": {"type": "plain_text_input", "value": "-5"}},
    })
    assert body["response_action"] == "errors" and "amount" in body["errors"]
    with session_scope(w.db) as s:
        promise_row = s.exec(select(t.Promise).where(t.Promise.invoice_id == "INV-5002")).one()
        assert str(promise_row.promised_date) == "2026-12-04" and promise_row.amount_minor == 400000
        snooze_row = s.exec(select(t.Snooze)).one()
        assert (snooze_row.target, str(snooze_row.until)) == ("C-1003", "2026-12-01")
        states = {e.invoice_id: e.state for e in s.exec(select(t.Escalation))}
    assert states["INV-5002"] == "skipped" and states["INV-5003"] == "skipped"
    assert states["INV-5001"] == "posted"  # the bad amount changed nothing


def test_digest_on_demand_uploads_the_chart_and_posts_the_summary(world: World) -> None:
    w = world
    cards_posted(w)
    status, body = w.command("dana", "digest")
    assert status == 200 and "for managers and finance" in json.dumps(body)
    assert w.sandbox.files() == []
    status, body = w.command("fin", "digest")
    assert status == 200 and "in your DMs" in json.dumps(body)
    [chart] = w.sandbox.files()
    assert chart.filename.startswith("dso-2026-11-24")
    dm = w.deps.messenger.dm_channel(w.users["fin"])
    digest = w.sandbox.last_message(dm)
    assert digest is not None
    text = json.dumps(digest.blocks)
    assert "AR digest" in text
    # Contoso's service pause and Acme's final warning wait on finance.
    assert "Contoso Pty Ltd" in text and "Acme Corporation" in text


def test_concurrent_submissions_have_exactly_one_effect(world: World) -> None:
    w = world
    cards = cards_posted(w)
    w.click("dana", cards["INV-5003"], "esc_approve")
    [modal] = w.sandbox.views()
    values = {
        "subject": {"subject_input": {"type": "plain_text_input", "value": "Reminder"}},
        "body": {"body_input": {"type": "plain_text_input", "value": "Please pay."}},
    }
    results: list[tuple[int, dict[str, Any]]] = []
    barrier = threading.Barrier(4)

    def submit() -> None:
        barrier.wait()
        results.append(w.submit("dana", modal, values))

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=30)
    assert sorted(status for status, _ in results) == [200, 200, 200, 200]
    assert sum(1 for _, body in results if body == {}) == 1
    assert all(body.get("response_action") == "update" for _, body in results if body)
    with session_scope(w.db) as s:
        assert s.exec(select(func.count()).select_from(t.Outbox)).one() == 1


def test_roles_given_as_a_slack_user_group(world: World, db: Engine) -> None:
    w = world
    group = w.sandbox.add_usergroup("ar-managers", [w.users["mallory"]])
    settings = w.deps.settings.model_copy(update={"dunning_manager_users": group})
    deps = build_deps(settings, w.deps.messenger, clock=lambda: NOW, engine=db)
    assert w.users["mallory"] in deps.roles.managers


def test_a_customer_with_many_steps_today_gets_one_card_per_ten(world: World) -> None:
    from decimal import Decimal

    from dunning.model import CustomerContext, InvoiceRecord
    from services.importing import upsert_ledger

    w = world
    batch = CustomerContext("C-77", "Globex Batch Corp", "US", "America/New_York", "USD",
                            owner_email="dana.reyes@example.com",
                            ap_contact_email="ap@globex.example")
    invoices = [InvoiceRecord(f"INV-77{i:02d}", f"77-{i:02d}", "C-77", date(2026, 10, 20),
                              date(2026, 11, 19), "USD", Decimal("100.00") * (i + 1))
                for i in range(12)]
    with session_scope(w.db) as s:
        upsert_ledger(s, customers=[batch], invoices=invoices, source="csv",
                      actor=Actor("test"), now=NOW, policy=w.deps.policy)
        run_cycle(s, w.deps.policy, TODAY, actor=Actor("scheduler"), now=NOW)
    result = post_cards(w.deps)
    assert result.posted == 16 and result.failed == []
    dm = w.deps.messenger.dm_channel(w.users["dana"])
    globex = [m for m in w.sandbox.messages(dm) if "Globex Batch Corp" in json.dumps(m.blocks)]
    assert len(globex) == 2  # 10 + 2 escalations, not 12 cards
    big = next(m for m in globex if "10 invoices" in json.dumps(m.blocks))
    rows = [b for b in big.blocks if b["type"] == "actions"]
    assert len(rows) == 10 and len(big.blocks) <= 50
    # Reject one row: the whole card is re-rendered in place, the other rows keep buttons.
    first_reject = next(e for e in rows[0]["elements"] if e["action_id"] == "esc_reject")
    fake = type("M", (), {"blocks": [rows[0]], "ts": big.ts, "channel": big.channel})
    w.click("dana", fake, "esc_reject")
    [modal] = w.sandbox.views()
    assert w.submit("dana", modal, {"reason": {"reason_input": {
        "type": "plain_text_input", "value": "billed twice"}}}) == (200, {})
    update = [c for c in w.sandbox.calls("chat.update") if c.args.get("ts") == big.ts][-1]
    updated_rows = [b for b in update.args["blocks"] if b["type"] == "actions"]
    assert len(updated_rows) == 9 and "Rejected" in json.dumps(update.args["blocks"])
    assert first_reject["value"] not in json.dumps(updated_rows)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def test_health_readiness_and_metrics(world: World) -> None:
    w = world
    cards_posted(w)
    assert get(f"{w.url}/healthz")[0] == 200
    status, body = get(f"{w.url}/readyz")
    assert status == 200 and json.loads(body)["ready"] is True
    w.command("sam", "status northwind")
    status, text = get(f"{w.url}/metrics")
    assert status == 200
    assert 'dunning_escalations{state="posted"} 4.0' in text
    assert 'dunning_slack_requests_total{status="200"} 1.0' in text
    assert "dunning_outbox_oldest_pending_seconds 0.0" in text
    assert "dunning_slack_request_seconds_count 1.0" in text
    assert "dunning_card_updates_waiting 0.0" in text


def test_readiness_fails_on_an_unmigrated_schema(world: World) -> None:
    w = world
    with w.db.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    status, body = get(f"{w.url}/readyz")
    assert status == 503 and json.loads(body)["hint"] == "run `dunning init`"


def test_a_submission_is_answered_before_the_card_is_updated(world: World) -> None:
    """Slack closes the modal on the answer; the card's chat.update follows it. A slow
    Slack (here: chat.update held) does not hold the person's modal open."""
    w = world
    nudge = cards_posted(w)["INV-5003"]
    w.click("dana", nudge, "esc_approve")
    [modal] = w.sandbox.views()
    release = threading.Event()
    messenger = w.deps.messenger
    original = messenger.update

    def held_update(*args: Any, **kwargs: Any) -> None:
        assert release.wait(10)
        original(*args, **kwargs)

    messenger.update = held_update  # type: ignore[method-assign]
    body = urllib.parse.urlencode({"payload": json.dumps({
        "type": "view_submission", "user": {"id": w.users["dana"]},
        "team": {"id": w.sandbox.team_id},
        "view": {"id": modal.id, "type": "modal", "callback_id": modal.callback_id,
                 "private_metadata": modal.private_metadata, "hash": "h",
                 "state": {"values": {
                     "subject": {"subject_input": {"type": "plain_text_input",
                                                   "value": "Invoice 2026-0313"}},
                     "body": {"body_input": {"type": "plain_text_input",
                                             "value": "Invoice 2026-0313 is due."}}}}},
    })}).encode()
    try:
        status, raw = w.signed(body)  # answered while chat.update is still held
        assert status == 200 and raw.strip() == b""
        with session_scope(w.db) as s:
            assert s.exec(select(t.Outbox)).one().status == "pending"
        assert not [c for c in w.sandbox.calls("chat.update") if c.args.get("ts") == nudge.ts]
        assert w.deps.card_updates.backlog == 1
    finally:
        release.set()
    assert w.deps.card_updates.drain(timeout=10)
    updated = [c for c in w.sandbox.calls("chat.update") if c.args.get("ts") == nudge.ts]
    assert len(updated) == 1 and "Approved" in json.dumps(updated[0].args.get("blocks"))


def test_health_answers_while_every_request_thread_is_busy(world: World) -> None:
    """Slack requests run WEB_THREADS at a time; /healthz keeps threads of its own."""
    w = world
    nudge = cards_posted(w)["INV-5003"]
    release = threading.Event()
    original = w.deps.messenger.email_of
    busy = threading.Semaphore(0)

    def slow_email_of(user_id: str) -> str | None:
        busy.release()
        assert release.wait(10)
        return original(user_id)

    w.deps.messenger.email_of = slow_email_of  # type: ignore[method-assign]
    clicks = [threading.Thread(target=w.click, args=("dana", nudge, "esc_approve"))
              for _ in range(w.deps.settings.web_threads + 2)]
    try:
        for c in clicks:
            c.start()
        for _ in range(w.deps.settings.web_threads):  # every request thread is held
            assert busy.acquire(timeout=10)
        assert not busy.acquire(timeout=0.3)  # the others wait for a thread
        start = time.monotonic()
        assert get(f"{w.url}/healthz")[0] == 200
        assert time.monotonic() - start < 5
    finally:
        release.set()
        for c in clicks:
            c.join(timeout=10)
