"""Block Kit builders: the escalation card, its modals, App Home and `/dunning mine`.

Plain data in, plain dicts out: every output must pass our own limit checks and
slack-sdk's models, and show the ids, values and strings a person relies on.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from slack_sdk.models.blocks import Block as SdkBlock
from slack_sdk.models.views import View as SdkView

from blocks.cards import (
    CardData,
    build_escalation_card,
    build_owner_header,
    card_text,
    handled_text,
    owner_header_text,
    step_words,
)
from blocks.home import build_home
from blocks.ids import (
    ActionId,
    BlockId,
    FinanceDecision,
    SnoozePreset,
    ViewId,
    card_actions_block_id,
    escalation_id_from_block_id,
    input_action,
)
from blocks.kit import clip, escape, escape_keep_mentions, label
from blocks.modals import (
    build_approve_modal,
    build_call_outcome_modal,
    build_dispute_modal,
    build_finance_modal,
    build_promise_modal,
    build_reassign_modal,
    build_reject_modal,
    build_result_view,
    build_snooze_modal,
    calendar_quarter_end,
    parse_private_metadata,
    snooze_until,
)
from blocks.status import build_mine, mine_text
from dunning.model import (
    Approval,
    Channel,
    CustomerContext,
    Dispute,
    Draft,
    Escalation,
    EscalationState,
    InvoiceState,
    InvoiceStatus,
    Kind,
    Lane,
    Promise,
    Tone,
    Touch,
)
from dunning.risk import RiskAssessment
from handlers.limits import BlockLimitError, check_message, check_view

ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts"
TODAY = date(2026, 5, 14)

# --- plain data ---------------------------------------------------------------------------


def customer(name: str = "Acme Corp", **kw: Any) -> CustomerContext:
    return CustomerContext(customer_id="cus_1", name=name, owner_email="ana@example.com",
                           ap_contact_email="ap@acme.example", **kw)


def invoice(number: str = "INV-1042", *, due: date = date(2026, 4, 1),
            amount: str = "12000.00", currency: str = "USD", paid: str = "0",
            who: CustomerContext | None = None, **kw: Any) -> InvoiceState:
    return InvoiceState(invoice_id=f"in_{number}", number=number, customer=who or customer(),
                        issue_date=due - timedelta(days=30), due_date=due, currency=currency,
                        amount=Decimal(amount), amount_paid=Decimal(paid), **kw)


def escalation(kind: Kind = Kind.CUSTOMER_MESSAGE, *, step: str = "firm_notice",
               state: EscalationState = EscalationState.POSTED, eid: int = 42,
               **kw: Any) -> Escalation:
    message = kind is Kind.CUSTOMER_MESSAGE
    fields: dict[str, Any] = dict(
        id=eid, invoice_id="in_INV-1042", step=step, kind=kind,
        tone=Tone.FIRM if message else None, approval=Approval.OWNER if message else None,
        channel=Channel.EMAIL if message else Channel.SLACK, lane=Lane.LATE, days_past_due=43,
        scheduled_on=TODAY,
        reasons=("43 days past due (due 2026-04-01; effective due date 2026-04-03 after 2 "
                 "grace business days in US)",
                 "step firm_notice: day +15 from the effective due date, due 2026-04-20",
                 "risk 62/100: 7 of 10 settled invoices paid late (70%): +18",
                 "owner: please call the customer as well"),
        owner="ana@example.com", state=state, plan_date=TODAY)
    fields.update(kw)
    return Escalation(**fields)


RISK = RiskAssessment(
    score=62,
    reasons=("7 of 10 settled invoices paid late (70%): +18",
             "43 days past due (late lane, from day 15): +16",
             "amount due 12,000.00 USD (ARR unknown: scaled from 1,000 to 100,000): +8",
             "health 35 of 100: +7"),
    chronic_late=True, first_time_late=False, sensitive=False, sensitivity_reasons=())

DRAFT = Draft(subject="Invoice INV-1042 is 43 days overdue",
              body="Hello Acme accounts payable team,\n\nOur records show invoice INV-1042 "
                   "for 12,000.00 USD, due on 1 April, is still open.\n\nCould you let us "
                   "know when it will be paid?\n\nBest regards,\nAna",
              to=("ap@acme.example",), cc=("cfo@acme.example",))


def card(kind: Kind = Kind.CUSTOMER_MESSAGE, *, others: int = 0, **kw: Any) -> CardData:
    esc = kw.pop("esc", None) or escalation(kind)
    inv = kw.pop("inv", None) or invoice()
    fields: dict[str, Any] = dict(
        escalation=esc, invoice=inv,
        others=tuple(invoice(f"INV-{i:04d}", due=date(2025, 6, 1) + timedelta(days=i),
                             amount="100.50", currency="EUR" if i % 3 == 0 else "USD")
                     for i in range(others)),
        risk=RISK, draft=DRAFT if kind is Kind.CUSTOMER_MESSAGE else None,
        last_touch=Touch(at=datetime(2026, 5, 2, 14, 5, tzinfo=UTC), channel="call",
                         summary="left a voicemail", actor="ana@example.com"),
        owner_label="<@U123ABC>")
    fields.update(kw)
    return CardData(**fields)


# --- helpers ------------------------------------------------------------------------------


def valid_message(blocks: list[dict[str, Any]], text: str) -> list[dict[str, Any]]:
    """Our limits, then slack-sdk's models on their own."""
    check_message(blocks, text)
    for b in blocks:
        parsed = SdkBlock.parse(b)
        assert parsed is not None
        assert parsed.to_dict() == b
    return blocks


