"""Slack-facing jobs, wired with the Block Kit builders (used by the CLI and the worker)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from blocks.cards import build_owner_header

from bot.deps import Deps
from handlers.common import render_card
from services.cards import Card
from services.posting import PostResult, post_new_cards


def post_cards(deps: Deps) -> PostResult:
    """Post every escalation not yet on Slack, grouped per owner."""

    def card(c: Card, label: str) -> tuple[list[dict[str, Any]], str]:
        return render_card(deps, c, label)

    def header(label: str, day: date, count: int,
               totals: dict[str, Decimal]) -> tuple[list[dict[str, Any]], str]:
        blocks = build_owner_header(owner_label=label, day=day, count=count,
                                    total_by_currency=totals)
        return blocks, f"{count} escalation(s) for {label} on {day.isoformat()}"

    return post_new_cards(
        deps.engine, deps.policy, deps.messenger, render_card=card, render_header=header,
        channels=deps.settings.owner_channels(),
        fallback_channel=deps.settings.dunning_digest_channel,
        sender_name=deps.settings.dunning_sender_name, today=deps.today(), now=deps.now())
