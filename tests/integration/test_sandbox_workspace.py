"""The sandbox workspace without a browser: the page server's guards, the bot's signature
check, the sandbox clock driving the real cycle, and `dunning demo --serve` start to Ctrl-C.

Everything runs for real on 127.0.0.1: the demo ledger in the test database, the Slack
sandbox, the bot's web app (uvicorn) and the page server (uvicorn).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlmodel import select

from bot.sandbox.page import build_page
from bot.sandbox.workspace import (
    BackgroundServer,
    SandboxClock,
    Workspace,
    bind_loopback,
    serve_in_thread,
    sign,
)
from store import tables as t
from store.engine import session_scope

TODAY = date(2026, 11, 24)  # a Tuesday; Thursday the 26th is Thanksgiving (US)
TOKEN = "page-session-token"


@dataclass
class Sandbox:
    ws: Workspace
    page: BackgroundServer

    @property
    def url(self) -> str:
        return self.page.url

    def post(self, path: str, body: dict[str, Any], *, token: str | None = TOKEN,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        return call(f"{self.url}{path}", json.dumps(body).encode(), token=token,
                    headers=headers)


def call(url: str, data: bytes | None = None, *, token: str | None = None,
         headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=data, method="POST" if data is not None
                                     else "GET")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    if token is not None:
        request.add_header("X-Sandbox-Token", token)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, {"raw": raw.decode("utf-8", "replace")}


@pytest.fixture
def sandbox(db_url: str) -> Iterator[Sandbox]:
    with Workspace(db_url=db_url, today=TODAY, ticking=False) as ws:
        ws.run_day()
        sock = bind_loopback()
        page = serve_in_thread(build_page(ws, port=sock.getsockname()[1], token=TOKEN), sock,
                               name="sandbox-page")
        try:
            yield Sandbox(ws, page)
        finally:
            page.stop()


def card_with(ws: Workspace, channel: str, words: str) -> Any:
    return next(m for m in ws.slack.messages(channel) if words in m.text)


def actions_at(message: Any) -> tuple[int, list[str]]:
    index = next(i for i, b in enumerate(message.blocks) if b["type"] == "actions")
    return index, [e.get("action_id") for e in message.blocks[index]["elements"]]


def test_page_server_listens_on_loopback_only(sandbox: Sandbox) -> None:
    assert sandbox.page.sock.getsockname()[0] == "127.0.0.1"
    assert sandbox.ws.slack.url.startswith("http://127.0.0.1:")
    assert sandbox.ws.events_url.startswith("http://127.0.0.1:")
    status, state = call(f"{sandbox.url}/api/state?as=mei", token=TOKEN)
    assert status == 200 and state["as"] == "mei"
    secret = sandbox.ws._signing_secret
    assert secret not in json.dumps(state) and sandbox.ws.slack.token not in json.dumps(state)
    index = urllib.request.urlopen(f"{sandbox.url}/", timeout=10).read().decode()
    assert TOKEN in index and secret not in index


def test_page_refuses_forged_posts_and_changes_nothing(sandbox: Sandbox) -> None:
    ws = sandbox.ws
    card = card_with(ws, "#ar-mei", "Juniper Labs")
    block, ids = actions_at(card)
    click = {"as": "mei", "channel": card.channel, "ts": card.ts, "block": block,
             "element": ids.index("esc_approve")}
    port = sandbox.page.port
    forged = [
        ({}, None),  # no token
        ({}, "guessed-token"),
        ({"Origin": "http://evil.example"}, TOKEN),  # a page elsewhere posting with a token
        ({"Host": f"evil.example:{port}"}, TOKEN),  # DNS rebinding: our port, their name
    ]
    for headers, token in forged:
        status, body = sandbox.post("/api/click", click, token=token, headers=headers)
        assert status == 403, (headers, token, body)
    status, _ = call(f"{sandbox.url}/api/state?as=mei")  # reading needs the token too
    assert status == 403
    status, _ = sandbox.post("/api/command", {"as": "fatima", "channel": card.channel,
                                              "text": "/dunning status acme"},
                             headers={"Origin": "http://evil.example"})
    assert status == 403
    assert ws.slack.views() == [] and ws.slack.ephemerals() == []
    assert ws.slack.calls("views.open") == []

    # The same click from the page itself opens the approve modal.
    status, body = sandbox.post("/api/click", click,
                                headers={"Origin": f"http://127.0.0.1:{port}"})
    assert status == 200 and len(body["opened"]) == 1
    modal = ws.open_modal("mei")
    assert modal is not None and modal.callback_id == "v_approve"


def test_bot_refuses_requests_without_a_valid_slack_signature(sandbox: Sandbox) -> None:
    ws = sandbox.ws
    mei = ws.persona("mei")
    card = card_with(ws, "#ar-mei", "Juniper Labs")
    block, ids = actions_at(card)
    element = card.blocks[block]["elements"][ids.index("esc_approve")]
    payload = {"type": "block_actions", "user": {"id": mei.user_id},
               "team": {"id": ws.slack.team_id}, "trigger_id": "1.2.3",
               "container": {"type": "message", "message_ts": card.ts,
                             "channel_id": card.channel},
               "channel": {"id": card.channel}, "actions": [{
                   "type": "button", "action_id": "esc_approve", "value": element["value"],
                   "block_id": card.blocks[block].get("block_id", ""), "action_ts": "1"}]}
    body = urllib.parse.urlencode({"payload": json.dumps(payload)}).encode()
    now = int(time.time())

    def send(headers: dict[str, str]) -> int:
        request = urllib.request.Request(ws.events_url, data=body, method="POST")
        request.add_header("Content-Type", "application/x-www-form-urlencoded")
        for name, value in headers.items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=10) as resp:
                return int(resp.status)
        except urllib.error.HTTPError as err:
            return err.code

    assert send({}) == 401
    assert send({"X-Slack-Request-Timestamp": str(now),
                 "X-Slack-Signature": sign("not-the-secret", body, now)}) == 401
    stale = now - 600  # Slack's replay window is five minutes
    assert send({"X-Slack-Request-Timestamp": str(stale),
                 "X-Slack-Signature": sign(ws._signing_secret, body, stale)}) == 401
    assert ws.slack.calls("views.open") == []
    # Signed with the sandbox's secret, the same bytes get through.
    assert send({"X-Slack-Request-Timestamp": str(now),
                 "X-Slack-Signature": sign(ws._signing_secret, body, now)}) == 200
    assert len(ws.slack.calls("views.open")) == 1


def test_modal_errors_stay_on_the_modal_and_change_nothing(sandbox: Sandbox) -> None:
    ws = sandbox.ws
    card = card_with(ws, "#ar-mei", "Juniper Labs")
    block, ids = actions_at(card)
    ws.click("mei", channel=card.channel, ts=card.ts, block=block,
             element=ids.index("esc_approve"))
    modal = ws.open_modal("mei")
    assert modal is not None
    result = ws.submit("mei", modal.id, {
        "subject": {"subject_input": {"type": "plain_text_input", "value": "  "}},
        "body": {"body_input": {"type": "plain_text_input", "value": "Hello"}}})
    assert result == {"ok": False, "errors": {"subject": "Required"}}
    assert ws.open_modal("mei") == ws.slack.view(modal.id)
    with session_scope(ws.deps.engine) as s:
        assert s.exec(select(t.Outbox)).all() == []
    assert ws.close("mei", modal.id) == {"ok": True, "closed": modal.id}
    assert ws.open_modal("mei") is None


def test_next_business_day_moves_the_bots_clock_and_runs_that_day(sandbox: Sandbox) -> None:
    ws = sandbox.ws
    assert ws.today() == TODAY
    before = len(ws.slack.messages("#ar-managers"))
    overdue_before = acme_days_past_due(ws)
    assert ws.next_business_day().day == date(2026, 11, 25)
    third = ws.next_business_day()  # the 26th is Thanksgiving: a holiday in the US
    assert third.day == date(2026, 11, 27) and ws.today() == date(2026, 11, 27)
    with session_scope(ws.deps.engine) as s:
        plan_dates = {e.plan_date for e in s.exec(select(t.Escalation)).all()
                      if e.created_at is not None and e.handled_by != "demo"}
        assert {TODAY, date(2026, 11, 25)} <= plan_dates
        assert date(2026, 11, 26) not in plan_dates
    # One digest (chart + summary) per business day.
    assert len(ws.slack.messages("#ar-managers")) == before + 4
    # The bot's own answers are on the sandbox's date: three days later, three days more.
    overdue_after = acme_days_past_due(ws)
    assert overdue_before and overdue_before.keys() <= overdue_after.keys()
    assert all(overdue_after[k] == overdue_before[k] + 3 for k in overdue_before)


def acme_days_past_due(ws: Workspace) -> dict[str, int]:
    """Days past due per invoice as `/dunning status acme` tells a manager."""
    morgan = ws.persona("morgan").user_id
    seen = len(ws.slack.ephemerals(morgan))
    ws.command("morgan", channel=ws.slack.channel_id("#ar-managers"),
               text="/dunning status acme")
    answer = ws.slack.ephemerals(morgan)[seen]
    assert "Acme Corporation" in answer.text
    found = re.findall(r"\*(\S+)\* · [^·]+ · (\d+) days? past due", json.dumps(
        answer.blocks, ensure_ascii=False))
    return {number: int(days) for number, days in found}


def test_sandbox_clock_moves_forward_only() -> None:
    elapsed = [0.0]
    start = datetime(2026, 11, 24, 9, 0, tzinfo=UTC)
    clock = SandboxClock(start, monotonic=lambda: elapsed[0])
    assert clock.now() == start
    elapsed[0] = 90.0
    assert (clock.now() - start).total_seconds() == 90
    with pytest.raises(ValueError):
        clock.advance_to(start)
    later = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)
    clock.advance_to(later)
    assert clock.now() == later


def test_unknown_slash_command_is_answered_like_slack(sandbox: Sandbox) -> None:
    ws = sandbox.ws
    channel = ws.slack.channel_id("#ar-mei")
    assert ws.command("mei", channel=channel, text="/remind me") == {
        "ok": False, "error": "unknown_command"}
    [note] = ws.slack.ephemerals(ws.persona("mei").user_id)
    assert "/remind is not a valid command" in note.text


def test_demo_serve_prints_the_url_serves_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("DATABASE_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", "from bot.cli import main; main()", "--db",
         str(tmp_path / "serve.db"), "demo", "--serve", "--port", "0", "--no-browser",
         "--date", TODAY.isoformat(), "--customers", "12"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path)
    assert proc.stdout is not None
    lines: list[str] = []
    url = ""
    try:
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Slack sandbox: "):
                url = line.split()[2]
                break
        assert url.startswith("http://127.0.0.1:"), "".join(lines)
        page = urllib.request.urlopen(url, timeout=10).read().decode()
        assert "Slack sandbox" in page and "sandbox-token" in page
        proc.send_signal(signal.SIGINT)
        out, _ = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    text = "".join(lines) + out
    assert proc.returncode == 0, text
    assert "seeded 12 customers" in text and "card(s) posted" in text
    assert "sandbox stopped" in text