def valid_view(view: dict[str, Any]) -> dict[str, Any]:
    check_view(view)
    assert SdkView(**view).to_dict() == view
    return view


def all_text(blocks: Any) -> list[str]:
    """Every mrkdwn string in the blocks (where Slack parses mentions and links)."""
    out: list[str] = []
    if isinstance(blocks, dict):
        if blocks.get("type") == "mrkdwn":
            out.append(blocks["text"])
        for v in blocks.values():
            out += all_text(v)
    elif isinstance(blocks, list):
        for v in blocks:
            out += all_text(v)
    return out


def joined(blocks: Any) -> str:
    return "\n".join(all_text(blocks))


def elements(blocks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for b in blocks if b["type"] == "actions" for e in b["elements"]]


def inputs(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {b["block_id"]: b for b in view["blocks"] if b["type"] == "input"}


# --- limits -------------------------------------------------------------------------------


def section(text: str = "hi", **kw: Any) -> dict[str, Any]:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}, **kw}


def a_button(text: str = "Go", action_id: str = "a", value: str = "1") -> dict[str, Any]:
    return {"type": "button", "text": {"type": "plain_text", "text": text},
            "action_id": action_id, "value": value}


def test_a_small_valid_message_passes_the_checks() -> None:
    check_message([section(), {"type": "divider"}], "hi")


def test_a_message_without_fallback_text_is_refused() -> None:
    with pytest.raises(BlockLimitError, match="fallback text"):
        check_message([section()], "  ")


def test_a_message_with_51_blocks_is_refused() -> None:
    with pytest.raises(BlockLimitError, match="51 blocks"):
        check_message([section() for _ in range(51)], "hi")


