"""Reply proposals on cards and the paste-a-reply modal: pure builders, no Slack."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import date
from decimal import Decimal
from typing import Any

from blocks.cards import ReplyProposal, build_customer_card, build_escalation_card, card_text
from blocks.ids import ActionId, parse_reply_value, reply_value
from blocks.modals import build_log_reply_modal, parse_private_metadata
from dunning.model import EscalationState
from dunning.replies import Intent, ReplyAnalysis
from tests.unit.test_blocks import TODAY, card, escalation, valid_message


def proposal(reply_id: int = 7, **kw: Any) -> ReplyProposal:
    analysis = ReplyAnalysis(intent=Intent.PROMISE_TO_PAY, promise_date=date(2026, 11, 27),
                             evidence="We will pay on Friday.", confidence=0.9)
    return ReplyProposal(reply_id, replace(analysis, **kw), "imap", "ap@acme.example")


def test_a_promise_proposal_reads_as_a_sentence_with_its_evidence_and_two_buttons() -> None:
    c = card(replies=(proposal(),))
    blocks = valid_message(build_escalation_card(c, today=TODAY), card_text(c))
    text = json.dumps(blocks, ensure_ascii=False)
    assert "💬 Customer promises to pay on Fri 27 Nov 2026 (evidence: “We will pay on " \
           "Friday.”)" in text
    assert "email from ap@acme.example" in text and "possible prompt injection" not in text
    [row] = [b for b in blocks if b.get("block_id") == "reply:7"]
    confirm, dismiss = row["elements"]
    assert (confirm["action_id"], confirm["text"]["text"], confirm["style"]) == (
        ActionId.REPLY_CONFIRM.value, "Log promise", "primary")
    assert dismiss["action_id"] == ActionId.REPLY_DISMISS.value
    assert parse_reply_value(confirm["value"]) == (7, 42) == parse_reply_value(dismiss["value"])


def test_an_injection_is_shown_and_the_confirm_button_is_not_inviting() -> None:
    c = card(replies=(proposal(injection_suspected=True,
                               injection_reasons=("asks the assistant to mark it paid",)),))
    blocks = build_escalation_card(c, today=TODAY)
    text = json.dumps(blocks, ensure_ascii=False)
    assert "⚠️ possible prompt injection in this reply" in text
    [row] = [b for b in blocks if b.get("block_id") == "reply:7"]
    assert "style" not in row["elements"][0]


def test_customer_text_in_a_proposal_cannot_ping_or_link() -> None:
    c = card(replies=(proposal(intent=Intent.DISPUTE, promise_date=None,
                               dispute_reason="<!channel> wrong <https://evil|amount>",
                               evidence="<@U1> we dispute"),))
    text = json.dumps(build_escalation_card(c, today=TODAY), ensure_ascii=False)
    assert "<!channel>" not in text and "<@U1>" not in text and "<https://evil" not in text
    assert "Customer disputes the invoice: &lt;!channel&gt;" in text
    assert "Record dispute" in text


def test_each_intent_has_words_and_a_confirm_label() -> None:
    for intent, words, label in (
            (Intent.ALREADY_PAID, "Customer says it has already paid 1,200.00 USD (reference "
                                  "WIRE-9)", "Note claimed payment"),
            (Intent.OUT_OF_OFFICE, "Out of office until Mon 30 Nov 2026", "Note out of office"),
            (Intent.RESEND_INVOICE, "Customer asks for the invoice again", "Log on the invoice"),
            (Intent.OTHER, "Customer replied", "Log on the invoice")):
        p = proposal(intent=intent, promise_date=None, amount=Decimal("1200.00"),
                     currency="USD", reference="WIRE-9", return_date=date(2026, 11, 30))
        text = json.dumps(build_escalation_card(card(replies=(p,)), today=TODAY),
                          ensure_ascii=False)
        assert f"💬 {words}" in text and f'"{label}"' in text, intent


def test_the_log_reply_button_is_on_open_cards_only() -> None:
    def accessory_ids(blocks: list[dict[str, object]]) -> list[object]:
        return [b["accessory"]["action_id"] for b in blocks  # type: ignore[index]
                if b.get("accessory")]

    assert accessory_ids(build_escalation_card(card(), today=TODAY)) == [
        ActionId.LOG_REPLY.value]
    handled = card(esc=escalation(state=EscalationState.SENT))
    assert accessory_ids(build_escalation_card(handled, today=TODAY)) == []


def test_a_customer_card_shows_at_most_three_proposals_within_slack_limits() -> None:
    rows = [card(esc=escalation(eid=100 + i), replies=tuple(proposal(10 * i + j)
                                                            for j in range(3)))
            for i in range(10)]
    blocks = valid_message(build_customer_card(rows, today=TODAY), "x")
    assert len([b for b in blocks if str(b.get("block_id", "")).startswith("reply:")]) == 3
    assert len(blocks) <= 50


def test_the_modal_carries_the_card_and_the_retry_key() -> None:
    view = build_log_reply_modal(42, invoice_label="Acme <Corp> · INV-1", today=TODAY,
                                 key="trig.1", channel="C1", ts="1.2")
    assert view["callback_id"] == "v_log_reply" and len(view["title"]["text"]) <= 24
    meta = parse_private_metadata(view["private_metadata"])
    assert (meta.escalation_id, meta.channel, meta.ts) == (42, "C1", "1.2")
    assert json.loads(view["private_metadata"])["key"] == "trig.1"
    assert "Acme &lt;Corp&gt;" in json.dumps(view)
    ids = [b.get("block_id") for b in view["blocks"]]
    assert ids[1:] == ["reply_text", "date"]
    assert view["blocks"][2]["element"]["initial_date"] == TODAY.isoformat()


def test_reply_values_round_trip_and_reject_garbage() -> None:
    assert parse_reply_value(reply_value(3, 9)) == (3, 9)
    for bad in (None, "", "3", "a:b", "3:", ":9", "3:9:1", "-3:9", "３:9"):
        assert parse_reply_value(bad) is None, bad
