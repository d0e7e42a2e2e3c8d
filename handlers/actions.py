"""Buttons and menus on escalation cards: ack, check, then open a modal or act at once.

Refusals (not allowed, already handled) are ephemeral and change nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond
from slack_sdk import WebClient

from blocks import modals
from blocks.ids import (
    ActionId,
    FinanceDecision,
    escalation_id_from_block_id,
    parse_reply_value,
)
from bot.deps import Deps
from dunning.model import Approval, InvoiceStatus, Kind
from handlers.common import card_data, deps_of, escalation_id_from, person_of, update_card
from services.cards import Card, load_card, mark_done, may_act
from services.common import ServiceError
from services.posting import owner_label
from services.replies import confirm_reply, dismiss_reply
from store.engine import session_scope

log = logging.getLogger(__name__)
View = dict[str, Any]
ModalBuilder = Callable[[Deps, Card, dict[str, Any]], View]


def _where(body: dict[str, Any]) -> dict[str, str | None]:
    container = body.get("container") or {}
    channel = (body.get("channel") or {}).get("id") or container.get("channel_id")
    return {"channel": channel, "ts": container.get("message_ts")}


def _checked_card(deps: Deps, body: dict[str, Any], respond: Respond, *,
                  finance_only: Callable[[Card], bool]) -> Card | None:
    """The clicked card when the clicker may act on it; else an ephemeral refusal."""
    action = body["actions"][0]
    # Buttons carry the escalation id as their value; the finance menu's value is the
    # decision, so its id rides on the actions block's id.
    eid = escalation_id_from_block_id(action.get("block_id", "")) \
        if action.get("type") == "static_select" else escalation_id_from(action.get("value"))
    if eid is None:
        respond(text="This button does not name a card. Nothing was changed.",
                response_type="ephemeral", replace_original=False)
        return None
    try:
        with session_scope(deps.engine) as s:
            card = load_card(s, deps.policy, eid, deps.today())
    except ServiceError as exc:
        respond(text=str(exc), response_type="ephemeral", replace_original=False)
        return None
    if not card.escalation.state.is_open:
        who = card.escalation.handled_by
        by = f" by <@{who}>" if who and who.startswith(("U", "W")) else (f" by {who}" if who
                                                                          else "")
        respond(text=f"This card was already handled ({card.escalation.state.value}{by}). "
                     "Nothing was changed.", response_type="ephemeral", replace_original=False)
        return None
    person = person_of(deps, body["user"]["id"])
    if not may_act(deps.roles, person, card, finance_only=finance_only(card)):
        who = "finance" if finance_only(card) else \
            "the account's owner or CSM, finance or a manager"
        respond(text=f"Sorry, only {who} can act on {card.invoice.customer.name}'s invoice "
                     f"{card.invoice.number}. Nothing was changed.",
                response_type="ephemeral", replace_original=False)
        return None
    return card


def _opener(build: ModalBuilder, *, finance_only: Callable[[Card], bool] = lambda _: False
            ) -> Callable[..., None]:
    def handle(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext,
               respond: Respond) -> None:
        ack()
        deps = deps_of(context)
        card = _checked_card(deps, body, respond, finance_only=finance_only)
        if card is None:
            return
        client.views_open(trigger_id=body["trigger_id"], view=build(deps, card, body))
    return handle


def _approve_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    where = _where(body)
    return modals.build_approve_modal(card_data(deps, card), channel=where["channel"],
                                      ts=where["ts"])


def _reject_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    return modals.build_reject_modal(card.escalation.id, **_where(body))


def _snooze_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    today = deps.today()
    return modals.build_snooze_modal(card.escalation.id, today=today,
                                     quarter_end=modals.calendar_quarter_end(today),
                                     **_where(body))


def _dispute_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    return modals.build_dispute_modal(card.escalation.id, amount_due=card.invoice.amount_due,
                                      currency=card.invoice.currency, **_where(body))


def _promise_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    return modals.build_promise_modal(card.escalation.id, today=deps.today(),
                                      amount_due=card.invoice.amount_due,
                                      currency=card.invoice.currency, **_where(body))


def _reassign_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    return modals.build_reassign_modal(
        card.escalation.id, current_owner_label=owner_label(deps.messenger,
                                                            card.escalation.owner),
        **_where(body))


def _call_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    return modals.build_call_outcome_modal(card.escalation.id, **_where(body))


def _finance_modal(deps: Deps, card: Card, body: dict[str, Any]) -> View:
    selected = (body["actions"][0].get("selected_option") or {}).get("value", "")
    return modals.build_finance_modal(card.escalation.id, FinanceDecision(selected),
                                      invoice=card.invoice, **_where(body))


def _needs_finance_approval(card: Card) -> bool:
    return card.escalation.approval is Approval.FINANCE


def handle_done(ack: Ack, body: dict[str, Any], context: BoltContext,
                respond: Respond) -> None:
    """An owner task marked done: at once, no modal."""
    ack()
    deps = deps_of(context)
    card = _checked_card(deps, body, respond, finance_only=lambda _: False)
    if card is None:
        return
    person = person_of(deps, body["user"]["id"])
    try:
        with session_scope(deps.engine) as s:
            mark_done(s, card, roles=deps.roles, person=person, now=deps.now())
            card = load_card(s, deps.policy, card.escalation.id, deps.today())
    except ServiceError as exc:
        respond(text=str(exc), response_type="ephemeral", replace_original=False)
        return
    update_card(deps, card)


def handle_log_reply(ack: Ack, body: dict[str, Any], client: WebClient, context: BoltContext,
                     respond: Respond) -> None:
    """Open the paste-a-reply modal (any card of an open invoice: a reply is about the
    invoice, whoever handled the card meanwhile)."""
    ack()
    deps = deps_of(context)
    eid = escalation_id_from(body["actions"][0].get("value"))
    if eid is None:
        respond(text="This button does not name a card. Nothing was changed.",
                response_type="ephemeral", replace_original=False)
        return
    try:
        with session_scope(deps.engine) as s:
            card = load_card(s, deps.policy, eid, deps.today())
    except ServiceError as exc:
        respond(text=str(exc), response_type="ephemeral", replace_original=False)
        return
    if card.invoice.status is not InvoiceStatus.OPEN:
        respond(text=f"Invoice {card.invoice.number} is {card.invoice.status.value}: there is "
                     "nothing left to decide. Nothing was changed.",
                response_type="ephemeral", replace_original=False)
        return
    person = person_of(deps, body["user"]["id"])
    if not may_act(deps.roles, person, card, finance_only=False):
        respond(text=f"Sorry, only the account's owner or CSM, finance or a manager can log "
                     f"replies on {card.invoice.customer.name}'s invoice "
                     f"{card.invoice.number}. Nothing was changed.",
                response_type="ephemeral", replace_original=False)
        return
    where = _where(body)
    client.views_open(trigger_id=body["trigger_id"], view=modals.build_log_reply_modal(
        card.escalation.id, invoice_label=f"{card.invoice.customer.name} · "
                                          f"{card.invoice.number}",
        today=deps.today(), key=str(body.get("trigger_id") or ""), channel=where["channel"],
        ts=where["ts"]))


def _reply_decision(confirm: bool) -> Callable[..., None]:
    """Confirm (apply) or dismiss a reply proposal, then update the card it is shown on."""
    def handle(ack: Ack, body: dict[str, Any], context: BoltContext,
               respond: Respond) -> None:
        ack()
        deps = deps_of(context)
        ids = parse_reply_value(body["actions"][0].get("value"))
        if ids is None:
            respond(text="This button does not name a reply. Nothing was changed.",
                    response_type="ephemeral", replace_original=False)
            return
        reply_id, eid = ids
        person = person_of(deps, body["user"]["id"])
        try:
            with session_scope(deps.engine) as s:
                if confirm:
                    confirm_reply(s, deps.policy, reply_id, actor=person, roles=deps.roles,
                                  now=deps.now())
                else:
                    dismiss_reply(s, deps.policy, reply_id, actor=person, roles=deps.roles,
                                  now=deps.now())
        except ServiceError as exc:
            respond(text=str(exc), response_type="ephemeral", replace_original=False)
            return
        try:
            with session_scope(deps.engine) as s:
                card = load_card(s, deps.policy, eid, deps.today())
        except ServiceError:
            return  # applied; the card is gone (another installation, removed)
        update_card(deps, card)
    return handle


def register(app: App) -> None:
    app.action(ActionId.APPROVE.value)(_opener(_approve_modal,
                                               finance_only=_needs_finance_approval))
    app.action(ActionId.REJECT.value)(_opener(_reject_modal))
    app.action(ActionId.SNOOZE.value)(_opener(_snooze_modal))
    app.action(ActionId.DISPUTE.value)(_opener(_dispute_modal))
    app.action(ActionId.PROMISE.value)(_opener(_promise_modal))
    app.action(ActionId.REASSIGN.value)(_opener(_reassign_modal))
    app.action(ActionId.CALL_OUTCOME.value)(_opener(_call_modal))
    app.action(ActionId.FINANCE_DECISION.value)(
        _opener(_finance_modal, finance_only=lambda c: c.escalation.kind is
                Kind.FINANCE_DECISION))
    app.action(ActionId.DONE.value)(handle_done)
    app.action(ActionId.LOG_REPLY.value)(handle_log_reply)
    app.action(ActionId.REPLY_CONFIRM.value)(_reply_decision(confirm=True))
    app.action(ActionId.REPLY_DISMISS.value)(_reply_decision(confirm=False))