@pytest.mark.parametrize(("block", "words"), [
    (section("x" * 3001), "3001 characters, more than 3000"),
    (section(fields=[{"type": "mrkdwn", "text": "f"}] * 11), "11 fields"),
    (section(fields=[{"type": "mrkdwn", "text": "f" * 2001}]), "more than 2000"),
    ({"type": "actions", "elements": [a_button("x" * 76)]}, "more than 75"),
    ({"type": "actions", "elements": [a_button(value="v" * 2001)]}, "more than 2000"),
    ({"type": "actions", "elements": [a_button(action_id="a" * 256)]}, "more than 255"),
    (section(block_id="b" * 256), "more than 255"),
    ({"type": "actions", "elements": [a_button(action_id=f"a{i}") for i in range(26)]},
     "26 elements"),
    ({"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}, "more than 150"),
    ({"type": "actions", "elements": [a_button(), a_button()]}, "used twice in one block"),
    (section(""), "must not be empty"),
    (section(bogus=1), "unknown keys: bogus"),
    ({"type": "sectionx"}, "not a block type"),
])
def test_each_slack_limit_is_named_when_exceeded(block: dict[str, Any], words: str) -> None:
    with pytest.raises(BlockLimitError) as err:
        check_message([block], "fallback")
    assert any(words in p for p in err.value.problems), err.value.problems


def test_two_blocks_with_one_block_id_are_refused() -> None:
    with pytest.raises(BlockLimitError, match="used twice"):
        check_message([section(block_id="x"), section(block_id="x")], "hi")


def test_a_message_carrying_too_much_text_is_refused_even_within_block_limits() -> None:
    with pytest.raises(BlockLimitError, match="may safely carry"):
        check_message([section("x" * 3000) for _ in range(5)], "hi")


def test_slack_sdk_refusals_are_reported_as_block_limit_errors() -> None:
    bad_style = {"type": "actions", "elements": [{**a_button(), "style": "loud"}]}
    with pytest.raises(BlockLimitError, match="primary or danger"):
        check_message([bad_style], "hi")
    assert issubclass(BlockLimitError, ValueError)


def modal(**kw: Any) -> dict[str, Any]:
    view: dict[str, Any] = {"type": "modal", "title": {"type": "plain_text", "text": "T"},
                            "blocks": [section()]}
    view.update(kw)
    return view


@pytest.mark.parametrize(("view", "words"), [
    (modal(title={"type": "plain_text", "text": "t" * 25}), "title: 25 characters"),
    (modal(submit={"type": "plain_text", "text": "s" * 25}), "submit: 25 characters"),
    (modal(close={"type": "plain_text", "text": "c" * 25}), "close: 25 characters"),
    (modal(private_metadata="m" * 3001), "private_metadata: 3001"),
    (modal(blocks=[section() for _ in range(101)]), "101 blocks"),
    (modal(blocks=[{"type": "input", "label": {"type": "plain_text", "text": "L"},
                    "element": {"type": "plain_text_input", "action_id": "i"}}]),
     "needs a submit button"),
    (modal(submit={"type": "plain_text", "text": "Go"},
           blocks=[{"type": "input", "label": {"type": "plain_text", "text": "L"},
                    "element": {"type": "plain_text_input", "action_id": "i",
                                "initial_value": "v" * 3001}}]), "initial_value: 3001"),
    ({"type": "home", "blocks": [section()], "close": {"type": "plain_text", "text": "x"}},
     "no submit or close"),
])
def test_view_limits_are_named_when_exceeded(view: dict[str, Any], words: str) -> None:
    with pytest.raises(BlockLimitError) as err:
        check_view(view)
    assert any(words in p for p in err.value.problems), err.value.problems


def test_input_blocks_are_refused_in_messages() -> None:
    block = {"type": "input", "label": {"type": "plain_text", "text": "L"},
             "element": {"type": "plain_text_input", "action_id": "i"}}
    with pytest.raises(BlockLimitError, match="belong in modals"):
        check_message([block], "hi")


# --- escaping and clipping ----------------------------------------------------------------


def test_escape_neutralises_mentions_links_and_entities() -> None:
    assert escape("<@U1> & <!channel> <http://x|y>") == (
        "&lt;@U1&gt; &amp; &lt;!channel&gt; &lt;http://x|y&gt;")


def test_a_label_keeps_a_mention_and_escapes_anything_else() -> None:
    assert label("<@U123ABC>") == "<@U123ABC>"
    assert label("<!channel>") == "&lt;!channel&gt;"
    assert label("a&b@example.com") == "a&amp;b@example.com"


def test_clipping_never_cuts_an_entity_or_a_token_in_half() -> None:
    text = "abc &amp; def"
    for limit in range(1, len(text)):
        cut = clip(text, limit)
        assert len(cut) <= limit
        assert "&am" not in cut or "&amp;" in cut
    token = "see <!date^1700000000^{time}|09:12 UTC> now"
    for limit in range(2, len(token)):
        cut = clip(token, limit)
        assert cut.count("<") == cut.count(">")


# --- the card -----------------------------------------------------------------------------


def test_the_card_shows_customer_invoice_amount_lane_step_tone_and_approval() -> None:
    c = card()
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    head = blocks[0]["text"]["text"]
    assert "Acme Corp" in head and "INV-1042" in head and "🟠" in head
    text = joined(blocks)
    for expected in ("12,000.00 USD", "43 days past due", "late", "Firm notice (firm_notice)",
                     "Tone *firm*", "needs the owner's approval (<@U123ABC>)",
                     "*Risk 62/100*", "chronic late payer", "paid late (70%)",
                     "Last touch: call on 2026-05-02", "Invoice INV-1042 is 43 days overdue",
                     "To: ap@acme.example · Cc: cfo@acme.example"):
        assert expected in text, expected
    summary = next(b for b in blocks if b.get("block_id") == BlockId.CARD.value)
    assert summary["type"] == "section"


@pytest.mark.parametrize(("step", "kind", "words"), [
    ("nudge", Kind.CUSTOMER_MESSAGE, "Friendly reminder (nudge)"),
    ("owner_loop_in", Kind.OWNER_TASK, "Owner task: loop in the AE"),
    ("service_pause", Kind.FINANCE_DECISION,
     "Finance decision: service pause, payment plan, write-off or collections"),
    ("dispute_review:2026-05-01", Kind.OWNER_TASK,
     "Owner task: review the dispute opened 2026-05-01"),
    ("broken_promise:2026-05-10", Kind.OWNER_TASK,
     "Owner task: promise to pay by 2026-05-10 was broken, call the customer"),
    ("custom_step", Kind.CUSTOMER_MESSAGE, "Customer message (custom_step)"),
])
def test_steps_read_in_words_with_their_kind(step: str, kind: Kind, words: str) -> None:
    assert step_words(step, kind) == words


def test_a_customer_with_300_other_open_invoices_gets_one_summary_section() -> None:
    c = card(others=300)
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    assert len(blocks) <= 50
    summaries = [t for t in all_text(blocks) if "other open invoices" in t]
    assert len(summaries) == 1
    summary = summaries[0]
    # 100 invoices (i % 3 == 0) in EUR, 200 in USD, 100.50 each.
    assert "*300 other open invoices*" in summary
    assert "20,100.00 USD + 10,050.00 EUR due" in summary
    listed = [line for line in summary.splitlines() if line.startswith("• ")]
    assert [line.split(" · ")[0] for line in listed] == [
        "• INV-0000", "• INV-0001", "• INV-0002", "• INV-0003", "• INV-0004"]
    assert "INV-0000 · 347 days past due · 100.50 EUR" in summary
    assert "_and 295 more_" in summary
    # The card does not grow with the number of other invoices.
    assert len(build_escalation_card(card(others=6), today=TODAY)) == len(blocks)


def test_a_single_other_invoice_is_listed_without_more() -> None:
    c = card(others=1)
    text = joined(valid_message(build_escalation_card(c, today=TODAY), card_text(c)))
    assert "*1 other open invoice*" in text and "more_" not in text.split("other open")[1]


ALL_CARD_ACTIONS = {ActionId.APPROVE, ActionId.REJECT, ActionId.SNOOZE, ActionId.DISPUTE,
                    ActionId.PROMISE, ActionId.REASSIGN, ActionId.CALL_OUTCOME, ActionId.DONE,
                    ActionId.FINANCE_DECISION}


@pytest.mark.parametrize(("kind", "expected", "primary"), [
    (Kind.CUSTOMER_MESSAGE,
     [ActionId.APPROVE, ActionId.REJECT, ActionId.SNOOZE, ActionId.DISPUTE, ActionId.PROMISE,
      ActionId.REASSIGN, ActionId.CALL_OUTCOME], ActionId.APPROVE),
    (Kind.OWNER_TASK,
     [ActionId.DONE, ActionId.SNOOZE, ActionId.DISPUTE, ActionId.PROMISE, ActionId.REASSIGN,
      ActionId.CALL_OUTCOME], ActionId.DONE),
    (Kind.FINANCE_DECISION, [ActionId.FINANCE_DECISION, ActionId.SNOOZE, ActionId.REASSIGN],
     None),
])
def test_an_open_card_offers_the_actions_of_its_kind(kind: Kind, expected: list[ActionId],
                                                     primary: ActionId | None) -> None:
    c = card(kind, esc=escalation(kind, step={
        Kind.CUSTOMER_MESSAGE: "nudge", Kind.OWNER_TASK: "owner_loop_in",
        Kind.FINANCE_DECISION: "service_pause"}[kind]))
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    actions = [b for b in blocks if b["type"] == "actions"]
    assert len(actions) == 1
    assert escalation_id_from_block_id(actions[0]["block_id"]) == 42
    found = elements(blocks)
    assert [e["action_id"] for e in found] == [a.value for a in expected]
    for e in found:
        if e["type"] == "button":
            assert e["value"] == "42"
    styled = [e["action_id"] for e in found if e.get("style") == "primary"]
    assert styled == ([primary.value] if primary else [])


def test_the_approve_button_reads_approve_and_send() -> None:
    found = elements(build_escalation_card(card(), today=TODAY))
    assert found[0]["text"]["text"] == "Approve & send…"


def test_a_finance_card_offers_the_four_decisions_in_a_select() -> None:
    c = card(Kind.FINANCE_DECISION, esc=escalation(Kind.FINANCE_DECISION, step="service_pause"))
    select = elements(build_escalation_card(c, today=TODAY))[0]
    assert select["type"] == "static_select"
    assert [o["value"] for o in select["options"]] == [d.value for d in FinanceDecision]
    assert [o["text"]["text"] for o in select["options"]] == [
        "Service pause", "Payment plan", "Write-off", "Collections"]
    assert "For finance to decide" in joined(build_escalation_card(c, today=TODAY))


HANDLED_AT = datetime(2026, 5, 14, 9, 12, tzinfo=UTC)


@pytest.mark.parametrize(("kind", "state", "note", "expected"), [
    (Kind.CUSTOMER_MESSAGE, EscalationState.APPROVED, None, "✅ Approved by <@U777> at "),
    (Kind.CUSTOMER_MESSAGE, EscalationState.REJECTED, "they paid by wire <today>",
     "❌ Rejected by <@U777> at "),
    (Kind.OWNER_TASK, EscalationState.DONE, None, "✔️ Done by <@U777> at "),
    (Kind.FINANCE_DECISION, EscalationState.DONE, "payment_plan: 3 monthly instalments",
     "🏦 Finance decided: payment plan (by <@U777> at "),
    (Kind.CUSTOMER_MESSAGE, EscalationState.SENT, None, "📤 Sent · approved by <@U777>"),
    (Kind.OWNER_TASK, EscalationState.SKIPPED, "quarter-end close",
     "⏭️ Set aside by <@U777> at "),
])
def test_a_handled_card_shows_who_handled_it_and_offers_no_actions(
        kind: Kind, state: EscalationState, note: str | None, expected: str) -> None:
    esc = escalation(kind, state=state, handled_by="U777", handled_at=HANDLED_AT, note=note)
    c = card(kind, esc=esc, handled_label="<@U777>")
    blocks = valid_message(build_escalation_card(c, today=TODAY, tz_label="UTC"), card_text(c))
    assert not elements(blocks)
    last = blocks[-1]
    assert last["type"] == "context"
    line = last["elements"][0]["text"]
    assert line.startswith(expected)
    assert f"<!date^{int(HANDLED_AT.timestamp())}^{{time}}|09:12 UTC>" in line
    if state is EscalationState.REJECTED:
        assert line.endswith(": they paid by wire &lt;today&gt;")
    if kind is Kind.FINANCE_DECISION:
        assert line.endswith(": 3 monthly instalments")
    assert handled_text(c).count("09:12 UTC") == 1 and "<!date" not in handled_text(c)


def test_a_card_closed_by_payment_says_the_invoice_was_paid() -> None:
    esc = escalation(state=EscalationState.CLOSED)
    c = card(esc=esc, inv=invoice(paid="12000.00", status=InvoiceStatus.PAID))
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    assert not elements(blocks)
    assert blocks[-1]["elements"][0]["text"] == "💸 Closed: invoice paid"


def test_without_a_slack_label_the_handler_is_shown_escaped() -> None:
    esc = escalation(state=EscalationState.APPROVED, handled_by="bob<x>@example.com")
    line = build_escalation_card(card(esc=esc), today=TODAY)[-1]["elements"][0]["text"]
    assert line == "✅ Approved by bob&lt;x&gt;@example.com"


@pytest.mark.parametrize("name", ["<@U1> Corp", "Evil <!channel> Ltd", "Smith & Sons",
                                  "<http://evil.example|click> Inc", "<!here>"])
def test_customer_names_cannot_inject_mentions_or_links(name: str) -> None:
    who = customer(name)
    inv = invoice(who=who, dispute=Dispute(reason=f"{name} says <@U2>", opened_on=TODAY))
    c = card(inv=inv, others=3, draft=replace(DRAFT, subject=name, body=name),
             last_touch=Touch(HANDLED_AT, "email", name, "<@U9>"))
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    for text in [*all_text(blocks), card_text(c)]:
        assert "<@U1>" not in text and "<!channel>" not in text and "<!here>" not in text
        assert "<@U2>" not in text and "<http" not in text
        assert " & " not in text
    assert escape(name) in card_text(c)
    # The header is plain_text: Slack shows it literally, it parses nothing.
    assert blocks[0]["text"]["type"] == "plain_text"


def test_an_email_owner_label_is_escaped_but_a_mention_stays_a_mention() -> None:
    text = joined(build_escalation_card(card(owner_label="a<b>@example.com"), today=TODAY))
    assert "a&lt;b&gt;@example.com" in text
    assert "<@U123ABC>" in joined(build_escalation_card(card(), today=TODAY))


def test_the_draft_preview_is_cut_and_a_fallback_note_is_shown() -> None:
    long_body = "word " * 1000
    c = card(draft=replace(DRAFT, body=long_body, note="model timed out: template used"))
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    preview = next(t for t in all_text(blocks) if t.startswith("✉️"))
    assert len(preview) < 800 and preview.endswith("…")
    assert "⚠️ model timed out: template used" in joined(blocks)


def test_promise_dispute_and_snooze_state_are_shown() -> None:
    inv = invoice(promise=Promise(date(2026, 5, 10), Decimal("5000")),
                  dispute=Dispute("price differs from the PO", Decimal("1000"), date(2026, 5, 1)),
                  snoozed_until=date(2026, 5, 20))
    text = joined(build_escalation_card(card(inv=inv), today=TODAY))
    assert "🤝 Promise to pay 5,000.00 USD by 2026-05-10 (overdue)" in text
    assert "⚠️ Disputed 1,000.00 USD since 2026-05-01: price differs from the PO" in text
    assert "😴 Snoozed until 2026-05-20" in text


def test_sensitive_and_strategic_accounts_are_flagged_with_their_reasons() -> None:
    risk = replace(RISK, sensitive=True, sensitivity_reasons=(
        "strategic account", "health 30 is below 40 (at risk)"))
    c = card(inv=invoice(who=customer(strategic=True)), risk=risk)
    text = joined(build_escalation_card(c, today=TODAY))
    assert "⭐ strategic account" in text
    assert "🔒 sensitive: health 30 is below 40 (at risk)" in text


def test_many_long_reasons_are_cut_to_a_few_lines_within_limits() -> None:
    esc = escalation(reasons=tuple(f"reason {i} " + "x" * 2500 for i in range(40)))
    risk = replace(RISK, reasons=tuple("r" * 3000 for _ in range(30)))
    c = card(esc=esc, risk=risk, others=300)
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    why = next(t for t in all_text(blocks) if t.startswith("*Why*"))
    assert why.count("• ") <= 5 and "more_" in why
    assert len(why) <= 3000


def test_card_fallback_text_names_customer_invoice_amount_and_step() -> None:
    c = card(inv=invoice(paid="2000.00"))
    assert card_text(c) == "Acme Corp · INV-1042 · 10,000.00 USD due · Firm notice (firm_notice)"


def test_the_owner_header_counts_and_totals_the_day() -> None:
    blocks = build_owner_header(owner_label="<@U1>", day=TODAY, count=3, total_by_currency={
        "USD": Decimal("12000"), "EUR": Decimal("500.5")})
    text = owner_header_text(owner_label="<@U1>", day=TODAY, count=3,
                             total_by_currency={"USD": Decimal("12000")})
    valid_message(blocks, text)
    assert blocks[0]["text"]["text"] == "Dunning · Thu 14 May 2026"
    assert joined(blocks) == "<@U1>: *3* escalations need you today · 12,000.00 USD + " \
        "500.50 EUR due"


def test_a_rendered_card_is_saved_for_people_to_look_at() -> None:
    c = card(others=300)
    blocks = build_escalation_card(c, today=TODAY)
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / "escalation-card.json"
    # Paste into https://app.slack.com/block-kit-builder to see it.
    path.write_text(json.dumps({"text": card_text(c), "blocks": blocks}, indent=2,
                               ensure_ascii=False), encoding="utf-8")
    assert json.loads(path.read_text(encoding="utf-8"))["blocks"] == blocks


def test_ids_carry_the_escalation_id_on_the_actions_block() -> None:
    assert card_actions_block_id(42) == "actions:42"
    assert escalation_id_from_block_id("actions:42") == 42
    for other in ("card", "actions:", "actions:x", "actions:²", "note:1"):
        assert escalation_id_from_block_id(other) is None


# --- modals -------------------------------------------------------------------------------


def test_the_approve_modal_previews_an_editable_draft_with_recipients_and_approval() -> None:
    view = valid_view(build_approve_modal(card(), channel="C1", ts="1715.0001"))
    assert view["callback_id"] == ViewId.APPROVE.value
    assert json.loads(view["private_metadata"]) == {
        "escalation_id": 42, "channel": "C1", "ts": "1715.0001"}
    fields = inputs(view)
    subject = fields[BlockId.SUBJECT.value]["element"]
    body = fields[BlockId.BODY.value]["element"]
    assert subject["action_id"] == input_action(BlockId.SUBJECT)
    assert subject["initial_value"] == DRAFT.subject
    assert body["initial_value"] == DRAFT.body and body["multiline"] is True
    text = joined(view)
    assert "*To:* ap@acme.example   *Cc:* cfo@acme.example" in text
    assert "Needs the owner's approval (<@U123ABC>)." in text
    assert view["submit"]["text"] == "Approve & send"


def test_the_approve_modal_shows_finance_approval_and_sensitivity() -> None:
    esc = escalation(approval=Approval.FINANCE, step="pause_warning")
    risk = replace(RISK, sensitive=True, sensitivity_reasons=("do-not-contact",))
    text = joined(valid_view(build_approve_modal(card(esc=esc, risk=risk), channel=None,
                                                 ts=None)))
    assert "only finance can send this message" in text
    assert "🔒 Sensitive account: do-not-contact." in text


def test_a_body_too_long_to_edit_is_shown_read_only() -> None:
    body = "paragraph. " * 700  # 7,700 characters
    view = valid_view(build_approve_modal(card(draft=replace(DRAFT, body=body)), channel="C",
                                          ts="1"))
    assert BlockId.BODY.value not in inputs(view)
    assert BlockId.SUBJECT.value in inputs(view)
    assert "more than Slack lets us edit here" in joined(view)
    assert joined(view).count("paragraph.") == 700


def test_the_approve_modal_without_a_draft_has_nothing_to_submit() -> None:
    view = valid_view(build_approve_modal(card(draft=None), channel=None, ts=None))
    assert "submit" not in view and "no draft" in joined(view)


def test_the_reject_modal_requires_a_reason() -> None:
    view = valid_view(build_reject_modal(7, channel="C1", ts="2"))
    reason = inputs(view)[BlockId.REASON.value]
    assert "optional" not in reason
    assert reason["element"]["action_id"] == input_action(BlockId.REASON)
    assert parse_private_metadata(view["private_metadata"]).escalation_id == 7


def test_the_snooze_modal_offers_presets_with_their_dates_and_a_custom_date() -> None:
    view = valid_view(build_snooze_modal(7, today=TODAY, quarter_end=date(2026, 6, 30)))
    preset = inputs(view)[BlockId.PRESET.value]["element"]
    assert preset["type"] == "radio_buttons"
    assert [o["value"] for o in preset["options"]] == [p.value for p in SnoozePreset]
    assert [o["text"]["text"] for o in preset["options"]] == [
        "3 days (back on Sun 17 May 2026)", "1 week (back on Thu 21 May 2026)",
        "Until quarter end (back on Wed 1 Jul 2026)", "Custom date (pick the date below)"]
    day = inputs(view)[BlockId.DATE.value]
    assert day["optional"] is True and day["element"]["type"] == "datepicker"
    assert "optional" not in inputs(view)[BlockId.REASON.value]  # kept for the audit trail


def test_snooze_presets_mean_dates() -> None:
    qe = date(2026, 6, 30)
    assert snooze_until(SnoozePreset.THREE_DAYS, today=TODAY, quarter_end=qe,
                        custom=None) == date(2026, 5, 17)
    assert snooze_until(SnoozePreset.ONE_WEEK, today=TODAY, quarter_end=qe,
                        custom=None) == date(2026, 5, 21)
    assert snooze_until(SnoozePreset.QUARTER_END, today=TODAY, quarter_end=qe,
                        custom=None) == date(2026, 7, 1)  # the quarter's last day is covered
    assert snooze_until(SnoozePreset.CUSTOM, today=TODAY, quarter_end=qe, custom=None) is None
    assert snooze_until(SnoozePreset.CUSTOM, today=TODAY, quarter_end=qe,
                        custom=date(2026, 6, 2)) == date(2026, 6, 2)
    assert [calendar_quarter_end(date(2026, m, 15)) for m in (1, 5, 9, 12)] == [
        date(2026, 3, 31), date(2026, 6, 30), date(2026, 9, 30), date(2026, 12, 31)]


def test_the_dispute_modal_starts_from_the_amount_due_in_a_parseable_form() -> None:
    view = valid_view(build_dispute_modal(7, amount_due=Decimal("12000"), currency="USD"))
    fields = inputs(view)
    assert fields[BlockId.AMOUNT.value]["element"]["initial_value"] == "12000.00"
    assert fields[BlockId.AMOUNT.value]["label"]["text"] == "Disputed amount (USD)"
    assert fields[BlockId.CATEGORY.value]["element"]["type"] == "static_select"
    assert fields[BlockId.NOTE.value]["optional"] is True


def test_the_promise_modal_defaults_to_a_week_from_today_and_the_amount_due() -> None:
    view = valid_view(build_promise_modal(7, today=TODAY, amount_due=Decimal("950"),
                                          currency="JPY", channel="C", ts="3"))
    fields = inputs(view)
    assert fields[BlockId.DATE.value]["element"]["initial_date"] == "2026-05-21"
    assert fields[BlockId.AMOUNT.value]["element"]["initial_value"] == "950"


def test_the_reassign_modal_picks_a_user_and_names_the_current_owner() -> None:
    view = valid_view(build_reassign_modal(7, current_owner_label="<@U1>"))
    assert inputs(view)[BlockId.USER.value]["element"]["type"] == "users_select"
    assert "Currently with <@U1>." in joined(view)


def test_the_call_modal_offers_call_outcomes() -> None:
    view = valid_view(build_call_outcome_modal(7))
    outcome = inputs(view)[BlockId.OUTCOME.value]["element"]
    assert "reached_promised" in [o["value"] for o in outcome["options"]]


@pytest.mark.parametrize("decision", list(FinanceDecision))
def test_the_finance_modal_confirms_each_decision(decision: FinanceDecision) -> None:
    inv = invoice(who=customer("A & B <!here>"))
    view = valid_view(build_finance_modal(7, decision, invoice=inv, channel="C", ts="4"))
    meta = parse_private_metadata(view["private_metadata"])
    assert (meta.escalation_id, meta.decision, meta.channel, meta.ts) == (7, decision, "C", "4")
    note = inputs(view)[BlockId.NOTE.value]
    assert ("optional" not in note) == (decision is FinanceDecision.WRITE_OFF)
    text = joined(view)
    assert "A &amp; B &lt;!here&gt;" in text and "12,000.00 USD due" in text


def test_the_result_view_escapes_text_but_keeps_mentions() -> None:
    view = valid_view(build_result_view("Already handled, a very long title indeed",
                                        "Already handled by <@U1> <!channel>"))
    assert len(view["title"]["text"]) <= 24
    assert joined(view) == "Already handled by <@U1> &lt;!channel&gt;"


def test_malformed_private_metadata_is_refused() -> None:
    for bad in ("nope", "[]", '{"channel": "C"}', '{"escalation_id": true}'):
        with pytest.raises(ValueError):
            parse_private_metadata(bad)


# --- App Home and `/dunning mine` ---------------------------------------------------------


def many_cards(n: int) -> list[CardData]:
    return [card(esc=escalation(eid=i, lane=[Lane.EARLY, Lane.LATE, Lane.CRITICAL][i % 3]),
                 inv=invoice(f"INV-{i}", due=date(2026, 1, 1) + timedelta(days=i)))
            for i in range(1, n + 1)]


def test_app_home_lists_the_queue_with_open_buttons_and_recent_activity() -> None:
    view = valid_view(build_home(viewer_label="<@U1>", queue=many_cards(3), activity=[
        ("09:12", "<@U1> approved the nudge for Acme & Co"), ("08:00", "<script>")],
        today=TODAY))
    assert view["type"] == "home"
    buttons = [b["accessory"] for b in view["blocks"] if "accessory" in b]
    assert [b["action_id"] for b in buttons] == [ActionId.OPEN_CARD.value] * 3
    # Lanes by id % 3: 1 late, 2 critical, 3 early. Critical first, then late, then early.
    assert [b["value"] for b in buttons] == ["2", "1", "3"]
    text = joined(view)
    assert "`09:12` <@U1> approved the nudge for Acme &amp; Co" in text
    assert "&lt;script&gt;" in text


def test_app_home_caps_a_long_queue_within_100_blocks() -> None:
    view = valid_view(build_home(viewer_label="ana@example.com", queue=many_cards(300),
                                 activity=[(f"{i:02d}:00", "x" * 400) for i in range(100)],
                                 today=TODAY))
    assert len(view["blocks"]) <= 100
    assert "_and 260 more_" in joined(view)


def test_app_home_with_nothing_queued_says_so() -> None:
    view = valid_view(build_home(viewer_label="<@U1>", queue=[], activity=[], today=TODAY))
    assert "Nothing is waiting for you" in joined(view) and "No activity yet" in joined(view)


def test_mine_lists_open_escalations_compactly_and_caps_them() -> None:
    cards = many_cards(300)
    blocks = valid_message(build_mine(cards, TODAY), mine_text(cards))
    text = joined(blocks)
    assert text.count("INV-") == 30 and "_and 270 more_" in text
    assert mine_text(cards) == "You have 300 open escalations"
    done = [card(esc=escalation(state=EscalationState.DONE))]
    assert "Nothing is waiting" in joined(valid_message(build_mine(done, TODAY),
                                                        mine_text(done)))


def test_caller_text_keeps_mentions_and_pre_escaped_parts_stay_text() -> None:
    text = f"<@U1> approved the nudge for {escape('<@U2> & Co')} <!channel>"
    assert escape_keep_mentions(text) == (
        "<@U1> approved the nudge for &lt;@U2&gt; &amp; Co &lt;!channel&gt;")
    assert escape_keep_mentions(escape_keep_mentions(text)) == escape_keep_mentions(text)


texts = st.text(min_size=0, max_size=4000)


@settings(max_examples=60, deadline=None)
@given(name=texts, number=st.text(min_size=1, max_size=300), reasons=st.lists(texts, max_size=12),
       subject=texts, body=st.text(max_size=9000), note=st.none() | texts,
       others=st.integers(min_value=0, max_value=40),
       state=st.sampled_from(list(EscalationState)), kind=st.sampled_from(list(Kind)))
def test_any_text_anywhere_still_yields_a_valid_card_and_modals(
        name: str, number: str, reasons: list[str], subject: str, body: str,
        note: str | None, others: int, state: EscalationState, kind: Kind) -> None:
    who = customer(name)
    inv = invoice(number, who=who, dispute=Dispute(reason=name, opened_on=TODAY))
    esc = escalation(kind, state=state, reasons=tuple(reasons), note=note, handled_by=note,
                     handled_at=HANDLED_AT)
    c = card(kind, esc=esc, inv=inv, others=others,
             draft=Draft(subject=subject, body=body, to=(name,), note=note),
             last_touch=Touch(HANDLED_AT, name, name, name), owner_label=name)
    valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    valid_view(build_approve_modal(c, channel="C", ts="1"))
    valid_view(build_finance_modal(1, FinanceDecision.WRITE_OFF, invoice=inv))
    valid_view(build_result_view(name, name))


def test_a_card_made_of_the_longest_possible_text_still_fits_one_message() -> None:
    huge = "&<" * 5000
    who = replace(customer(huge, strategic=True, do_not_contact=True, autopay=True),
                  customer_id=huge)
    inv = invoice(huge, who=who, dispute=Dispute(huge, Decimal(1), TODAY),
                  promise=Promise(TODAY, Decimal(1)), snoozed_until=TODAY + timedelta(days=1))
    others = tuple(invoice(f"{huge}{i}", who=who, currency=f"C{i:02d}") for i in range(300))
    risk = replace(RISK, reasons=(huge,) * 20, sensitive=True, sensitivity_reasons=(huge,) * 5)
    for state in (EscalationState.POSTED, EscalationState.REJECTED):
        esc = escalation(step=huge, reasons=(huge,) * 50, state=state, note=huge,
                         handled_by=huge, handled_at=HANDLED_AT)
        c = CardData(escalation=esc, invoice=inv, others=others, risk=risk,
                     draft=Draft(huge, huge, (huge,) * 50, (huge,) * 50, note=huge),
                     last_touch=Touch(HANDLED_AT, huge, huge, huge), owner_label=huge,
                     handled_label=huge)
        valid_message(build_escalation_card(c, today=TODAY, tz_label=huge), card_text(c))


def test_home_and_modals_made_of_the_longest_possible_text_still_fit() -> None:
    huge = "&<" * 5000
    who = customer(huge)
    c = card(esc=escalation(step=huge), inv=invoice(huge, who=who), owner_label=huge,
             draft=Draft(huge, huge, (huge,) * 50, (huge,) * 50, note=huge))
    valid_view(build_home(viewer_label=huge, queue=[c] * 300, activity=[(huge, huge)] * 300,
                          today=TODAY))
    valid_view(build_approve_modal(c, channel="C1", ts="1.2"))
    valid_view(build_reassign_modal(1, current_owner_label=huge))
    valid_view(build_dispute_modal(1, amount_due=Decimal("1e20"), currency="USD"))
    valid_view(build_finance_modal(1, FinanceDecision.WRITE_OFF, invoice=c.invoice))
    valid_view(build_result_view(huge, huge))


def test_customer_card_holds_ten_escalations_within_slack_limits() -> None:
    from dataclasses import replace as _replace

    from blocks.cards import GROUP_MOST, build_customer_card, customer_card_text
    from handlers.limits import check_message

    base = card()
    cards = [_replace(base, escalation=_replace(base.escalation, id=100 + i),
                      invoice=_replace(base.invoice, invoice_id=f"G-{i}", number=f"G-{i}"))
             for i in range(GROUP_MOST)]
    blocks = build_customer_card(cards, today=TODAY)
    check_message(blocks, customer_card_text(cards))
    rows = [b for b in blocks if b["type"] == "actions"]
    assert [r["block_id"] for r in rows] == [f"actions:{100 + i}" for i in range(GROUP_MOST)]
    assert "10 invoices" in blocks[0]["text"]["text"]
    with pytest.raises(ValueError, match="at most"):
        build_customer_card(cards + cards[:1], today=TODAY)
