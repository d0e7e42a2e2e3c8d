"""Post the day's new escalation cards, grouped per owner, to each owner's channel.

gather: escalations in state `proposed` (a draft made for customer messages); decide: the
channel per owner (configured map, else a DM to the owner's Slack account, else the
fallback channel); apply: one short header per owner, one card per escalation, channel and
ts stored so the card can be updated in place. Several escalations of one customer on the
same day share one card (up to GROUP_MOST per message). The renderers come from the caller (the
composition root passes the Block Kit builders), so this module stays free of Slack
layout. A card that fails to post stays `proposed` and is tried again on the next run.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy.engine import Engine

from connectors.errors import ConnectorError
from connectors.slack import Messenger
from dunning.policy import Policy
from services.cards import Card, cards_to_post, ensure_draft, load_card, mark_posted
from store.engine import session_scope

log = logging.getLogger(__name__)
Blocks = list[dict[str, Any]]
CardRenderer = Callable[[Card, str], tuple[Blocks, str]]  # (card, owner_label) -> blocks, text
GroupRenderer = Callable[[list[Card], str], tuple[Blocks, str]]  # one customer's cards
GROUP_MOST = 10  # escalations of one customer per message
HeaderRenderer = Callable[[str, date, int, dict[str, Decimal]], tuple[Blocks, str]]


@dataclass
class PostResult:
    posted: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    channels: dict[str, int] = field(default_factory=dict)


def owner_label(messenger: Messenger, email: str | None) -> str:
    """`<@U123>` when the owner has a Slack account, else the email (or "unassigned")."""
    if not email:
        return "unassigned"
    try:
        user_id = messenger.user_id_for(email)
    except ConnectorError:
        user_id = None
    return f"<@{user_id}>" if user_id else email


def channel_for(messenger: Messenger, owner: str | None, *, channels: dict[str, str],
                fallback: str | None) -> str | None:
    if owner and owner.lower() in channels:
        return channels[owner.lower()]
    if owner:
        user_id = messenger.user_id_for(owner)
        if user_id:
            return messenger.dm_channel(user_id)
    return fallback


def post_new_cards(engine: Engine, policy: Policy, messenger: Messenger, *,
                   render_card: CardRenderer, render_group: GroupRenderer,
                   render_header: HeaderRenderer,
                   channels: dict[str, str], fallback_channel: str | None, sender_name: str,
                   today: date, now: datetime) -> PostResult:
    result = PostResult()
    with session_scope(engine) as session:
        ids = cards_to_post(session)
        for escalation_id in ids:
            ensure_draft(session, escalation_id, sender_name=sender_name, now=now)
        cards = [load_card(session, policy, i, today) for i in ids]
    by_owner: dict[str | None, list[Card]] = defaultdict(list)
    for card in cards:
        by_owner[card.escalation.owner].append(card)
    for owner, group in sorted(by_owner.items(), key=lambda kv: kv[0] or "~"):
        label = owner_label(messenger, owner)
        try:
            channel = channel_for(messenger, owner, channels=channels, fallback=fallback_channel)
        except ConnectorError as exc:
            log.warning("no channel for owner %s: %s", owner, exc)
            channel = fallback_channel
        if channel is None:
            result.failed.extend((c.escalation.id, "no channel for the owner") for c in group)
            continue
        totals: dict[str, Decimal] = defaultdict(Decimal)
        for c in group:
            totals[c.invoice.currency] += c.invoice.amount_due
        try:
            blocks, text = render_header(label, today, len(group), dict(totals))
            messenger.post(channel, blocks=blocks, text=text)
        except ConnectorError as exc:
            log.warning("header for %s not posted: %s", owner, exc)
        by_customer: dict[str, list[Card]] = defaultdict(list)
        for card in group:
            by_customer[card.invoice.customer.customer_id].append(card)
        for cards in by_customer.values():
            # A customer with several steps due today gets one card for them, not many.
            for start in range(0, len(cards), GROUP_MOST):
                batch = cards[start:start + GROUP_MOST]
                try:
                    blocks, text = (render_card(batch[0], label) if len(batch) == 1
                                    else render_group(batch, label))
                    posted_channel, ts = messenger.post(channel, blocks=blocks, text=text)
                except ConnectorError as exc:
                    result.failed.extend((c.escalation.id, str(exc)) for c in batch)
                    continue
                with session_scope(engine) as session:
                    for c in batch:
                        mark_posted(session, c.escalation.id, channel=posted_channel, ts=ts)
                result.posted += len(batch)
                result.channels[posted_channel] = result.channels.get(posted_channel, 0) + \
                    len(batch)
    return result
