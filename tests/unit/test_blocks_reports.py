"""Block Kit answers that summarise many invoices: `/dunning status`, the digest, the chart.

Each must stay within Slack's limits however large the account or the ledger.
"""

from __future__ import annotations

import struct
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from slack_sdk.models.blocks import Block as SdkBlock

from blocks.chart import render_dso_chart
from blocks.digest import (
    AtRisk,
    DigestView,
    DisputeItem,
    PromiseItem,
    StaleCard,
    WaitingDecision,
    build_digest,
    digest_text,
    dso_words,
)
from blocks.ids import ActionId
from blocks.status import (
    StatusLine,
    StatusView,
    build_choices,
    build_status,
    build_usage,
    choices_text,
    status_text,
    usage_text,
)
from dunning.model import (
    CustomerContext,
    Dispute,
    InvoiceState,
    Kind,
    Lane,
    Promise,
    Tone,
    Touch,
)
from handlers.limits import check_message

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TODAY = date(2026, 5, 14)
ACME = CustomerContext(customer_id="cus_acme", name="Acme & <@U1> Corp", strategic=True,
                       owner_email="ana@example.com", ap_contact_name="Pat",
                       ap_contact_email="ap@acme.example")


def valid_message(blocks: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    check_message(blocks, text)
    for b in blocks:
        parsed = SdkBlock.parse(b)
        assert parsed is not None and parsed.to_dict() == b
    return blocks


def mrkdwn(blocks: Any) -> str:
    out: list[str] = []

    def walk(x: Any) -> None:
        if isinstance(x, dict):
            if x.get("type") == "mrkdwn":
                out.append(x["text"])
            for v in x.values():
                walk(v)
        elif isinstance(x, list):
            for v in x:
                walk(v)

    walk(blocks)
    return "\n".join(out)


def line(i: int, *, dpd: int, **kw: Any) -> StatusLine:
    inv = InvoiceState(invoice_id=f"in_{i}", number=f"INV-{i:04d}", customer=ACME,
                       issue_date=TODAY - timedelta(days=dpd + 30),
                       due_date=TODAY - timedelta(days=dpd), currency="USD",
                       amount=Decimal("1000.00"), **kw)
    lane = (Lane.CRITICAL if dpd >= 45 else Lane.LATE if dpd >= 15 else Lane.EARLY if dpd >= 1
            else Lane.CURRENT)
    return StatusLine(invoice=inv, days_past_due=dpd, lane=lane,
                      next_action_on=TODAY + timedelta(days=3))


def status(lines: list[StatusLine]) -> StatusView:
    return StatusView(customer=ACME, risk_score=57, tone=Tone.FIRM,
                      reasons=("3 of 4 settled invoices paid late (75%): +19",
                               "health 30 of 100: +7"),
                      sensitive_reasons=("strategic account", "health 30 is below 40 (at risk)"),
                      totals={"USD": Decimal(1000) * len(lines)}, lines=tuple(lines), today=TODAY)


# --- /dunning status ----------------------------------------------------------------------


def test_status_shows_totals_risk_and_invoices_most_overdue_first() -> None:
    lines = [line(1, dpd=3), line(2, dpd=50, dispute=Dispute("wrong PO <b>")),
             line(3, dpd=20, promise=Promise(TODAY + timedelta(days=2)))]
    view = status(lines)
    blocks = valid_message(build_status(view), status_text(view))
    assert blocks[0] == {"type": "header", "text": {"type": "plain_text",
                                                    "text": "Acme & <@U1> Corp", "emoji": True}}
    text = mrkdwn(blocks)
    assert "*3,000.00 USD* due across 3 open invoices · *risk 57/100* · next tone *firm*" in text
    assert "⭐ strategic account · 🔒 sensitive: health 30 is below 40 (at risk)" in text
    assert "Owner: ana@example.com" in text and "AP: Pat ap@acme.example" in text
    assert text.index("INV-0002") < text.index("INV-0003") < text.index("INV-0001")
    assert "🔴 *INV-0002* · 1,000.00 USD · 50 days past due · ⚠️ disputed: wrong PO &lt;b&gt;" \
        in text
    assert "🤝 promised by 2026-05-16" in text
    assert status_text(view) == ("Acme &amp; &lt;@U1&gt; Corp: 3,000.00 USD due across 3 open "
                                 "invoices, risk 57/100")


def test_status_of_an_account_with_300_invoices_is_capped_and_says_how_many_more() -> None:
    view = status([line(i, dpd=i % 90) for i in range(300)])
    blocks = valid_message(build_status(view), status_text(view))
    assert len(blocks) <= 50
    assert all(len(b["text"]["text"]) <= 3000 for b in blocks if b["type"] == "section")
    text = mrkdwn(blocks)
    shown = text.count("*INV-")
    assert 0 < shown <= 40
    assert f"_and {300 - shown} more_" in text


def test_status_of_an_account_without_open_invoices_says_so() -> None:
    view = status([])
    assert "No open invoices." in mrkdwn(valid_message(build_status(view), status_text(view)))


def test_choices_offer_one_button_per_candidate_at_most_ten() -> None:
    candidates = [(f"cus_{i}", f"Acme {i} <!here>", 90.0 - i) for i in range(14)]
    blocks = valid_message(build_choices("acme", candidates), choices_text("acme", candidates))
    buttons = [b["accessory"] for b in blocks if "accessory" in b]
    assert len(buttons) == 10
    assert {b["action_id"] for b in buttons} == {ActionId.STATUS_PICK.value}
    assert [b["value"] for b in buttons] == [f"cus_{i}" for i in range(10)]
    text = mrkdwn(blocks)
    assert "<!here>" not in text and "&lt;!here&gt;" in text
    assert "_and 4 more: narrow the search_" in text


def test_no_candidates_says_nothing_matches() -> None:
    blocks = valid_message(build_choices("<@U1>", []), choices_text("<@U1>", []))
    assert mrkdwn(blocks) == "No customer matches “&lt;@U1&gt;”. Try part of the name or the id."


def test_usage_lists_the_commands_after_the_reason() -> None:
    blocks = valid_message(build_usage("unknown command `<!channel>`"),
                           usage_text("unknown command"))
    text = mrkdwn(blocks)
    assert text.startswith("⚠️ unknown command `&lt;!channel&gt;`")
    for cmd in ("/dunning status &lt;customer&gt;", "/dunning mine", "/dunning digest",
                "/dunning help"):
        assert f"`{cmd}`" in text
    valid_message(build_usage(), usage_text())


# --- digest -------------------------------------------------------------------------------


def digest(n: int, *, chart: str | None = None) -> DigestView:
    return DigestView(
        day=TODAY,
        open_by_lane={Lane.CURRENT: {"USD": Decimal("50000")},
                      Lane.EARLY: {"USD": Decimal("20000"), "EUR": Decimal("3000")},
                      Lane.LATE: {"USD": Decimal("12000.5")},
                      Lane.CRITICAL: {}},
        dso=Decimal("42.34"), dso_30_days_ago=Decimal("39.2"),
        finance_waiting=[WaitingDecision(f"Cust {i}", f"INV-{i}", Decimal("900"), "USD", 45 + i)
                         for i in range(n)],
        promises_due_today=[PromiseItem(f"Cust {i}", f"INV-{i}", Decimal("10"), "USD", TODAY)
                            for i in range(n)],
        broken_promises=[PromiseItem(f"Cust {i}", f"INV-{i}", None, "USD", TODAY)
                         for i in range(n)],
        new_disputes=[DisputeItem("<!channel> Ltd", f"INV-{i}", Decimal("5"), "USD", "x" * 900)
                      for i in range(n)],
        stale_cards=[StaleCard(f"Cust {i}", "nudge", "<@U9>", 2 + i % 5, Kind.CUSTOMER_MESSAGE)
                     for i in range(n)],
        top_at_risk=[AtRisk(f"Cust {i}", 99 - i % 99, {"USD": Decimal("1000")})
                     for i in range(n)],
        chart_file_id=chart)


def test_the_digest_shows_open_ar_per_lane_and_dso_trend() -> None:
    view = digest(2)
    blocks = valid_message(build_digest(view), digest_text(view))
    assert blocks[0]["text"]["text"] == "AR digest · Thu 14 May 2026"
    summary = blocks[1]
    assert summary["text"]["text"] == "*Open AR:* 82,000.50 USD + 3,000.00 EUR"
    fields = [f["text"] for f in summary["fields"]]
    assert fields[:4] == ["🟢 *Current*\n50,000.00 USD",
                          "🟡 *Early*\n20,000.00 USD\n3,000.00 EUR",
                          "🟠 *Late*\n12,000.50 USD", "🔴 *Critical*\n—"]
    assert fields[4] == "📈 *DSO*\n42.3 days (▲ 3.1 vs 30 days ago)"
    text = mrkdwn(blocks)
    for title in ("Waiting on finance", "Promises due today", "Broken promises",
                  "New disputes", "Cards unacted for 2+ business days", "Top at-risk accounts"):
        assert f"{title}* (2)" in text
    assert "*Cust 1* · INV-1 · 900.00 USD · 46 days past due" in text
    assert "Friendly reminder (nudge) · <@U9> · 3 business days" in text
    assert "<!channel>" not in text


def test_a_digest_of_a_huge_ledger_is_capped_within_limits() -> None:
    view = digest(300, chart="F0123")
    blocks = valid_message(build_digest(view), digest_text(view))
    assert len(blocks) <= 50
    assert {"type": "image", "slack_file": {"id": "F0123"},
            "alt_text": "DSO over the last days"} in blocks
    text = mrkdwn(blocks)
    assert text.count("_and 292 more_") >= 4  # 8 shown per list when the lines are short
    assert "more_" in text.split("New disputes")[1]


def test_a_quiet_day_says_what_is_empty() -> None:
    view = DigestView(day=TODAY, open_by_lane={}, dso=None, dso_30_days_ago=None)
    blocks = valid_message(build_digest(view), digest_text(view))
    text = mrkdwn(blocks)
    assert "Nothing today: waiting on finance, promises due today, broken promises" in text
    assert "not enough data" in text


@pytest.mark.parametrize(("now", "before", "words"), [
    (Decimal("40"), Decimal("45.25"), "40.0 days (▼ 5.3 vs 30 days ago)"),
    (Decimal("40"), Decimal("40"), "40.0 days (= 0.0 vs 30 days ago)"),
    (Decimal("40"), None, "40.0 days"),
    (None, Decimal("40"), "not enough data"),
])
def test_dso_reads_with_its_trend(now: Decimal | None, before: Decimal | None,
                                  words: str) -> None:
    assert dso_words(now, before) == words


# --- chart --------------------------------------------------------------------------------


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def dso_points() -> list[tuple[date, Decimal | None]]:
    start = TODAY - timedelta(days=89)
    points: list[tuple[date, Decimal | None]] = []
    for i in range(90):
        value = Decimal(38) + Decimal(i % 17) / 4 + Decimal(i) / 20
        points.append((start + timedelta(days=i), None if 40 <= i < 44 else value))
    return points


def test_the_dso_chart_is_a_900_by_400_png_and_is_saved_for_people_to_look_at() -> None:
    data = render_dso_chart(dso_points(), title="DSO, last 90 days")
    assert data.startswith(b"\x89PNG")
    assert png_size(data) == (900, 400)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "dso-chart.png").write_bytes(data)


