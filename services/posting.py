"""Post the day's new escalation cards, grouped per owner, to each owner's channel.

gather: escalations in state `proposed` (a draft made for customer messages); decide: the
channel per owner (configured map, else a DM to the owner's Slack account, else the
fallback channel); apply: one short header per owner, one card per escalation, channel and
ts stored so the card can be updated in place. Several escalations of one customer on the
same day share one card (up to GROUP_MOST per message). The renderers come from the caller (the
composition root passes the Block Kit builders), so this module stays free of Slack
layout.

Exactly once per card, across crashes: each card is claimed (`proposed -> posting`, with
its channel) and committed before chat.postMessage, and the message carries metadata
(`dunning_card` with its escalation ids). A run first reconciles the cards left in
`posting` by a run that died or timed out: it reads each channel's recent history; a card
found there is marked posted with that ts, the others go back to `proposed` and are posted
in the same run. A card Slack refused (429, an error answer) goes back to `proposed` at
once and is tried again on the next run; one whose fate is unknown (timeout, 5xx) stays
`posting` for the next run to reconcile.
"""

from __future__ import annotations

import fcntl
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Engine

from connectors.errors import ConnectorError, UnavailableError
from connectors.llm import LlmClient
from connectors.slack import Messenger, card_metadata
from dunning.policy import Policy
from services.cards import (
    Card,
    PostingClaim,
    cards_in_posting,
    cards_to_post,
    claim_for_posting,
    ensure_draft,
    load_card,
    mark_posted,
    release_claim,
)
from store.engine import session_scope

log = logging.getLogger(__name__)
Blocks = list[dict[str, Any]]
CardRenderer = Callable[[Card, str], tuple[Blocks, str]]  # (card, owner_label) -> blocks, text
GroupRenderer = Callable[[list[Card], str], tuple[Blocks, str]]  # one customer's cards
GROUP_MOST = 10  # escalations of one customer per message
HeaderRenderer = Callable[[str, date, int, dict[str, Decimal]], tuple[Blocks, str]]
# History is read from a day before the card was made (clocks of hosts and Slack differ).
HISTORY_MARGIN = timedelta(days=1)
POSTING_LOCK_KEY = 0x64756E70  # "dunp": PostgreSQL advisory lock of the card posters


@dataclass
class PostResult:
    posted: int = 0
    failed: list[tuple[int, str]] = field(default_factory=list)
    channels: dict[str, int] = field(default_factory=dict)
    reconciled: int = 0  # cards found already on Slack after an interrupted run
    unresolved: int = 0  # cards still in `posting` (history unreadable): next run
    busy: bool = False  # another run held the posting lock: nothing was done


def reconcile_posting(engine: Engine, messenger: Messenger, result: PostResult) -> None:
    """Cards left in `posting`: found in the channel's history -> posted with that ts;
    not found -> back to `proposed` (posted again by the caller); history unreadable ->
    left in `posting` (never post what may already be there)."""
    with session_scope(engine) as session:
        claims = cards_in_posting(session)
    by_channel: dict[str, list[PostingClaim]] = defaultdict(list)
    for claim in claims:
        by_channel[claim.channel].append(claim)
    for channel, group in by_channel.items():
        ids = [c.escalation_id for c in group]
        if not channel:  # no channel recorded: cannot have been posted anywhere known
            with session_scope(engine) as session:
                release_claim(session, ids)
            continue
        oldest = min(c.created_at for c in group) - HISTORY_MARGIN
        try:
            found = messenger.find_cards(channel, oldest=oldest.timestamp())
        except ConnectorError as exc:
            log.warning("cards %s left in posting: history of %s unreadable: %s", ids,
                        channel, exc)
            result.unresolved += len(ids)
            continue
        with session_scope(engine) as session:
            for escalation_id in ids:
                if escalation_id in found:
                    channel_id, ts = found[escalation_id]
                    mark_posted(session, escalation_id, channel=channel_id, ts=ts)
                    result.reconciled += 1
            release_claim(session, [i for i in ids if i not in found])
        if found:
            log.info("reconciled %d card(s) already on Slack in %s", len(
                [i for i in ids if i in found]), channel)


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


