"""Modal submissions: parse, call the service, answer; the card is updated in place right
after the answer (bot.background), so Slack closes the modal without waiting for it.

Field problems come back as modal errors (`response_action="errors"`); refusals (not
allowed, already handled) replace the modal with a short explanation. Either way nothing
changes in the ledger.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any

from slack_bolt import Ack, App, BoltContext

from blocks import modals
from blocks.ids import BlockId, SnoozePreset, ViewId, input_action
from bot.deps import Deps
from handlers.common import deps_of, metadata, person_of, render_card, update_card
from services import actions as ledger
from services.cards import (
    AlreadyHandledError,
    Card,
    NotAllowedError,
    Person,
    approve_draft,
    decide_finance,
    load_card,
    may_act,
    move_card,
    reassign,
    reject_draft,
    set_aside,
)
from services.common import ServiceError
from services.posting import channel_for, owner_label
from services.replies import log_card_reply
from store.engine import session_scope

log = logging.getLogger(__name__)
Values = dict[str, dict[str, Any]]


class FieldError(Exception):
    def __init__(self, block: BlockId, message: str) -> None:
        self.block, self.message = block, message
        super().__init__(message)


def _value(values: Values, block: BlockId) -> Any:
    element = values.get(block.value, {}).get(input_action(block), {})
    for key in ("value", "selected_date", "selected_user"):
        if element.get(key) is not None:
            return element[key]
    option = element.get("selected_option")
    return option.get("value") if option else None


def _text(values: Values, block: BlockId, *, required: bool = False) -> str:
    raw = (_value(values, block) or "").strip()
    if required and not raw:
        raise FieldError(block, "Required")
    return str(raw)


def _amount(values: Values, block: BlockId) -> Decimal | None:
    raw = _text(values, block).replace(",", "")
    if not raw:
        return None
    try:
        value = Decimal(raw)
    except InvalidOperation:
        raise FieldError(block, "Write an amount like 1250.00") from None
    if not value.is_finite() or value <= 0:
        raise FieldError(block, "The amount must be greater than 0")
    return value


def _date(values: Values, block: BlockId, *, required: bool = True) -> date | None:
    raw = _value(values, block)
    if not raw:
        if required:
            raise FieldError(block, "Pick a date")
        return None
    return date.fromisoformat(str(raw))


Submission = Callable[[Deps, Card, Person, Values, dict[str, Any]], None]


def _handler(apply: Submission) -> Callable[..., None]:
    def handle(ack: Ack, body: dict[str, Any], view: dict[str, Any],
               context: BoltContext) -> None:
        deps = deps_of(context)
        meta = metadata(view)
        values: Values = view.get("state", {}).get("values", {})
        person = person_of(deps, body["user"]["id"])
        try:
            eid = int(meta["escalation_id"])
            with session_scope(deps.engine) as s:
                card = load_card(s, deps.policy, eid, deps.today())
            apply(deps, card, person, values, meta)
        except FieldError as exc:
            ack(response_action="errors", errors={exc.block.value: exc.message})
            return
        except (NotAllowedError, AlreadyHandledError) as exc:
            ack(response_action="update", view=modals.build_result_view("Nothing changed",
                                                                        str(exc)))
            return
        except ServiceError as exc:
            ack(response_action="update", view=modals.build_result_view("Not done", str(exc)))
            return
        except (KeyError, ValueError):
            log.exception("malformed modal submission")
            ack(response_action="update", view=modals.build_result_view(
                "Not done", "This form could not be read. Open the card again."))
            return
        ack()
        # Slack has its answer once this returns; the card is re-rendered right after.
        deps.card_updates.submit(card.escalation.id, lambda: refresh_card(deps, eid))
    return handle


def refresh_card(deps: Deps, escalation_id: int) -> None:
    """Show the card's current state where it was posted."""
    try:
        with session_scope(deps.engine) as s:
            fresh = load_card(s, deps.policy, escalation_id, deps.today())
    except ServiceError:  # removed meanwhile: nothing to show
        log.warning("card %s is gone; not updated", escalation_id)
        return
    update_card(deps, fresh)


def _approve(deps: Deps, card: Card, person: Person, values: Values,
             meta: dict[str, Any]) -> None:
    subject = _text(values, BlockId.SUBJECT, required=True)
    # A draft longer than a Slack text input (3,000 characters) is shown read-only: the
    # modal has no body input then, and approving sends the draft as it is.
    has_body = BlockId.BODY.value in values
    body = _text(values, BlockId.BODY, required=True) if has_body else \
        (card.draft.body if card.draft else "")
    with session_scope(deps.engine) as s:
        approve_draft(s, card, roles=deps.roles, person=person, subject=subject, body=body,
                      sender=deps.settings.smtp_from or "ar@example.com", now=deps.now())


def _reject(deps: Deps, card: Card, person: Person, values: Values,
            meta: dict[str, Any]) -> None:
    reason = _text(values, BlockId.REASON, required=True)
    with session_scope(deps.engine) as s:
        reject_draft(s, card, roles=deps.roles, person=person, reason=reason, now=deps.now())


