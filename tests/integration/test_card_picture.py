"""A real escalation card and its approve modal as PNGs, through headless Chromium.

The pictures land in `test-artifacts/` (gitignored) for a person to look at: the card
should read like a Slack message (header, fields in two columns, grey context lines,
buttons in a row). Skipped, with the command to fix it, where Chromium is not installed.
"""

from __future__ import annotations

import os
import stat
import struct
import time
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from blocks.cards import build_escalation_card, card_text
from blocks.modals import build_approve_modal
from bot.sandbox import screenshot as shot
from bot.sandbox.render import page, render_message_html, render_view_html
from dunning.model import Draft, Touch
from dunning.risk import RiskAssessment
from tests.unit.test_blocks import TODAY, card, customer, escalation, invoice

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"

BODY = """Hello Northwind accounts payable team,

Our records show invoice NW-2026-0417 for 48,250.00 USD, due on 1 April, is still open. \
It is now 43 days past due, and 12 other invoices on your account are open as well.

Could you let us know by Friday when it will be paid? If a purchase order number is \
missing on our side, reply with it and we will reissue the invoice the same day.

Best regards,
Ana Lopez
Accounts receivable, Example Corp"""


RISK = RiskAssessment(
    score=71,
    reasons=("9 of 14 settled invoices paid late (64%), 21 days late on average: +20",
             "43 days past due (late lane, from day 15): +16",
             "13 open invoices, 62,204.62 USD in all: +12",
             "health 41 of 100: +6"),
    chronic_late=True, first_time_late=False, sensitive=False, sensitivity_reasons=())


def realistic_card() -> tuple[list[dict[str, Any]], str, dict[str, Any]]:
    who = customer(name="Northwind Traders & Co. <EMEA>", strategic=True)
    others = tuple(invoice(f"NW-2026-{418 + i:04d}", who=who,
                           due=date(2026, 4, 3) + timedelta(days=6 * i),
                           amount=f"{640 + 95 * i}.{i * 7 % 100:02d}")
                   for i in range(12))  # 13,954.62 USD, the newest not due yet
    esc = escalation(reasons=(
        "43 days past due (due 2026-04-01; effective due date 2026-04-03 after 2 grace "
        "business days in US)",
        "step firm_notice: day +15 from the effective due date, due 2026-04-20",
        "risk 71/100: 9 of 14 settled invoices paid late (64%): +20",
        "strategic account: the owner approves every message"))
    c = replace(card(
        esc=esc,
        inv=invoice("NW-2026-0417", amount="48250.00", who=who),
        risk=RISK,
        draft=Draft(subject="Invoice NW-2026-0417 is 43 days overdue", body=BODY,
                    to=("ap@northwind.example",), cc=("controller@northwind.example",)),
        last_touch=Touch(at=datetime(2026, 5, 12, 15, 40, tzinfo=UTC), channel="call",
                         summary="spoke to Jo in AP: payment run on Friday",
                         actor="<@U123ABC>"),
    ), others=others)
    return build_escalation_card(c, today=TODAY), card_text(c), build_approve_modal(c)


def png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", head[16:24])
    return int(width), int(height)


def test_the_card_and_the_approve_modal_render_to_pictures() -> None:
    if shot.chromium_path() is None:
        pytest.skip("Chromium not installed: apt-get install chromium")
    blocks, text, modal = realistic_card()
    ARTIFACTS.mkdir(exist_ok=True)
    started = time.monotonic()
    card_png, modal_png = ARTIFACTS / "card.png", ARTIFACTS / "approve-modal.png"
    message = render_message_html(blocks, text=text, ts_label="9:02 AM")
    shot.screenshot(page([message], title="Escalation card"), card_png)
    shot.screenshot(page([render_view_html(modal)], title="Approve & send"), modal_png)
    assert time.monotonic() - started < 30
    for png in (card_png, modal_png):
        assert png.stat().st_size > 10_000, png
        width, height = png_size(png)
        assert width == 900
        assert 300 < height < 2400  # trimmed to the content, nothing cut off at the bottom
    (ARTIFACTS / "card.html").write_text(page([message, render_view_html(modal)],
                                              title="Escalation card"), encoding="utf-8")


def test_a_missing_chromium_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    monkeypatch.setattr(shot, "chromium_path", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install chromium"):
        shot.screenshot("<p>x</p>", tmp_path / "x.png")


def fake_browser(tmp_path: Path, script: str) -> str:
    path = tmp_path / "browser"
    path.write_text(f"#!/bin/sh\n{script}\n", encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_a_failing_chromium_is_a_clear_error(monkeypatch: pytest.MonkeyPatch,
                                             tmp_path: Path) -> None:
    browser = fake_browser(tmp_path, "echo 'cannot open display' >&2; exit 3")
    monkeypatch.setattr(shot, "chromium_path", lambda: browser)
    with pytest.raises(RuntimeError, match=r"exited with 3(.|\n)*cannot open display"):
        shot.screenshot("<p>x</p>", tmp_path / "x.png")


def test_a_hung_chromium_is_stopped_with_its_children(monkeypatch: pytest.MonkeyPatch,
                                                      tmp_path: Path) -> None:
    pid_file = tmp_path / "child.pid"
    browser = fake_browser(tmp_path, f"sleep 60 & echo $! > {pid_file}; wait")
    monkeypatch.setattr(shot, "chromium_path", lambda: browser)
    with pytest.raises(RuntimeError, match=r"more than 0\.5 s"):
        shot.screenshot("<p>x</p>", tmp_path / "x.png", timeout=0.5)
    child = int(pid_file.read_text(encoding="utf-8"))
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            os.kill(child, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        pytest.fail("the browser's child process outlived the timeout")
