"""What every listener shares: the deps from Bolt's context, who clicked, card rendering."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from typing import Any

from slack_bolt import BoltContext

from blocks.cards import (
    CardData,
    ReplyProposal,
    build_customer_card,
    build_escalation_card,
    card_text,
    customer_card_text,
)
from blocks.kit import escape
from bot.deps import Deps
from connectors.errors import ConnectorError
from connectors.imap import MailSource
from handlers.limits import BlockLimitError, check_message
from services.cards import Card, Person, cards_in_message, load_card
from services.posting import owner_label
from services.replies import PollResult, card_for_invoice, pending_replies, poll_mailbox
from store.engine import session_scope

log = logging.getLogger(__name__)
Blocks = list[dict[str, Any]]


def deps_of(context: BoltContext) -> Deps:
    deps = context.get("deps")
    assert isinstance(deps, Deps), "the deps middleware is not installed"
    return deps


def person_of(deps: Deps, user_id: str) -> Person:
    """The Slack user and their email (Slack's profile), for authorization and audit."""
    try:
        email = deps.messenger.email_of(user_id)
    except ConnectorError:
        email = None
    return Person(user_id=user_id, email=email)


def card_data(deps: Deps, card: Card, label: str | None = None) -> CardData:
    label = label or owner_label(deps.messenger, card.escalation.owner)
    handled = card.escalation.handled_by
    return CardData(
        escalation=card.escalation, invoice=card.invoice, others=card.others, risk=card.risk,
        draft=card.draft, last_touch=card.last_touch, owner_label=label,
        handled_label=(f"<@{handled}>" if handled and handled.startswith(("U", "W"))
                       else handled),
    )


def _guarded(deps: Deps, blocks: Blocks, text: str, what: str) -> tuple[Blocks, str]:
    try:
        check_message(blocks, text)
    except BlockLimitError as exc:
        # Never post what Slack would refuse: a plain card still reaches the owner.
        log.error("%s breaks Slack limits (%s); posting a plain card", what,
                  "; ".join(exc.problems[:3]))
        blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": escape(text)[:2900]}}]
    return blocks, text


def _with_replies(deps: Deps, data: list[CardData]) -> list[CardData]:
    """The cards with the customer-reply proposals waiting on their invoices."""
    with session_scope(deps.engine) as s:
        pending = pending_replies(s, [d.invoice.invoice_id for d in data])
    if not pending:
        return data
    return [replace(d, replies=tuple(
        ReplyProposal(p.reply_id, p.analysis, p.source, p.sender)
        for p in pending.get(d.invoice.invoice_id, ()))) for d in data]


def render_card(deps: Deps, card: Card, label: str | None = None) -> tuple[Blocks, str]:
    [data] = _with_replies(deps, [card_data(deps, card, label)])
    blocks = build_escalation_card(data, today=deps.today(),
                                   tz_label=deps.settings.dunning_timezone)
    return _guarded(deps, blocks, card_text(data), f"card {card.escalation.id}")


def render_group(deps: Deps, cards: list[Card], label: str | None = None
                 ) -> tuple[Blocks, str]:
    data = _with_replies(deps, [card_data(deps, c, label) for c in cards])
    blocks = build_customer_card(data, today=deps.today(),
                                 tz_label=deps.settings.dunning_timezone)
    return _guarded(deps, blocks, customer_card_text(data),
                    f"customer card {cards[0].escalation.id}")


def update_card(deps: Deps, card: Card) -> None:
    """Re-render the card where it was posted (in place), with the other escalations that
    share its message; log, never fail the action."""
    if not card.channel or not card.ts:
        return
    with session_scope(deps.engine) as s:
        group = cards_in_message(s, deps.policy, card, deps.today())
    blocks, text = render_group(deps, group) if len(group) > 1 else render_card(deps, card)
    try:
        deps.messenger.update(card.channel, card.ts, blocks=blocks, text=text)
    except ConnectorError:
        log.exception("card %s not updated in place", card.escalation.id)


def refresh_reply_cards(deps: Deps, invoice_ids: list[str]) -> int:
    """Show new reply proposals on the invoices' cards (updated in place); how many cards
    were updated. Invoices without a card on Slack are skipped."""
    updated = 0
    for invoice_id in invoice_ids:
        with session_scope(deps.engine) as s:
            eid = card_for_invoice(s, invoice_id)
            card = load_card(s, deps.policy, eid, deps.today()) if eid is not None else None
        if card is not None and card.channel and card.ts:
            update_card(deps, card)
            updated += 1
    return updated


def poll_replies(deps: Deps, poller: MailSource) -> PollResult:
    """The IMAP job: store new customer replies, then show their proposals on the cards.

    Raises ConnectorError when the mailbox cannot be read; what was stored stays stored.
    """
    result = poll_mailbox(deps.engine, poller, now=deps.now(),
                          default_timezone=deps.settings.dunning_timezone, llm=deps.llm,
                          budget_usd=deps.settings.llm_daily_budget_usd)
    if result.invoices:
        refresh_reply_cards(deps, result.invoices)
    return result


def escalation_id_from(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def metadata(view: dict[str, Any]) -> dict[str, Any]:
    try:
        data = json.loads(view.get("private_metadata") or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
