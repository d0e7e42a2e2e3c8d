"""Answers to `/dunning ...` commands (ephemeral): status, "which customer?", help, mine.

The inputs are small dataclasses defined here, since `blocks` cannot import `services`:
the status service maps its result onto them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from blocks.cards import CardData, compact_line
from blocks.ids import ActionId
from blocks.kit import (
    LANE_EMOJI,
    Block,
    bullets,
    button,
    clip,
    clip_plain,
    context,
    customer_flags,
    due_words,
    escape,
    header,
    label,
    money,
    one_line,
    packed_sections,
    section,
    totals_line,
)
from dunning.model import CustomerContext, InvoiceState, Lane, PromiseStatus, Tone, Touch

STATUS_LINES_SHOWN = 40  # invoices listed in a status answer
STATUS_LIST_BUDGET = 6000  # characters of invoice lines in a status answer
CHOICES_SHOWN = 10
MINE_SHOWN = 30
MINE_BUDGET = 7000


@dataclass(frozen=True)
class StatusLine:
    """One open invoice in a status answer."""

    invoice: InvoiceState
    days_past_due: int
    lane: Lane
    next_action_on: date | None
    last_touch: Touch | None = None


@dataclass(frozen=True)
class StatusView:
    """A customer's account as `/dunning status` shows it."""

    customer: CustomerContext
    risk_score: int
    tone: Tone  # the tone the next customer message would take
    reasons: tuple[str, ...]
    sensitive_reasons: tuple[str, ...]
    totals: dict[str, Decimal]  # open amount due per currency
    lines: tuple[StatusLine, ...]
    today: date


def build_status(view: StatusView) -> list[Block]:
    """An account at a glance: totals, risk and why, then its open invoices, worst first."""
    c = view.customer
    n = len(view.lines)
    noun = "open invoice" if n == 1 else "open invoices"
    summary = (f"*{totals_line(view.totals)}* due across {n} {noun} · "
               f"*risk {view.risk_score}/100* · next tone *{view.tone.value}*")
    people = []
    if c.owner_email:
        people.append(f"Owner: {label(c.owner_email)}")
    if c.csm_email:
        people.append(f"CSM: {label(c.csm_email)}")
    if c.ap_contact_email:
        ap = escape(one_line(c.ap_contact_name)) + " " if c.ap_contact_name else ""
        people.append(f"AP: {ap}{escape(c.ap_contact_email)}")
    blocks: list[Block] = [header(c.name), section(clip(summary, 600))]
    meta = [*people, f"id {escape(c.customer_id)}", escape(f"{c.country} · {c.timezone}")]
    blocks.append(context(clip(" · ".join(meta), 800)))
    flags = _flags(c, view.sensitive_reasons)
    if flags:
        blocks.append(context(flags))
    if view.reasons:
        blocks.append(section("*Why this risk*\n" + bullets(
            (escape(r) for r in view.reasons), limit=1200, most=4, each=300)))
    if not view.lines:
        blocks.append(section("No open invoices."))
        return blocks
    ordered = sorted(view.lines, key=lambda s: (-s.days_past_due, s.invoice.number))
    blocks.append(section("*Open invoices*, most overdue first"))
    blocks.extend(packed_sections([_status_line(s, view.today) for s in ordered],
                                  most=STATUS_LINES_SHOWN, budget=STATUS_LIST_BUDGET))
    return blocks


def status_text(view: StatusView) -> str:
    n = len(view.lines)
    return clip(f"{escape(one_line(view.customer.name))}: {totals_line(view.totals)} due "
                f"across {n} open invoice{'s' if n != 1 else ''}, risk {view.risk_score}/100",
                1000)


