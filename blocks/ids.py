"""Every action, view and block id the app uses: one place shared by builders and handlers.

Button values carry the escalation id (or the invoice/customer id where said); modal
`private_metadata` carries JSON with the ids the submission needs.
"""

from __future__ import annotations

from enum import StrEnum


class ActionId(StrEnum):
    """`action_id` of interactive elements on cards, App Home and status answers."""

    APPROVE = "esc_approve"  # button: open the draft preview modal (value: escalation id)
    REJECT = "esc_reject"  # button: open the reject modal
    SNOOZE = "esc_snooze"  # button: open the snooze modal
    DISPUTE = "esc_dispute"  # button: open the dispute modal
    PROMISE = "esc_promise"  # button: open the promise-to-pay modal
    REASSIGN = "esc_reassign"  # button: open the reassign modal
    CALL_OUTCOME = "esc_call"  # button: open the call-outcome modal
    DONE = "esc_done"  # button: mark an owner task done
    FINANCE_DECISION = "esc_finance"  # static_select (value: decision; id in the block_id)
    STATUS_PICK = "status_pick"  # button in a "several customers match" answer (value: id)
    OPEN_CARD = "open_card"  # link-style button on App Home (value: escalation id)
    LOG_REPLY = "esc_log_reply"  # button: open the paste-a-customer-reply modal
    REPLY_CONFIRM = "reply_confirm"  # button on a reply proposal (value: reply_value(...))
    REPLY_DISMISS = "reply_dismiss"  # button on a reply proposal (value: reply_value(...))


class ViewId(StrEnum):
    """`callback_id` of modals."""

    APPROVE = "v_approve"
    REJECT = "v_reject"
    SNOOZE = "v_snooze"
    DISPUTE = "v_dispute"
    PROMISE = "v_promise"
    REASSIGN = "v_reassign"
    CALL_OUTCOME = "v_call"
    FINANCE_DECISION = "v_finance"
    LOG_REPLY = "v_log_reply"


class BlockId(StrEnum):
    """`block_id` of modal inputs (the action_id inside each input is `<block_id>_input`)."""

    SUBJECT = "subject"
    BODY = "body"
    REASON = "reason"
    PRESET = "preset"  # snooze presets: 3d, 1w, quarter_end, custom
    DATE = "date"
    AMOUNT = "amount"
    NOTE = "note"
    CATEGORY = "category"  # dispute reason category
    USER = "user"  # reassign: users_select
    OUTCOME = "outcome"  # call outcome
    DECISION = "decision"  # finance decision
    CARD = "card"  # the summary section of a card (for in-place updates)
    ACTIONS = "actions"  # a card's buttons/select: block_id "actions:<escalation id>"
    REPLY_TEXT = "reply_text"  # the pasted customer reply
    REPLY = "reply"  # a reply proposal's buttons: block_id "reply:<reply id>"


def input_action(block: BlockId) -> str:
    """The action_id of the element inside an input block."""
    return f"{block.value}_input"


def card_actions_block_id(escalation_id: int) -> str:
    """The block_id of a card's actions block: carries the escalation id, so the finance
    select (whose value is the decision) still tells the handler which escalation it is."""
    return f"{BlockId.ACTIONS.value}:{escalation_id}"


def escalation_id_from_block_id(block_id: str) -> int | None:
    """The escalation id in a card's actions block_id; None for any other block_id."""
    prefix, sep, rest = block_id.partition(":")
    if prefix != BlockId.ACTIONS.value or not sep or not (rest.isascii() and rest.isdigit()):
        return None
    return int(rest)


def reply_value(reply_id: int, escalation_id: int) -> str:
    """The value of a reply proposal's buttons: the reply, and the card it is shown on (the
    card to update after the click)."""
    return f"{reply_id}:{escalation_id}"


def parse_reply_value(value: str | None) -> tuple[int, int] | None:
    """(reply id, escalation id) from a reply button's value; None when malformed."""
    reply, sep, esc = (value or "").partition(":")
    if not sep or not all(x.isascii() and x.isdigit() for x in (reply, esc)):
        return None
    return int(reply), int(esc)


class SnoozePreset(StrEnum):
    THREE_DAYS = "3d"
    ONE_WEEK = "1w"
    QUARTER_END = "quarter_end"
    CUSTOM = "custom"


class DisputeCategory(StrEnum):
    PRICING = "pricing"
    DELIVERY = "delivery"
    QUALITY = "quality"
    DUPLICATE = "duplicate"
    PO_MISSING = "po_missing"
    OTHER = "other"


class FinanceDecision(StrEnum):
    SERVICE_PAUSE = "service_pause"
    PAYMENT_PLAN = "payment_plan"
    WRITE_OFF = "write_off"
    COLLECTIONS = "collections"


class CallOutcome(StrEnum):
    REACHED_PROMISED = "reached_promised"
    REACHED_DISPUTE = "reached_dispute"
    LEFT_VOICEMAIL = "left_voicemail"
    NO_ANSWER = "no_answer"
    WRONG_CONTACT = "wrong_contact"
