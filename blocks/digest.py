"""The manager digest: open AR by lane, DSO trend, and the lists that need a person today.

Every list is capped ("and N more") so the message stays within Slack's limits whatever
the size of the ledger. The DSO chart is uploaded separately (`blocks.chart`); when its
Slack file id is known the digest shows it as an image block.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from blocks.cards import STEP_WORDS, step_words
from blocks.kit import (
    LANE_EMOJI,
    Block,
    clip,
    context,
    escape,
    header,
    label,
    money,
    one_line,
    packed_sections,
    section,
    short_date,
    totals_line,
)
from dunning.digest import (
    AtRisk,
    DigestView,
    DisputeItem,
    PromiseItem,
    StaleCard,
    WaitingDecision,
)
from dunning.model import Lane

__all__ = ["AtRisk", "DigestView", "DisputeItem", "PromiseItem", "StaleCard",
           "WaitingDecision", "build_digest", "digest_text", "dso_words"]

LIST_SHOWN = 8  # items per list in the digest
LIST_BUDGET = 1200  # characters per list


def build_digest(view: DigestView) -> list[Block]:
    blocks: list[Block] = [header(f"AR digest · {short_date(view.day)}")]
    fields = [clip(f"{LANE_EMOJI[lane]} *{lane.value.capitalize()}*\n"
                   f"{_per_line(view.open_by_lane.get(lane, {}))}", 400) for lane in Lane]
    fields.append(f"📈 *DSO*\n{dso_words(view.dso, view.dso_30_days_ago)}")
    total: dict[str, Decimal] = {}
    for per_currency in view.open_by_lane.values():
        for cur, amount in per_currency.items():
            total[cur] = total.get(cur, Decimal("0")) + amount
    blocks.append(section(clip(f"*Open AR:* {totals_line(total)}", 400), fields=fields))
    if view.chart_file_id:
        blocks.append({"type": "image", "slack_file": {"id": view.chart_file_id},
                       "alt_text": "DSO over the last days"})
    quiet: list[str] = []
    lists: list[tuple[str, list[str]]] = [
        ("🏦 Waiting on finance", [
            f"*{_name(w.customer)}* · {_name(w.invoice_number)} · "
            f"{money(w.amount, w.currency)} · {w.days_past_due} days past due"
            for w in sorted(view.finance_waiting, key=lambda w: -w.days_past_due)]),
        ("🤝 Promises due today", [_promise(p) for p in view.promises_due_today]),
        ("💔 Broken promises", [_promise(p) for p in view.broken_promises]),
        ("⚠️ New disputes", [
            f"*{_name(d.customer)}* · {_name(d.invoice_number)}"
            + (f" · {money(d.amount, d.currency)}" if d.amount is not None else "")
            + f": {escape(one_line(d.reason))}" for d in view.new_disputes]),
        ("🐢 Cards unacted for 2+ business days", [
            f"*{_name(s.customer)}* · {escape(_step(s))} · {label(s.owner_label)} · "
            f"{s.age_business_days} business days"
            for s in sorted(view.stale_cards, key=lambda s: -s.age_business_days)]),
        ("🔥 Top at-risk accounts", [
            f"*{_name(a.name)}* · risk {a.score}/100 · {totals_line(a.totals)} due"
            for a in sorted(view.top_at_risk, key=lambda a: -a.score)]),
    ]
    for title, lines in lists:
        if not lines:
            quiet.append(title.split(" ", 1)[1].lower())
            continue
        blocks.append(section(f"*{title}* ({len(lines)})"))
        blocks.extend(packed_sections(lines, most=LIST_SHOWN, budget=LIST_BUDGET))
    if quiet:
        blocks.append(context("Nothing today: " + ", ".join(quiet)))
    return blocks


def digest_text(view: DigestView) -> str:
    total: dict[str, Decimal] = {}
    for per_currency in view.open_by_lane.values():
        for cur, amount in per_currency.items():
            total[cur] = total.get(cur, Decimal("0")) + amount
    return clip(f"AR digest {view.day.isoformat()}: "
                f"{len(view.finance_waiting)} waiting on finance · "
                f"{len(view.broken_promises)} broken promises · "
                f"DSO {dso_words(view.dso, view.dso_30_days_ago)} · "
                f"{totals_line(total)} open", 1000)


def dso_words(dso: Decimal | None, before: Decimal | None) -> str:
    """`42.3 days (▲ 3.1 vs 30 days ago)`; a rising DSO means cash comes in slower."""
    if dso is None:
        return "not enough data"
    tenth = Decimal("0.1")
    text = f"{dso.quantize(tenth, ROUND_HALF_UP)} days"
    if before is not None:
        delta = (dso - before).quantize(tenth, ROUND_HALF_UP)
        arrow = "▲" if delta > 0 else "▼" if delta < 0 else "="
        text += f" ({arrow} {abs(delta)} vs 30 days ago)"
    return text


def _per_line(totals: dict[str, Decimal]) -> str:
    items = sorted(totals.items(), key=lambda kv: (-kv[1], kv[0]))
    return "\n".join(money(v, c) for c, v in items) if items else "—"


def _name(text: str) -> str:
    return escape(one_line(text))


def _promise(p: PromiseItem) -> str:
    amount = f" · {money(p.amount, p.currency)}" if p.amount is not None else ""
    return (f"*{_name(p.customer)}* · {_name(p.invoice_number)}{amount} · promised by "
            f"{p.promised_date.isoformat()}")


def _step(s: StaleCard) -> str:
    if s.kind is not None:
        return step_words(s.step, s.kind)
    return STEP_WORDS.get(s.step, s.step)
