"""Slack-facing jobs, wired with the Block Kit builders (used by the CLI and the worker)."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from blocks.cards import build_owner_header
from blocks.chart import render_dso_chart
from blocks.digest import build_digest, digest_text
from bot.deps import Deps
from handlers.common import render_card, render_group
from services.cards import Card
from services.digest import gather_digest
from services.posting import PostResult, owner_label, post_new_cards
from store.engine import session_scope


def post_cards(deps: Deps) -> PostResult:
    """Post every escalation not yet on Slack, grouped per owner."""

    def card(c: Card, label: str) -> tuple[list[dict[str, Any]], str]:
        return render_card(deps, c, label)

    def group(cs: list[Card], label: str) -> tuple[list[dict[str, Any]], str]:
        return render_group(deps, cs, label)

    def header(label: str, day: date, count: int,
               totals: dict[str, Decimal]) -> tuple[list[dict[str, Any]], str]:
        blocks = build_owner_header(owner_label=label, day=day, count=count,
                                    total_by_currency=totals)
        return blocks, f"{count} escalation(s) for {label} on {day.isoformat()}"

    return post_new_cards(
        deps.engine, deps.policy, deps.messenger, render_card=card, render_group=group,
        render_header=header,
        channels=deps.settings.owner_channels(),
        fallback_channel=deps.settings.dunning_digest_channel,
        sender_name=deps.settings.dunning_sender_name, today=deps.today(), now=deps.now(),
        llm=deps.llm, budget_usd=deps.settings.llm_daily_budget_usd)


def post_digest(deps: Deps, channel: str) -> int:
    """The manager digest to `channel`: the DSO chart uploaded, then the summary."""
    today, now = deps.today(), deps.now()
    with session_scope(deps.engine) as s:
        view, trend = gather_digest(
            s, deps.policy, today=today, now=now, currency=deps.settings.dunning_currency,
            country=deps.settings.dunning_country,
            label=lambda email: owner_label(deps.messenger, email))
    png = render_dso_chart(trend, title=f"DSO ({deps.settings.dunning_currency}), "
                                         f"last {len(trend)} days")
    deps.messenger.upload_png(channel, content=png, filename=f"dso-{today.isoformat()}.png",
                              title=f"DSO trend to {today.isoformat()}")
    blocks = build_digest(view)
    deps.messenger.post(channel, blocks=blocks, text=digest_text(view))
    return len(blocks)
