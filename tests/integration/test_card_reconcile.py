"""Cards are posted exactly once: claimed (`posting`) before chat.postMessage, carrying
`dunning_card` metadata, and reconciled from the channel's history after an interruption.
The real SlackMessenger (slack_sdk WebClient) talks to the loopback Slack sandbox."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import date
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import Engine
from sqlmodel import col, select

from bot.sandbox.slack_api import SlackSandbox
from connectors.slack import SlackMessenger, card_ids, card_metadata, make_client
from dunning.policy import DEFAULT_POLICY
from services.cards import Card, claim_for_posting
from services.common import Actor
from services.planning import run_cycle
from services.posting import PostResult, post_new_cards, posting_lock
from store import tables as t
from store.engine import session_scope
from tests.integration.test_services import NOW, TODAY, import_samples

TOKEN = "xoxb-reconcile"
CHANNEL = "ar-all"
Blocks = list[dict[str, Any]]


def _card(card: Card, label: str) -> tuple[Blocks, str]:
    return [], f"card {card.escalation.id} for {label}"


def _group(cards: list[Card], label: str) -> tuple[Blocks, str]:
    return [], f"{len(cards)} cards for {label}"


def _header(label: str, day: date, n: int, totals: dict[str, Decimal]) -> tuple[Blocks, str]:
    return [], f"{n} for {label}"


@pytest.fixture
def slack() -> Iterator[tuple[SlackSandbox, SlackMessenger]]:
    with SlackSandbox(token=TOKEN, trigger_ttl=None) as sandbox:
        sandbox.add_channel(CHANNEL)
        yield sandbox, SlackMessenger(make_client(TOKEN, sandbox.base_url))


def post(db: Engine, messenger: SlackMessenger) -> PostResult:
    return post_new_cards(db, DEFAULT_POLICY, messenger, render_card=_card,
                          render_group=_group, render_header=_header, channels={},
                          fallback_channel=f"#{CHANNEL}", sender_name="AR", today=TODAY,
                          now=NOW)


def proposed(db: Engine) -> list[int]:
    with session_scope(db) as s:
        run_cycle(s, DEFAULT_POLICY, TODAY, actor=Actor("test"), now=NOW)
        return [i for i in s.exec(select(t.Escalation.id).order_by(col(t.Escalation.id)))
                if i is not None]


def posts_per_card(sandbox: SlackSandbox) -> Counter[int]:
    out: Counter[int] = Counter()
    for call in sandbox.calls("chat.postMessage"):
        if call.ok:
            out.update(card_ids({"metadata": call.args.get("metadata")}))
    return out


def test_cards_carry_their_escalation_ids_as_message_metadata(
        db: Engine, slack: tuple[SlackSandbox, SlackMessenger]) -> None:
    import_samples(db)
    ids = proposed(db)
    sandbox, messenger = slack
    result = post(db, messenger)
    assert result.posted == len(ids) and result.reconciled == 0
    assert posts_per_card(sandbox) == Counter({i: 1 for i in ids})
    with session_scope(db) as s:
        for row in s.exec(select(t.Escalation)):
            assert row.state == "posted"
            message = next(m for m in sandbox.messages(CHANNEL) if m.ts == row.slack_ts)
            assert message.metadata == card_metadata(card_ids(message.to_slack("T")))
            assert row.id in card_ids(message.to_slack("T"))
    assert post(db, messenger).posted == 0  # a second run finds nothing to post


def test_a_grouped_card_slack_already_has_is_marked_posted_not_posted_again(
        db: Engine, slack: tuple[SlackSandbox, SlackMessenger]) -> None:
    """The poster died after Slack took a card for two escalations: the next run finds the
    card by its metadata; a claimed card Slack never got is posted, once."""
    import_samples(db)
    ids = proposed(db)
    assert len(ids) >= 3
    sandbox, messenger = slack
    grouped, lost = ids[:2], ids[2]
    with session_scope(db) as s:
        assert claim_for_posting(s, grouped, channel=f"#{CHANNEL}")
    with session_scope(db) as s:
        assert claim_for_posting(s, [lost], channel=f"#{CHANNEL}")
    channel_id, ts = messenger.post(f"#{CHANNEL}", blocks=[], text="two cards",
                                    metadata=card_metadata(grouped))
    # Another message of the channel mentioning nothing: history has more than cards.
    messenger.post(f"#{CHANNEL}", blocks=[], text="chatter")

    result = post(db, messenger)
    assert result.reconciled == 2
    assert result.posted == len(ids) - 2  # the lost one and the untouched ones
    assert posts_per_card(sandbox) == Counter({i: 1 for i in ids})
    with session_scope(db) as s:
        rows = {r.id: r for r in s.exec(select(t.Escalation))}
    assert {(rows[i].state, rows[i].slack_channel, rows[i].slack_ts) for i in grouped} == {
        ("posted", channel_id, ts)}
    assert rows[lost].state == "posted" and rows[lost].slack_ts != ts
    history = sandbox.calls("conversations.history")
    assert history and history[-1].args.get("include_all_metadata") in (True, "true", "1", 1)


def test_cards_stay_claimed_while_the_history_cannot_be_read(
        db: Engine, slack: tuple[SlackSandbox, SlackMessenger]) -> None:
    """Never post what may already be on Slack: an unreadable history leaves the claim."""
    import_samples(db)
    ids = proposed(db)
    sandbox, messenger = slack
    with session_scope(db) as s:
        assert claim_for_posting(s, ids[:1], channel=f"#{CHANNEL}")
    sandbox.fail_next("conversations.history", status=200, error="missing_scope")
    result = post(db, messenger)
    assert result.unresolved == 1 and ids[0] not in posts_per_card(sandbox)
    with session_scope(db) as s:
        row = s.get(t.Escalation, ids[0])
        assert row is not None and row.state == "posting"
    assert post(db, messenger).posted == 1  # readable again: not found, so posted
    assert posts_per_card(sandbox)[ids[0]] == 1


def test_a_refused_post_goes_back_to_proposed_and_a_5xx_stays_claimed(
        db: Engine, slack: tuple[SlackSandbox, SlackMessenger]) -> None:
    """Slack said no (an error answer): nothing was posted, so the card is simply proposed
    again. A 5xx may or may not have posted it: claimed until the history says."""
    import_samples(db)
    ids = proposed(db)
    sandbox, messenger = slack
    # The owner's header is the first post, the owner's first card the second.
    sandbox.fail_next("chat.postMessage", status=200, error="channel_not_found", times=2)
    sandbox.fail_next("chat.postMessage", status=503)
    result = post(db, messenger)
    failed = dict(result.failed)
    assert failed[ids[0]] == "slack: channel_not_found"
    assert [e for e in failed.values() if "503" in e] != []
    with session_scope(db) as s:
        by_state = Counter(r.state for r in s.exec(select(t.Escalation)))
    assert by_state["proposed"] == 1 and by_state["posting"] == 1
    assert post(db, messenger).posted == 2
    assert posts_per_card(sandbox) == Counter({i: 1 for i in ids})


def test_a_second_poster_leaves_the_cards_to_the_one_posting(
        db: Engine, slack: tuple[SlackSandbox, SlackMessenger]) -> None:
    """Reconciling must never take another run's in-flight post for a lost one: while one
    run holds the posting lock (another thread or process), a second run posts nothing."""
    import_samples(db)
    ids = proposed(db)
    sandbox, messenger = slack
    with posting_lock(db) as first:
        assert first
        busy = post(db, messenger)
        assert busy.busy and busy.posted == 0 and posts_per_card(sandbox) == Counter()
    assert post(db, messenger).posted == len(ids)
