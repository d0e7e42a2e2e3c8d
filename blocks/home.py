"""The App Home tab: the viewer's queue of open escalations and recent activity."""

from __future__ import annotations

from datetime import date
from typing import Any

from blocks.cards import CardData, compact_line
from blocks.ids import ActionId
from blocks.kit import (
    Block,
    button,
    clip,
    context,
    divider,
    escape_keep_mentions,
    header,
    label,
    one_line,
    packed_sections,
    section,
    short_date,
)

QUEUE_SHOWN = 40  # one section (with an Open button) per card; 100 blocks per view
ACTIVITY_SHOWN = 30
ACTIVITY_BUDGET = 6000


def build_home(*, viewer_label: str, queue: list[CardData], activity: list[tuple[str, str]],
               today: date) -> dict[str, Any]:
    """App Home. `activity` is (time, text) pairs formatted by the caller, newest first.

    Their text is escaped here except for `<@U123>` mentions and existing entities: escape
    customer-provided parts with `blocks.kit.escape` before putting them in, so a customer
    named `<@U1>` stays text.
    """
    open_cards = [c for c in queue if c.escalation.state.is_open]
    ordered = sorted(open_cards, key=lambda c: (-c.escalation.lane.rank,
                                                c.invoice.due_date, c.escalation.id))
    blocks: list[Block] = [
        header("Dunning"),
        context(f"Hi {label(viewer_label)} · {short_date(today)}"),
        header(f"Your queue ({len(ordered)})"),
    ]
    if not ordered:
        blocks.append(section("Nothing is waiting for you. 🎉"))
    for card in ordered[:QUEUE_SHOWN]:
        blocks.append(section(compact_line(card, today=today), accessory=button(
            "Open", action_id=ActionId.OPEN_CARD.value, value=str(card.escalation.id))))
    if len(ordered) > QUEUE_SHOWN:
        blocks.append(context(f"_and {len(ordered) - QUEUE_SHOWN} more_"))
    blocks += [divider(), header("Recent activity")]
    lines = [clip(f"`{escape_keep_mentions(one_line(when))}` "
                  f"{escape_keep_mentions(one_line(text))}", 500)
             for when, text in activity]
    if lines:
        blocks.extend(packed_sections(lines, most=ACTIVITY_SHOWN, budget=ACTIVITY_BUDGET))
    else:
        blocks.append(context("No activity yet."))
    return {"type": "home", "blocks": blocks}