def _snooze(deps: Deps, card: Card, person: Person, values: Values,
            meta: dict[str, Any]) -> None:
    preset = SnoozePreset(_text(values, BlockId.PRESET) or SnoozePreset.CUSTOM.value)
    today = deps.today()
    until = modals.snooze_until(preset, today=today,
                                quarter_end=modals.calendar_quarter_end(today),
                                custom=_date(values, BlockId.DATE, required=False))
    if until is None:
        raise FieldError(BlockId.DATE, "Pick the date the cards resume")
    reason = _text(values, BlockId.REASON, required=True)
    with session_scope(deps.engine) as s:
        set_aside(s, card, roles=deps.roles, person=person, now=deps.now(),
                  note=f"snoozed until {until}: {reason}")
        ledger.snooze(s, deps.policy, scope="customer", target=card.invoice.customer.customer_id,
                      until=until, reason=reason, actor=person.actor, now=deps.now())


def _dispute(deps: Deps, card: Card, person: Person, values: Values,
             meta: dict[str, Any]) -> None:
    category = _text(values, BlockId.CATEGORY, required=True)
    note = _text(values, BlockId.NOTE)
    amount = _amount(values, BlockId.AMOUNT)
    with session_scope(deps.engine) as s:
        set_aside(s, card, roles=deps.roles, person=person, now=deps.now(),
                  note=f"disputed ({category})")
        ledger.open_dispute(s, deps.policy, invoice=card.invoice.invoice_id,
                            reason=f"{category}: {note}" if note else category, amount=amount,
                            note=note, actor=person.actor, now=deps.now())


def _promise(deps: Deps, card: Card, person: Person, values: Values,
             meta: dict[str, Any]) -> None:
    promised = _date(values, BlockId.DATE)
    assert promised is not None
    amount = _amount(values, BlockId.AMOUNT)
    note = _text(values, BlockId.NOTE)
    with session_scope(deps.engine) as s:
        set_aside(s, card, roles=deps.roles, person=person, now=deps.now(),
                  note=f"promise to pay by {promised}")
        ledger.log_promise(s, deps.policy, invoice=card.invoice.invoice_id,
                           promised_date=promised, amount=amount, note=note,
                           actor=person.actor, now=deps.now())


def _reassign(deps: Deps, card: Card, person: Person, values: Values,
              meta: dict[str, Any]) -> None:
    user_id = _text(values, BlockId.USER, required=True)
    email = deps.messenger.email_of(user_id)
    if not email:
        raise FieldError(BlockId.USER, "This person has no email in their Slack profile")
    with session_scope(deps.engine) as s:
        reassign(s, card, roles=deps.roles, person=person, new_owner=email, now=deps.now())
    channel = channel_for(deps.messenger, email, channels=deps.settings.owner_channels(),
                          fallback=deps.settings.dunning_digest_channel)
    if channel and channel != card.channel:
        with session_scope(deps.engine) as s:
            moved = load_card(s, deps.policy, card.escalation.id, deps.today())
        blocks, text = render_card(deps, moved, owner_label(deps.messenger, email))
        new_channel, ts = deps.messenger.post(channel, blocks=blocks, text=text)
        if card.channel and card.ts:
            deps.messenger.update(card.channel, card.ts, blocks=[{
                "type": "section", "text": {"type": "mrkdwn", "text":
                    f"↪️ Reassigned to <@{user_id}> by <@{person.user_id}>."}}],
                text="Card reassigned")
        with session_scope(deps.engine) as s:
            move_card(s, card.escalation.id, channel=new_channel, ts=ts)


def _call(deps: Deps, card: Card, person: Person, values: Values,
          meta: dict[str, Any]) -> None:
    outcome = _text(values, BlockId.OUTCOME, required=True)
    note = _text(values, BlockId.NOTE)
    with session_scope(deps.engine) as s:
        ledger.record_touch(s, deps.policy, invoice=card.invoice.invoice_id, channel="call",
                            summary=f"{outcome.replace('_', ' ')}" + (f": {note}" if note
                                                                         else ""),
                            actor=person.actor, now=deps.now())


def _finance(deps: Deps, card: Card, person: Person, values: Values,
             meta: dict[str, Any]) -> None:
    decision = str(meta.get("decision") or _text(values, BlockId.DECISION, required=True))
    note = _text(values, BlockId.NOTE, required=decision == "write_off")
    with session_scope(deps.engine) as s:
        decide_finance(s, deps.policy, card, roles=deps.roles, person=person,
                       decision=decision, note=note, now=deps.now())


def _log_reply(deps: Deps, card: Card, person: Person, values: Values,
               meta: dict[str, Any]) -> None:
    """A pasted customer reply: stored and read now; the card then shows the proposal."""
    text = _text(values, BlockId.REPLY_TEXT, required=True)
    received = _date(values, BlockId.DATE, required=False)
    if not may_act(deps.roles, person, card, finance_only=False):
        raise NotAllowedError("Only the account's owner or CSM, finance or a manager can log "
                              f"replies on {card.invoice.customer.name}'s invoice. Nothing "
                              "was changed.")
    key = meta.get("key")
    with session_scope(deps.engine) as s:
        log_card_reply(s, card.escalation.id, text, actor=person.actor, now=deps.now(),
                       received=received, key=str(key) if key else None, llm=deps.llm,
                       budget_usd=deps.settings.llm_daily_budget_usd)


def register(app: App) -> None:
    for view_id, apply in ((ViewId.APPROVE, _approve), (ViewId.REJECT, _reject),
                           (ViewId.SNOOZE, _snooze), (ViewId.DISPUTE, _dispute),
                           (ViewId.PROMISE, _promise), (ViewId.REASSIGN, _reassign),
                           (ViewId.CALL_OUTCOME, _call), (ViewId.FINANCE_DECISION, _finance),
                           (ViewId.LOG_REPLY, _log_reply)):
        app.view(view_id.value)(_handler(apply))
