"""Modals opened from a card's buttons; each carries its ids in `private_metadata`.

`private_metadata` is compact JSON: always `escalation_id`, plus `channel` and `ts` of the
card when given (so the submission can update the card in place), plus `decision` on the
finance modal. `parse_private_metadata` reads it back. Input blocks use `BlockId`s, and the
element inside each is `input_action(block_id)`.

The approve modal offers the body for editing only when it fits Slack's 3,000-character
input: a longer body is shown read-only, and its submission has no `body` input, which
means "send the draft body as it is".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from blocks.cards import FINANCE_WORDS, CardData, step_words
from blocks.ids import (
    BlockId,
    CallOutcome,
    DisputeCategory,
    FinanceDecision,
    SnoozePreset,
    ViewId,
    input_action,
)
from blocks.kit import (
    Block,
    chunks,
    clip,
    clip_plain,
    context,
    escape,
    escape_keep_mentions,
    label,
    money,
    one_line,
    option,
    plain,
    section,
    short_date,
)
from dunning.model import Approval, InvoiceState
from dunning.money import format_money, quantize

MAX_INPUT = 3000  # Slack's limit for a plain_text_input value
BODY_CHUNK = 2500  # raw characters per read-only section of a long body
BODY_CHUNKS = 12  # sections of a long body shown read-only, at most
NOTE_MAX = 2000
PROMISE_DAYS = 7  # default promised date: a week from today

SNOOZE_WORDS: dict[SnoozePreset, str] = {
    SnoozePreset.THREE_DAYS: "3 days",
    SnoozePreset.ONE_WEEK: "1 week",
    SnoozePreset.QUARTER_END: "Until quarter end",
    SnoozePreset.CUSTOM: "Custom date",
}

DISPUTE_WORDS: dict[DisputeCategory, str] = {
    DisputeCategory.PRICING: "Pricing or quantity",
    DisputeCategory.DELIVERY: "Not delivered / service not received",
    DisputeCategory.QUALITY: "Quality or service problem",
    DisputeCategory.DUPLICATE: "Duplicate invoice or already paid",
    DisputeCategory.PO_MISSING: "PO number missing or wrong",
    DisputeCategory.OTHER: "Other",
}

CALL_WORDS: dict[CallOutcome, str] = {
    CallOutcome.REACHED_PROMISED: "Reached: promised to pay",
    CallOutcome.REACHED_DISPUTE: "Reached: disputes the invoice",
    CallOutcome.LEFT_VOICEMAIL: "Left a voicemail",
    CallOutcome.NO_ANSWER: "No answer",
    CallOutcome.WRONG_CONTACT: "Wrong contact",
}

FINANCE_TITLES: dict[FinanceDecision, str] = {
    FinanceDecision.SERVICE_PAUSE: "Pause service",
    FinanceDecision.PAYMENT_PLAN: "Payment plan",
    FinanceDecision.WRITE_OFF: "Write off",
    FinanceDecision.COLLECTIONS: "Send to collections",
}

FINANCE_EXPLAINED: dict[FinanceDecision, str] = {
    FinanceDecision.SERVICE_PAUSE:
        "Pause the customer's service until the invoice is paid. Tell the owner before "
        "the customer notices.",
    FinanceDecision.PAYMENT_PLAN:
        "Agree a payment plan with the customer. Put the instalments and dates in the note.",
    FinanceDecision.WRITE_OFF:
        "Write the amount due off as uncollectible. This cannot be undone here; say why in "
        "the note.",
    FinanceDecision.COLLECTIONS:
        "Hand the invoice to the collections agency. Routine reminders stop.",
}


@dataclass(frozen=True)
class ModalMeta:
    """What a modal's `private_metadata` carries back to its submission handler."""

    escalation_id: int
    channel: str | None = None
    ts: str | None = None
    decision: FinanceDecision | None = None