def test_the_dso_chart_copes_with_no_data_and_a_single_point() -> None:
    assert png_size(render_dso_chart([], title="DSO")) == (900, 400)
    assert png_size(render_dso_chart([(TODAY, None)], title="DSO")) == (900, 400)
    assert png_size(render_dso_chart([(TODAY, Decimal("41.5"))], title="DSO")) == (900, 400)


def test_importing_the_builders_loads_neither_matplotlib_nor_slack_sdk() -> None:
    code = ("import sys, blocks.cards, blocks.modals, blocks.status, blocks.digest, blocks.home, "
            "blocks.chart, blocks.ids; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'matplotlib', 'slack_sdk'}))")
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "[]"


HUGE = "&<" * 5000  # 10,000 characters that double when escaped


def test_status_and_digest_made_of_the_longest_possible_text_still_fit() -> None:
    who = CustomerContext(HUGE, HUGE, country=HUGE, timezone=HUGE, owner_email=HUGE,
                          csm_email=HUGE, ap_contact_name=HUGE, ap_contact_email=HUGE,
                          strategic=True, do_not_contact=True, autopay=True)
    many = {f"C{i:03d}": Decimal(i) for i in range(300)}
    lines = tuple(
        StatusLine(InvoiceState(f"in_{i}", f"{HUGE}{i}", who, TODAY, TODAY, f"C{i:03d}",
                                Decimal(1), dispute=Dispute(HUGE), promise=Promise(TODAY)),
                   i, Lane.LATE, TODAY, Touch(datetime(2026, 5, 1, tzinfo=UTC), HUGE, HUGE, HUGE))
        for i in range(300))
    view = StatusView(who, 5, Tone.FIRM, (HUGE,) * 30, (HUGE,) * 10, many, lines, TODAY)
    valid_message(build_status(view), status_text(view))
    picks = [(HUGE[:1000], HUGE, 1.0)] * 20
    valid_message(build_choices(HUGE, picks), choices_text(HUGE, picks))
    valid_message(build_usage(HUGE), usage_text(HUGE))
    d = DigestView(TODAY, dict.fromkeys(Lane, many), Decimal(1), Decimal(2),
                   [WaitingDecision(HUGE, HUGE, Decimal(1), HUGE, 3)] * 300,
                   [PromiseItem(HUGE, HUGE, Decimal(1), HUGE, TODAY)] * 300,
                   [PromiseItem(HUGE, HUGE, None, HUGE, TODAY)] * 300,
                   [DisputeItem(HUGE, HUGE, Decimal(1), HUGE, HUGE)] * 300,
                   [StaleCard(HUGE, HUGE, HUGE, 3)] * 300, [AtRisk(HUGE, 3, many)] * 300,
                   chart_file_id="F1")
    valid_message(build_digest(d), digest_text(d))
    assert digest_text(d).startswith("AR digest 2026-05-14: 300 waiting on finance")