def build_choices(query: str, candidates: list[tuple[str, str, float]]) -> list[Block]:
    """Several customers match: one button each (value: customer id), best first."""
    q = escape(clip_plain(one_line(query), 100))
    if not candidates:
        return [section(f"No customer matches “{q}”. Try part of the name or the id.")]
    blocks: list[Block] = [section(f"Several customers match “{q}”. Which one?")]
    for customer_id, name, score in candidates[:CHOICES_SHOWN]:
        # One section per candidate: an action_id may appear once per block.
        blocks.append(section(
            clip(f"*{escape(one_line(name))}* · id {escape(customer_id)} · {score:.0f}% match",
                 400),
            accessory=button("Show", action_id=ActionId.STATUS_PICK.value,
                             value=customer_id)))
    if len(candidates) > CHOICES_SHOWN:
        blocks.append(context(f"_and {len(candidates) - CHOICES_SHOWN} more: narrow the "
                              "search_"))
    return blocks


def choices_text(query: str, candidates: list[tuple[str, str, float]]) -> str:
    names = ", ".join(escape(one_line(name)) for _, name, _ in candidates[:CHOICES_SHOWN])
    q = escape(clip_plain(one_line(query), 100))
    if not names:
        return f"No customer matches “{q}”"
    return clip(f"Several customers match “{q}”: {names}", 1000)


_COMMANDS = (
    ("/dunning status <customer>", "an account's open invoices, risk and next steps"),
    ("/dunning mine", "your open escalations"),
    ("/dunning digest", "today's manager digest"),
    ("/dunning help", "this help"),
)


def build_usage(reason: str | None = None) -> list[Block]:
    """Help for the slash command, after `reason` (what was wrong) when there is one."""
    blocks: list[Block] = []
    if reason:
        blocks.append(section(f"⚠️ {clip(escape(reason), 1000)}"))
    lines = "\n".join(f"• `{escape(cmd)}`: {words}" for cmd, words in _COMMANDS)
    blocks.append(section(f"*Dunning commands*\n{lines}"))
    return blocks


def usage_text(reason: str | None = None) -> str:
    help_line = "Usage: /dunning status <customer> | mine | digest | help"
    return clip(escape(f"{reason} · {help_line}" if reason else help_line), 1000)


def build_mine(cards: list[CardData], today: date) -> list[Block]:
    """The caller's open escalations, worst lane and oldest first, one line each."""
    open_cards = [c for c in cards if c.escalation.state.is_open]
    if not open_cards:
        return [section("Nothing is waiting for you. 🎉")]
    ordered = sorted(open_cards, key=lambda c: (-c.escalation.lane.rank,
                                                c.invoice.due_date, c.escalation.id))
    blocks: list[Block] = [header(f"Your open escalations ({len(ordered)})")]
    blocks.extend(packed_sections([compact_line(c, today=today) for c in ordered],
                                  most=MINE_SHOWN, budget=MINE_BUDGET))
    return blocks


def mine_text(cards: list[CardData]) -> str:
    n = sum(1 for c in cards if c.escalation.state.is_open)
    return f"You have {n} open escalation{'s' if n != 1 else ''}" if n else \
        "Nothing is waiting for you"


def _flags(c: CustomerContext, sensitive_reasons: tuple[str, ...]) -> str:
    return customer_flags(c, sensitive_reasons)


def _status_line(s: StatusLine, today: date) -> str:
    inv = s.invoice
    parts = [f"{LANE_EMOJI[s.lane]} *{escape(one_line(inv.number))}*",
             money(inv.amount_due, inv.currency), due_words(s.days_past_due)]
    if inv.dispute is not None:
        parts.append(clip(f"⚠️ disputed: {escape(one_line(inv.dispute.reason))}", 120))
    if inv.promise is not None and inv.promise.status is PromiseStatus.OPEN:
        parts.append(f"🤝 promised by {inv.promise.promised_date.isoformat()}")
    elif inv.promise is not None and inv.promise.status is PromiseStatus.BROKEN:
        parts.append(f"💔 promise of {inv.promise.promised_date.isoformat()} broken")
    if inv.snoozed_until is not None and inv.snoozed_until > today:
        parts.append(f"😴 until {inv.snoozed_until.isoformat()}")
    if s.next_action_on is not None:
        parts.append(f"next {s.next_action_on.isoformat()}")
    if s.last_touch is not None:
        parts.append(f"last {escape(one_line(s.last_touch.channel))} "
                     f"{s.last_touch.at.date().isoformat()}")
    return " · ".join(parts)