@contextmanager
def posting_lock(engine: Engine) -> Iterator[bool]:
    """One poster at a time per database (worker jobs, `dunning cycle`, the sandbox): a run
    reconciling `posting` cards must not take another run's in-flight post for a lost one.

    PostgreSQL: a session advisory lock on a connection held for the run; SQLite: an
    exclusive file lock next to the database file. Both die with the process, so a killed
    poster never blocks the next one. Yields False when another run holds it.
    """
    if engine.dialect.name == "postgresql":
        with engine.connect() as conn:
            conn = conn.execution_options(isolation_level="AUTOCOMMIT")
            got = bool(conn.execute(text("SELECT pg_try_advisory_lock(:k)"),
                                    {"k": POSTING_LOCK_KEY}).scalar())
            try:
                yield got
            finally:
                if got:
                    conn.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": POSTING_LOCK_KEY})
        return
    database = engine.url.database
    if not database or database == ":memory:":
        yield True  # a private in-memory database: no other process can post to it
        return
    path = Path(database).with_suffix(".posting.lock")
    with path.open("a") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def post_new_cards(engine: Engine, policy: Policy, messenger: Messenger, *,
                   render_card: CardRenderer, render_group: GroupRenderer,
                   render_header: HeaderRenderer,
                   channels: dict[str, str], fallback_channel: str | None, sender_name: str,
                   today: date, now: datetime, llm: LlmClient | None = None,
                   budget_usd: Decimal | str | None = None) -> PostResult:
    """Post every card not on Slack yet; a run finding another one posting does nothing
    (`PostResult.busy`): the other run posts them."""
    with posting_lock(engine) as held:
        if not held:
            log.info("another run is posting cards: leaving them to it")
            return PostResult(busy=True)
        return _post_new_cards(
            engine, policy, messenger, render_card=render_card, render_group=render_group,
            render_header=render_header, channels=channels, fallback_channel=fallback_channel,
            sender_name=sender_name, today=today, now=now, llm=llm, budget_usd=budget_usd)


def _post_new_cards(engine: Engine, policy: Policy, messenger: Messenger, *,
                    render_card: CardRenderer, render_group: GroupRenderer,
                    render_header: HeaderRenderer,
                    channels: dict[str, str], fallback_channel: str | None, sender_name: str,
                    today: date, now: datetime, llm: LlmClient | None,
                    budget_usd: Decimal | str | None) -> PostResult:
    result = PostResult()
    reconcile_posting(engine, messenger, result)
    with session_scope(engine) as session:
        ids = cards_to_post(session)
    for escalation_id in ids:
        # One transaction per draft: a model call never holds a write lock on other rows.
        with session_scope(engine) as session:
            ensure_draft(session, escalation_id, sender_name=sender_name, now=now, llm=llm,
                         budget_usd=budget_usd)
    with session_scope(engine) as session:
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
                ids = [c.escalation.id for c in batch]
                blocks, text = (render_card(batch[0], label) if len(batch) == 1
                                else render_group(batch, label))
                with session_scope(engine) as session:
                    claimed = claim_for_posting(session, ids, channel=channel)
                if not claimed:
                    continue
                try:
                    posted_channel, ts = messenger.post(channel, blocks=blocks, text=text,
                                                        metadata=card_metadata(ids))
                except ConnectorError as exc:
                    if not isinstance(exc, UnavailableError):
                        # Slack answered and refused: nothing was posted, retry later.
                        with session_scope(engine) as session:
                            release_claim(session, ids)
                    result.failed.extend((i, str(exc)) for i in ids)
                    continue
                with session_scope(engine) as session:
                    for c in batch:
                        mark_posted(session, c.escalation.id, channel=posted_channel, ts=ts)
                result.posted += len(batch)
                result.channels[posted_channel] = result.channels.get(posted_channel, 0) + \
                    len(batch)
    return result
