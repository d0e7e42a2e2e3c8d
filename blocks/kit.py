"""Small shared pieces of Block Kit: escaping, safe truncation, text objects, common blocks.

Everything a person or a customer typed goes through `escape` before it lands in mrkdwn,
so a customer called `<!channel>` or `<@U1>` cannot ping anyone or inject a link.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

from dunning.model import CustomerContext, Lane
from dunning.money import format_money

Block = dict[str, Any]

ELLIPSIS = "…"

LANE_EMOJI: dict[Lane, str] = {
    Lane.CURRENT: "🟢",
    Lane.EARLY: "🟡",
    Lane.LATE: "🟠",
    Lane.CRITICAL: "🔴",
}

# A Slack user mention we produced ourselves ("<@U123ABC>"): kept as is by `label`.
_MENTION = re.compile(r"<@[UW][A-Z0-9]{1,20}>")
_BARE_AMP = re.compile(r"&(?!(?:amp|lt|gt);)")


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn parses as control sequences."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def label(text: str) -> str:
    """A person label for mrkdwn: a bare `<@U123>` mention stays a mention, anything else
    (an email, a name) is escaped."""
    return text if _MENTION.fullmatch(text) else escape(text)


def escape_keep_mentions(text: str) -> str:
    """Escape everything except user mentions (`<@U123>`) and entities already escaped, for
    caller messages that name people ("Already handled by <@U1>").

    Idempotent, so a caller can `escape` customer-provided parts first (a customer called
    `<@U1>` must not become a mention) without getting `&amp;lt;` back.
    """
    def safe(part: str) -> str:
        return _BARE_AMP.sub("&amp;", part).replace("<", "&lt;").replace(">", "&gt;")

    out: list[str] = []
    pos = 0
    for m in _MENTION.finditer(text):
        out.append(safe(text[pos:m.start()]))
        out.append(m.group(0))
        pos = m.end()
    out.append(safe(text[pos:]))
    return "".join(out)


def clip(text: str, limit: int) -> str:
    """Cut mrkdwn to at most `limit` characters, ending with an ellipsis when cut.

    Never cuts inside an entity (`&amp;`) or a `<...>` token (a mention, a date), which
    would leave broken markup behind.
    """
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[:limit]
    cut = text[: limit - len(ELLIPSIS)]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:] and len(cut) - amp <= 6:
        cut = cut[:amp]
    lt = cut.rfind("<")
    if lt != -1 and ">" not in cut[lt:]:
        cut = cut[:lt]
    return cut.rstrip() + ELLIPSIS


def clip_plain(text: str, limit: int) -> str:
    """Cut plain text (no markup) to at most `limit` characters."""
    if len(text) <= limit:
        return text
    if limit <= len(ELLIPSIS):
        return ELLIPSIS[:limit]
    return text[: limit - len(ELLIPSIS)].rstrip() + ELLIPSIS


def chunks(text: str, size: int) -> list[str]:
    """`text` in pieces of at most `size` characters, cut after a newline or a space where
    there is one in the last fifth of a piece, so words stay whole."""
    pieces: list[str] = []
    rest = text
    while len(rest) > size:
        cut = max(rest.rfind("\n", 0, size), rest.rfind(" ", 0, size))
        cut = cut + 1 if cut >= size * 4 // 5 else size
        pieces.append(rest[:cut])
        rest = rest[cut:]
    if rest:
        pieces.append(rest)
    return pieces


def one_line(text: str) -> str:
    """Collapse whitespace and newlines: for values shown inline."""
    return " ".join(text.split())


def plain(text: str, *, emoji: bool = True) -> dict[str, Any]:
    return {"type": "plain_text", "text": text, "emoji": emoji}


def mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text}


def header(text: str) -> Block:
    return {"type": "header", "text": plain(clip_plain(one_line(text) or "—", 150))}


def section(text: str, *, block_id: str | None = None, fields: Sequence[str] = (),
            accessory: dict[str, Any] | None = None) -> Block:
    block: Block = {"type": "section", "text": mrkdwn(clip(text, 3000) if text.strip() else "—")}
    if block_id is not None:
        block["block_id"] = block_id
    if fields:
        block["fields"] = [mrkdwn(clip(f, 2000) if f.strip() else "—") for f in fields[:10]]
    if accessory is not None:
        block["accessory"] = accessory
    return block


def context(*texts: str) -> Block:
    """A context line; at most 10 elements, each clipped to 3000 characters; blank ones
    are left out (Slack refuses empty text)."""
    kept = [t for t in texts if t.strip()][:10] or ["—"]
    return {"type": "context", "elements": [mrkdwn(clip(t, 3000)) for t in kept]}


def divider() -> Block:
    return {"type": "divider"}


def button(text: str, *, action_id: str, value: str | None = None,
           style: str | None = None) -> dict[str, Any]:
    element: dict[str, Any] = {"type": "button", "text": plain(clip_plain(text, 75)),
                               "action_id": action_id}
    if value is not None:
        element["value"] = value
    if style is not None:
        element["style"] = style
    return element


def option(text: str, value: str, *, description: str | None = None) -> dict[str, Any]:
    opt: dict[str, Any] = {"text": plain(clip_plain(text, 75)), "value": value}
    if description:
        opt["description"] = plain(clip_plain(description, 75))
    return opt


def money(amount: Decimal, currency: str) -> str:
    """An amount as cards show it (`1,234.50 USD`), safe for mrkdwn."""
    return escape(format_money(amount, currency))


def totals_line(totals: Mapping[str, Decimal]) -> str:
    """`12,000.00 USD + 3,400.00 EUR`, largest first; `nothing` when empty."""
    items = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return " + ".join(money(v, c) for c, v in items) if items else "nothing"


def due_words(days_past_due: int) -> str:
    if days_past_due < 0:
        n = -days_past_due
        return f"due in {n} day{'s' if n != 1 else ''}"
    if days_past_due == 0:
        return "due today"
    return f"{days_past_due} day{'s' if days_past_due != 1 else ''} past due"


def short_date(day: date) -> str:
    """`Tue 14 May 2024`: unambiguous in every locale."""
    return f"{day.strftime('%a')} {day.day} {day.strftime('%b %Y')}"


def slack_time(moment: datetime, *, tz_label: str) -> str:
    """A time Slack renders in each viewer's own time zone (`<!date^...>`), with the
    wall-clock `HH:MM tz_label` of `moment` as the fallback for clients that cannot.

    A naive `moment` is taken as UTC. Pure: no time-zone database lookup.
    """
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    fallback = f"{moment.strftime('%H:%M')} {escape(tz_label)}".strip()
    return f"<!date^{int(aware.timestamp())}^{{time}}|{fallback}>"


def plain_time(moment: datetime, *, tz_label: str) -> str:
    """`09:12 UTC`: the fallback-text form of `slack_time`."""
    return f"{moment.strftime('%H:%M')} {escape(tz_label)}".strip()


def bullets(lines: Iterable[str], *, limit: int, most: int, each: int = 400) -> str:
    """Up to `most` bullet lines (each already mrkdwn, clipped to `each`) within `limit`
    characters; says how many were left out."""
    items = [one_line(x) for x in lines if x.strip()]
    reserve = len(f"\n_and {len(items)} more_")
    shown: list[str] = []
    used = 0
    for line in items[:most]:
        text = f"• {clip(line, each)}"
        if used + len(text) + 1 + reserve > limit:
            break
        shown.append(text)
        used += len(text) + 1
    left = len(items) - len(shown)
    if left:
        shown.append(f"_and {left} more_")
    return "\n".join(shown)


def packed_sections(lines: Sequence[str], *, most: int, budget: int,
                    more_words: str = "more") -> list[Block]:
    """Lines (mrkdwn, one item each) packed into as few sections as fit 3,000 characters,
    at most `most` lines and `budget` characters in all; a context line says how many
    were left out ("_and 12 more_")."""
    sections: list[Block] = []
    current: list[str] = []
    size = used = shown = 0
    for line in lines[:most]:
        item = clip(line, 500)
        if used + len(item) > budget:
            break
        if current and size + 1 + len(item) > 3000:
            sections.append(section("\n".join(current)))
            current, size = [], 0
        size += len(item) + (1 if current else 0)
        current.append(item)
        used += len(item) + 1
        shown += 1
    if current:
        sections.append(section("\n".join(current)))
    left = len(lines) - shown
    if left > 0:
        sections.append(context(f"_and {left} {more_words}_"))
    return sections


def customer_flags(customer: CustomerContext, sensitivity_reasons: tuple[str, ...], *,
                   sensitive_note: str = "") -> str:
    """One line of the account's flags: strategic, sensitive (why), do-not-contact, autopay."""
    flags: list[str] = []
    if customer.strategic:
        flags.append("⭐ strategic account")
    others = [r for r in sensitivity_reasons if r != "strategic account"]
    if sensitivity_reasons:
        detail = f": {escape('; '.join(others))}" if others else ""
        flags.append(f"🔒 sensitive{detail}{sensitive_note}")
    if customer.do_not_contact and not any("do-not-contact" in r for r in others):
        flags.append("🚫 do-not-contact")
    if customer.autopay:
        flags.append("💳 autopay")
    return clip(" · ".join(flags), 600)