def parse_private_metadata(text: str) -> ModalMeta:
    """Read back what `build_*_modal` put in `private_metadata`; ValueError if malformed."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError("private_metadata is not JSON") from exc
    if not isinstance(data, dict):
        raise ValueError("private_metadata is not a JSON object")
    eid = data.get("escalation_id")
    if not isinstance(eid, int) or isinstance(eid, bool):
        raise ValueError("private_metadata has no escalation_id")
    channel, ts, decision = data.get("channel"), data.get("ts"), data.get("decision")
    return ModalMeta(
        escalation_id=eid,
        channel=channel if isinstance(channel, str) else None,
        ts=ts if isinstance(ts, str) else None,
        decision=FinanceDecision(decision) if isinstance(decision, str) else None,
    )


def snooze_until(preset: SnoozePreset, *, today: date, quarter_end: date,
                 custom: date | None) -> date | None:
    """The day the cards come back (`snoozed_until`) for a preset: a quarter-end snooze
    covers the last day of the quarter, so cards resume the day after. None for a custom
    snooze without a date."""
    if preset is SnoozePreset.THREE_DAYS:
        return today + timedelta(days=3)
    if preset is SnoozePreset.ONE_WEEK:
        return today + timedelta(days=7)
    if preset is SnoozePreset.QUARTER_END:
        return quarter_end + timedelta(days=1)
    return custom


def calendar_quarter_end(day: date) -> date:
    """The last day of `day`'s calendar quarter (for companies whose fiscal year is the
    calendar year; others pass their own `quarter_end`)."""
    first_of_next = date(day.year + (day.month > 9), (((day.month - 1) // 3 + 1) * 3) % 12 + 1,
                         1)
    return first_of_next - timedelta(days=1)


# --- modals ----------------------------------------------------------------------------------


def build_approve_modal(card: CardData, *, channel: str | None = None,
                        ts: str | None = None) -> dict[str, Any]:
    """Preview of the customer message: subject and body editable, recipients and the
    approval requirement shown."""
    esc, inv, draft = card.escalation, card.invoice, card.draft
    meta = _meta(esc.id, channel, ts)
    intro = section(
        f"*{escape(one_line(inv.customer.name))}* · {escape(one_line(inv.number))} · "
        f"{money(inv.amount_due, inv.currency)} due · {escape(step_words(esc.step, esc.kind))}"
        + (f"\nTone *{esc.tone.value}*" if esc.tone else ""))
    if draft is None:
        return _modal(ViewId.APPROVE, "Approve & send", [
            intro, section("There is no draft for this card yet. Try again in a minute.")],
            submit=None, close="Close", meta=meta)
    blocks: list[Block] = [intro, context(*_approval_lines(card))]
    to = ", ".join(escape(a) for a in draft.to) or "_no recipient_"
    recipients = f"*To:* {to}"
    if draft.cc:
        recipients += f"   *Cc:* {', '.join(escape(a) for a in draft.cc)}"
    blocks.append(context(recipients))
    if draft.note:
        blocks.append(context(f"⚠️ {escape(one_line(draft.note))}"))
    blocks.append(_text_input(BlockId.SUBJECT, "Subject",
                              initial=one_line(draft.subject)[:MAX_INPUT]))
    if len(draft.body) <= MAX_INPUT:
        blocks.append(_text_input(BlockId.BODY, "Message", initial=draft.body, multiline=True,
                                  max_length=MAX_INPUT))
    else:
        blocks.append(context(
            f"The message is {len(draft.body):,} characters long, more than Slack lets us "
            "edit here: approve it as it is, or reject it to have it redrafted."))
        pieces = chunks(draft.body, BODY_CHUNK)
        for piece in pieces[:BODY_CHUNKS]:
            if piece.strip():
                blocks.append(section(clip(escape(piece), 3000)))
        if len(pieces) > BODY_CHUNKS:
            blocks.append(context(f"_{len(pieces) - BODY_CHUNKS} more parts not shown_"))
    return _modal(ViewId.APPROVE, "Approve & send", blocks, submit="Approve & send",
                  meta=meta)


def build_reject_modal(escalation_id: int, *, channel: str | None = None,
                       ts: str | None = None) -> dict[str, Any]:
    """Reject a draft: nothing is sent, and the reason is required."""
    return _modal(ViewId.REJECT, "Reject draft", [
        section("Nothing will be sent to the customer. Say why, so the next draft is better."),
        _text_input(BlockId.REASON, "Reason", multiline=True, max_length=NOTE_MAX,
                    placeholder="e.g. they paid by wire yesterday; the tone is too firm"),
    ], submit="Reject", meta=_meta(escalation_id, channel, ts))


def build_snooze_modal(escalation_id: int, *, today: date, quarter_end: date,
                       channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """Snooze the card: a preset (3 days, 1 week, quarter end) or a custom date. Each
    preset shows the day the cards come back, as `snooze_until` computes it."""
    def until(preset: SnoozePreset) -> str:
        day = snooze_until(preset, today=today, quarter_end=quarter_end, custom=None)
        return f" (back on {short_date(day)})" if day else " (pick the date below)"

    options = [option(SNOOZE_WORDS[p] + until(p), p.value) for p in SnoozePreset]
    return _modal(ViewId.SNOOZE, "Snooze", [
        {"type": "input", "block_id": BlockId.PRESET.value, "label": plain("Snooze for"),
         "element": {"type": "radio_buttons", "action_id": input_action(BlockId.PRESET),
                     "options": options, "initial_option": options[0]}},
        {"type": "input", "block_id": BlockId.DATE.value, "optional": True,
         "label": plain("Custom date: back on"),
         "hint": plain("Only used with “Custom date”: the day the cards come back."),
         "element": {"type": "datepicker", "action_id": input_action(BlockId.DATE),
                     "placeholder": plain("Pick a date")}},
        _text_input(BlockId.REASON, "Reason", max_length=NOTE_MAX,
                    placeholder="e.g. quarter-end close, owner on leave"),
    ], submit="Snooze", meta=_meta(escalation_id, channel, ts))


def build_dispute_modal(escalation_id: int, *, amount_due: Decimal, currency: str,
                        channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """Mark the invoice disputed: routine reminders stop and the owner reviews it."""
    return _modal(ViewId.DISPUTE, "Dispute", [
        section("A dispute stops routine reminders for this invoice until it is resolved."),
        _select(BlockId.CATEGORY, "What is disputed",
                [option(DISPUTE_WORDS[c], c.value) for c in DisputeCategory]),
        _text_input(BlockId.AMOUNT, f"Disputed amount ({currency})",
                    initial=_amount_text(amount_due, currency), max_length=40,
                    hint=f"The amount due is {format_money(amount_due, currency)}."),
        _text_input(BlockId.NOTE, "Note", multiline=True, optional=True, max_length=NOTE_MAX,
                    placeholder="What the customer said"),
    ], submit="Save dispute", meta=_meta(escalation_id, channel, ts))


def build_promise_modal(escalation_id: int, *, today: date, amount_due: Decimal, currency: str,
                        channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """Log a promise to pay: reminders pause until the promised date (plus grace)."""
    return _modal(ViewId.PROMISE, "Promise to pay", [
        {"type": "input", "block_id": BlockId.DATE.value, "label": plain("Promised date"),
         "element": {"type": "datepicker", "action_id": input_action(BlockId.DATE),
                     "initial_date": (today + timedelta(days=PROMISE_DAYS)).isoformat()}},
        _text_input(BlockId.AMOUNT, f"Amount ({currency})",
                    initial=_amount_text(amount_due, currency), max_length=40),
        _text_input(BlockId.NOTE, "Note", multiline=True, optional=True, max_length=NOTE_MAX,
                    placeholder="Who promised, how they will pay"),
    ], submit="Log promise", meta=_meta(escalation_id, channel, ts))


def build_reassign_modal(escalation_id: int, *, current_owner_label: str,
                         channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """Give the card to someone else."""
    return _modal(ViewId.REASSIGN, "Reassign", [
        section(f"Currently with {label(current_owner_label)}."),
        {"type": "input", "block_id": BlockId.USER.value, "label": plain("New owner"),
         "element": {"type": "users_select", "action_id": input_action(BlockId.USER),
                     "placeholder": plain("Pick a person")}},
    ], submit="Reassign", meta=_meta(escalation_id, channel, ts))


def build_call_outcome_modal(escalation_id: int, *, channel: str | None = None,
                             ts: str | None = None) -> dict[str, Any]:
    """Log a phone call with the customer."""
    return _modal(ViewId.CALL_OUTCOME, "Log a call", [
        _select(BlockId.OUTCOME, "Outcome", [option(CALL_WORDS[c], c.value) for c in CallOutcome]),
        _text_input(BlockId.NOTE, "Note", multiline=True, optional=True, max_length=NOTE_MAX,
                    placeholder="Who you spoke to, what was agreed"),
    ], submit="Log call", meta=_meta(escalation_id, channel, ts))


def build_finance_modal(escalation_id: int, decision: FinanceDecision, *, invoice: InvoiceState,
                        channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """Confirm a finance decision; a write-off needs a note."""
    inv = invoice
    write_off = decision is FinanceDecision.WRITE_OFF
    meta = _meta(escalation_id, channel, ts, decision=decision.value)
    return _modal(ViewId.FINANCE_DECISION, FINANCE_TITLES[decision], [
        section(f"Decide *{FINANCE_WORDS[decision]}* for "
                f"*{escape(one_line(inv.customer.name))}*: invoice "
                f"{escape(one_line(inv.number))}, {money(inv.amount_due, inv.currency)} due "
                f"(due date {inv.due_date.isoformat()})."),
        context(FINANCE_EXPLAINED[decision]),
        _text_input(BlockId.NOTE, "Why write it off?" if write_off else "Note", multiline=True,
                    optional=not write_off, max_length=NOTE_MAX),
    ], submit="Confirm", meta=meta)


def build_log_reply_modal(escalation_id: int, *, invoice_label: str, today: date, key: str,
                          channel: str | None = None, ts: str | None = None) -> dict[str, Any]:
    """Paste a customer's reply (an email, a chat message, call notes in their words): the
    bot proposes the next step on the card and changes nothing until someone confirms.

    `key` (the click's trigger id) rides in the metadata so a retried submission is stored
    once. `invoice_label` is plain text ("Acme Corporation · 2026-0311").
    """
    return _modal(ViewId.LOG_REPLY, "Log customer reply", [
        section(f"Reply about *{escape(one_line(invoice_label))}*. The bot reads it and "
                "proposes a next step on the card; nothing changes until you confirm it."),
        _text_input(BlockId.REPLY_TEXT, "The customer's reply", multiline=True,
                    max_length=MAX_INPUT,
                    placeholder="Paste the email or message as the customer wrote it"),
        {"type": "input", "block_id": BlockId.DATE.value, "label": plain("Received on"),
         "hint": plain("Dates like “next Friday” are read from this day."),
         "element": {"type": "datepicker", "action_id": input_action(BlockId.DATE),
                     "initial_date": today.isoformat()}},
    ], submit="Read reply", meta=_meta(escalation_id, channel, ts, key=key[:200]))


def build_result_view(title: str, text: str) -> dict[str, Any]:
    """A plain modal to say something (an error, "Already handled by <@U1>").

    `text` is escaped except for `<@U123>` mentions, so it may name people but not inject.
    """
    return {
        "type": "modal",
        "title": plain(clip_plain(one_line(title) or "Dunning", 24)),
        "close": plain("Close"),
        "blocks": [section(escape_keep_mentions(text) or "—")],
    }


# --- pieces ----------------------------------------------------------------------------------


def _meta(escalation_id: int, channel: str | None, ts: str | None, **extra: str) -> str:
    data: dict[str, Any] = {"escalation_id": escalation_id}
    if channel is not None:
        data["channel"] = channel
    if ts is not None:
        data["ts"] = ts
    data.update(extra)
    return json.dumps(data, separators=(",", ":"), sort_keys=True)


def _modal(view_id: ViewId, title: str, blocks: list[Block], *, submit: str | None,
           meta: str, close: str = "Cancel") -> dict[str, Any]:
    view: dict[str, Any] = {
        "type": "modal",
        "callback_id": view_id.value,
        "title": plain(clip_plain(title, 24)),
        "close": plain(close),
        "private_metadata": meta,
        "blocks": blocks,
    }
    if submit is not None:
        view["submit"] = plain(clip_plain(submit, 24))
    return view


def _text_input(block: BlockId, label_text: str, *, initial: str | None = None,
                multiline: bool = False, optional: bool = False, max_length: int | None = None,
                placeholder: str | None = None, hint: str | None = None) -> Block:
    element: dict[str, Any] = {"type": "plain_text_input", "action_id": input_action(block)}
    if multiline:
        element["multiline"] = True
    if max_length is not None:
        element["max_length"] = max_length
    if initial:
        element["initial_value"] = initial[:max_length or MAX_INPUT]
    if placeholder:
        element["placeholder"] = plain(clip_plain(placeholder, 150))
    out: Block = {"type": "input", "block_id": block.value, "label": plain(label_text),
                  "element": element}
    if optional:
        out["optional"] = True
    if hint:
        out["hint"] = plain(hint)
    return out


def _select(block: BlockId, label_text: str, options: list[dict[str, Any]]) -> Block:
    return {"type": "input", "block_id": block.value, "label": plain(label_text),
            "element": {"type": "static_select", "action_id": input_action(block),
                        "placeholder": plain("Choose…"), "options": options}}


def _amount_text(amount: Decimal, currency: str) -> str:
    """An amount a person can edit and `parse_amount` reads back: no thousands separator."""
    return str(quantize(amount, currency))


def _approval_lines(card: CardData) -> list[str]:
    esc = card.escalation
    owner = label(card.owner_label)
    lines = [{
        Approval.NONE: "No approval needed: this step may be sent as it is.",
        Approval.OWNER: f"Needs the owner's approval ({owner}).",
        Approval.FINANCE: "Needs finance approval: only finance can send this message.",
        None: "Approval not set.",
    }[esc.approval]]
    if card.risk.sensitive:
        lines.append("🔒 Sensitive account: "
                     + escape("; ".join(card.risk.sensitivity_reasons)) + ".")
    return lines
