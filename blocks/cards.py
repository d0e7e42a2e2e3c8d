"""The escalation card: what a person sees, and acts on, for one step on one invoice.

A card is one message (its own channel + ts, updated in place after a click), so its
block ids are unique within it. Everything that came from a customer, the CRM or a person
is escaped; `owner_label`/`handled_label` may be a `<@U123>` mention and stay one.

Times: `handled_at` is shown with Slack's `<!date^...>` token, so each viewer reads it
in their own time zone; the fallback (old clients, notifications) is the wall clock of
`handled_at` as given, followed by `tz_label`. Pass `handled_at` already in that zone.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Any

from blocks.ids import (
    ActionId,
    BlockId,
    FinanceDecision,
    card_actions_block_id,
    reply_value,
)
from blocks.kit import (
    LANE_EMOJI,
    Block,
    bullets,
    button,
    clip,
    context,
    customer_flags,
    divider,
    due_words,
    escape,
    header,
    label,
    money,
    one_line,
    option,
    plain,
    plain_time,
    section,
    short_date,
    slack_time,
    totals_line,
)
from dunning.aging import days_past_due
from dunning.model import (
    BROKEN_PROMISE_PREFIX,
    DISPUTE_REVIEW_PREFIX,
    Approval,
    Draft,
    Escalation,
    EscalationState,
    InvoiceState,
    InvoiceStatus,
    Kind,
    PromiseStatus,
    Touch,
)
from dunning.replies import Intent, ReplyAnalysis
from dunning.risk import RiskAssessment

OTHERS_SHOWN = 5  # oldest other open invoices listed on a card
DRAFT_PREVIEW = 600  # characters of the draft body shown on the card
REASONS_SHOWN = 5  # escalation reasons on a card
RISK_REASONS_SHOWN = 3
REPLIES_SHOWN = 3  # reply proposals on a card (3 blocks each)
GROUP_REPLIES_SHOWN = 3  # reply proposals on a customer card, in all (its 50-block budget)
EVIDENCE_SHOWN = 200  # characters of a reply's evidence quoted on a card

FINANCE_CHOICES = "service pause, payment plan, write-off or collections"

# How each default step reads on a card; other steps fall back to their kind.
STEP_WORDS: dict[str, str] = {
    "pre_due": "Heads-up before the due date",
    "nudge": "Friendly reminder",
    "follow_up": "Follow-up reminder",
    "owner_loop_in": "Owner task: loop in the AE",
    "firm_notice": "Firm notice",
    "pause_warning": "Service-pause warning",
    "service_pause": f"Finance decision: {FINANCE_CHOICES}",
}

KIND_WORDS: dict[Kind, str] = {
    Kind.CUSTOMER_MESSAGE: "Customer message",
    Kind.OWNER_TASK: "Owner task",
    Kind.FINANCE_DECISION: "Finance decision",
}

FINANCE_WORDS: dict[FinanceDecision, str] = {
    FinanceDecision.SERVICE_PAUSE: "service pause",
    FinanceDecision.PAYMENT_PLAN: "payment plan",
    FinanceDecision.WRITE_OFF: "write-off",
    FinanceDecision.COLLECTIONS: "collections",
}


@dataclass(frozen=True)
class ReplyProposal:
    """A customer reply waiting for a person: what the rules understood, and from whom."""

    reply_id: int
    analysis: ReplyAnalysis
    source: str = "imap"  # imap | card
    sender: str | None = None


@dataclass(frozen=True)
class CardData:
    """Everything one card shows; gathered by a service, rendered here."""

    escalation: Escalation
    invoice: InvoiceState
    others: tuple[InvoiceState, ...]  # the customer's OTHER open invoices (can be 300+)
    risk: RiskAssessment
    draft: Draft | None
    last_touch: Touch | None
    owner_label: str  # "<@U123>" when the owner's Slack id is known, else the email
    handled_label: str | None = None  # e.g. "<@U123>" of whoever handled it
    replies: tuple[ReplyProposal, ...] = ()  # proposals from customer replies, newest first


def step_words(step: str, kind: Kind) -> str:
    """The step in words, plain text (escape before mrkdwn): "Friendly reminder (nudge)"."""
    if step.startswith(DISPUTE_REVIEW_PREFIX):
        opened = step.removeprefix(DISPUTE_REVIEW_PREFIX)
        return f"Owner task: review the dispute opened {opened}"
    if step.startswith(BROKEN_PROMISE_PREFIX):
        promised = step.removeprefix(BROKEN_PROMISE_PREFIX)
        return f"Owner task: promise to pay by {promised} was broken, call the customer"
    words = STEP_WORDS.get(step)
    if kind is Kind.CUSTOMER_MESSAGE:
        return f"{words or KIND_WORDS[kind]} ({step})"
    if words is not None:
        return words
    if kind is Kind.FINANCE_DECISION:
        return f"Finance decision ({step}): {FINANCE_CHOICES}"
    return f"{KIND_WORDS[kind]} ({step})"


def decision_from_note(note: str | None) -> tuple[FinanceDecision | None, str | None]:
    """Split a finance escalation's note, `"<decision>[: free text]"`, into its parts."""
    if not note:
        return None, None
    head, sep, rest = note.partition(":")
    try:
        decision = FinanceDecision(head.strip())
    except ValueError:
        return None, note
    return decision, (rest.strip() or None) if sep else None


def build_escalation_card(card: CardData, *, today: date, tz_label: str = "UTC") -> list[Block]:
    """The card for one escalation: facts, why, risk, draft, other invoices, then either
    the actions that fit its kind (while open) or who handled it and how."""
    esc, inv = card.escalation, card.invoice
    customer = inv.customer
    dpd = days_past_due(inv.due_date, today)
    blocks: list[Block] = [
        header(f"{LANE_EMOJI[esc.lane]} {customer.name} · {inv.number}"),
        section(_summary_text(card), block_id=BlockId.CARD.value, fields=[
            f"*Amount due*\n{_amount_due(inv)}",
            f"*Due date*\n{inv.due_date.isoformat()} · {due_words(dpd)}",
            f"*Lane*\n{LANE_EMOJI[esc.lane]} {esc.lane.value}",
            f"*Owner*\n{clip(label(card.owner_label), 200)}",
        ], accessory=_log_reply_button(card)),
    ]
    flags = _flags(card)
    if flags:
        blocks.append(context(flags))
    # The risk line of the decision's reasons is shown in full in the Risk section below.
    reasons = (r for r in esc.reasons if not r.startswith("risk "))
    why = bullets((escape(r) for r in reasons), limit=1500, most=REASONS_SHOWN, each=300)
    if why:
        blocks.append(section(f"*Why*\n{why}"))
    blocks.append(section(_risk_text(card.risk)))
    state_lines = _state_lines(card, today=today)
    if state_lines:
        blocks.append(context(*state_lines))
    blocks.extend(reply_blocks(card, most=REPLIES_SHOWN))
    if card.draft is not None:
        blocks.extend(_draft_blocks(card.draft))
    if card.others:
        blocks.append(section(_others_text(card.others, today=today)))
    blocks.append(divider())
    if esc.state.is_open:
        blocks.append(_actions(esc))
    else:
        blocks.append(context(clip(handled_line(card, tz_label=tz_label), 900)))
    return blocks


GROUP_MOST = 10  # escalations per customer card: 2 blocks each, well inside 50 blocks


def build_customer_card(cards: list[CardData], *, today: date,
                        tz_label: str = "UTC") -> list[Block]:
    """One card for several of a customer's escalations on the same day (a batch of
    invoices issued together reaches its steps together): a line and an action row per
    escalation, the totals once. At most GROUP_MOST escalations: the caller splits."""
    if not cards:
        raise ValueError("a customer card needs at least one escalation")
    if len(cards) > GROUP_MOST:
        raise ValueError(f"at most {GROUP_MOST} escalations per customer card")
    first = cards[0]
    customer = first.invoice.customer
    worst = max(cards, key=lambda c: c.escalation.lane.rank).escalation.lane
    totals: dict[str, Decimal] = {}
    for c in cards:
        totals[c.invoice.currency] = totals.get(c.invoice.currency, Decimal(0)) + \
            c.invoice.amount_due
    oldest = max(days_past_due(c.invoice.due_date, today) for c in cards)
    blocks: list[Block] = [
        header(f"{LANE_EMOJI[worst]} {customer.name} · {len(cards)} invoices"),
        section(f"*{len(cards)}* of this customer's invoices need a step today.",
                fields=[
                    f"*Amount due*\n{totals_line(totals)}",
                    f"*Oldest*\n{due_words(oldest)}",
                    f"*Worst lane*\n{LANE_EMOJI[worst]} {worst.value}",
                    f"*Owner*\n{clip(label(first.owner_label), 200)}",
                ]),
    ]
    flags = _flags(first)
    if flags:
        blocks.append(context(flags))
    blocks.append(section(_risk_text(first.risk)))
    shown_replies = 0
    for c in cards:
        esc, inv = c.escalation, c.invoice
        line = (f"*{escape(one_line(inv.number))}* · {_amount_due(inv)} · "
                f"{due_words(days_past_due(inv.due_date, today))} · "
                f"{escape(step_words(esc.step, esc.kind))}")
        if esc.tone is not None:
            line += f" · tone *{esc.tone.value}*"
        if esc.approval is Approval.FINANCE:
            line += " · needs finance approval"
        blocks.append(section(clip(line, 2900), accessory=_log_reply_button(c)))
        if esc.state.is_open:
            blocks.append(_actions(esc))
        else:
            blocks.append(context(clip(handled_line(c, tz_label=tz_label), 900)))
        room = GROUP_REPLIES_SHOWN - shown_replies
        if room > 0 and c.replies:
            blocks.extend(reply_blocks(c, most=room))
            shown_replies += min(room, len(c.replies))
    grouped = {c.invoice.invoice_id for c in cards}
    rest = tuple(o for o in first.others if o.invoice_id not in grouped)
    if rest:
        blocks.append(section(_others_text(rest, today=today)))
    blocks.append(context("Drafts are shown in full when you choose *Approve & send…*"))
    return blocks


def customer_card_text(cards: list[CardData]) -> str:
    totals: dict[str, Decimal] = {}
    for c in cards:
        totals[c.invoice.currency] = totals.get(c.invoice.currency, Decimal(0)) + \
            c.invoice.amount_due
    name = escape(one_line(cards[0].invoice.customer.name))
    return clip(f"{name} · {len(cards)} invoices · {totals_line(totals)} due", 1000)


def card_text(card: CardData) -> str:
    """Fallback text (notifications, screen readers): customer, invoice, amount, step."""
    esc, inv = card.escalation, card.invoice
    text = (f"{escape(one_line(inv.customer.name))} · {escape(one_line(inv.number))} · "
            f"{_amount_due(inv)} due · {escape(step_words(esc.step, esc.kind))}")
    if not esc.state.is_open:
        text += f" · {esc.state.value}"
    return clip(text, 1000)


def compact_line(card: CardData, *, today: date) -> str:
    """One mrkdwn line per card for lists (App Home, `/dunning mine`)."""
    esc, inv = card.escalation, card.invoice
    dpd = days_past_due(inv.due_date, today)
    return clip(f"{LANE_EMOJI[esc.lane]} *{escape(one_line(inv.customer.name))}* · "
                f"{escape(one_line(inv.number))} · {_amount_due(inv)} · {due_words(dpd)} · "
                f"{escape(step_words(esc.step, esc.kind))}", 600)


def build_owner_header(*, owner_label: str, day: date, count: int,
                       total_by_currency: dict[str, Decimal]) -> list[Block]:
    """The message above an owner's cards for the day: how many, how much."""
    who = label(owner_label)
    if count == 0:
        line = f"{who}: nothing needs you today."
    else:
        noun = "escalation needs" if count == 1 else "escalations need"
        line = f"{who}: *{count}* {noun} you today · {totals_line(total_by_currency)} due"
    return [header(f"Dunning · {short_date(day)}"), section(line)]


def owner_header_text(*, owner_label: str, day: date, count: int,
                      total_by_currency: dict[str, Decimal]) -> str:
    noun = "escalation" if count == 1 else "escalations"
    return (f"Dunning {day.isoformat()}: {count} {noun} for {label(owner_label)} · "
            f"{totals_line(total_by_currency)} due")


def handled_line(card: CardData, *, tz_label: str = "UTC") -> str:
    """Who handled a card, when and how: "✅ Approved by <@U1> at 09:12"."""
    esc = card.escalation
    who = clip(card.handled_label or (esc.handled_by and label(esc.handled_by)) or "someone",
               200)
    at = f" at {slack_time(esc.handled_at, tz_label=tz_label)}" if esc.handled_at else ""
    note = clip(escape(one_line(esc.note)), 500) if esc.note else None
    state = esc.state
    if state is EscalationState.APPROVED:
        return f"✅ Approved by {who}{at}" + (f": {note}" if note else "")
    if state is EscalationState.SENT:
        return f"📤 Sent · approved by {who}{at}"
    if state is EscalationState.REJECTED:
        return f"❌ Rejected by {who}{at}: {note or 'no reason given'}"
    if state is EscalationState.DONE and esc.kind is Kind.FINANCE_DECISION:
        decision, rest = decision_from_note(esc.note)
        what = FINANCE_WORDS[decision] if decision else "done"
        detail = f": {clip(escape(one_line(rest)), 500)}" if rest else ""
        return f"🏦 Finance decided: {what} (by {who}{at}){detail}"
    if state is EscalationState.DONE:
        return f"✔️ Done by {who}{at}" + (f": {note}" if note else "")
    if state is EscalationState.CLOSED:
        status = card.invoice.status
        why = {InvoiceStatus.PAID: "invoice paid", InvoiceStatus.VOID: "invoice voided",
               InvoiceStatus.UNCOLLECTIBLE: "invoice written off"}.get(status)
        return f"💸 Closed: {why or note or 'the invoice is no longer open'}"
    if state is EscalationState.SKIPPED:  # set aside: snoozed or otherwise parked
        by = f" by {who}{at}" if esc.handled_by or card.handled_label else ""
        return f"⏭️ Set aside{by}" + (f": {note}" if note else "")
    if state is EscalationState.CANCELLED:
        by = f" by {who}{at}" if esc.handled_by or card.handled_label else ""
        return f"🚫 Cancelled{by}" + (f": {note}" if note else "")
    return f"{state.value}"  # open states never reach here


def handled_text(card: CardData, *, tz_label: str = "UTC") -> str:
    """`handled_line` without Slack's date token: for fallback text and logs."""
    esc = card.escalation
    line = handled_line(card, tz_label=tz_label)
    if esc.handled_at is not None:
        line = line.replace(slack_time(esc.handled_at, tz_label=tz_label),
                            plain_time(esc.handled_at, tz_label=tz_label))
    return line


# --- pieces ---------------------------------------------------------------------------------


def _amount_due(inv: InvoiceState) -> str:
    return money(inv.amount_due, inv.currency)


def _summary_text(card: CardData) -> str:
    esc = card.escalation
    words = f"*{clip(escape(step_words(esc.step, esc.kind)), 300)}*"
    owner = clip(label(card.owner_label), 200)
    if esc.kind is Kind.CUSTOMER_MESSAGE:
        tone = esc.tone.value if esc.tone else "not set"
        approval = {
            Approval.NONE: "sent without approval",
            Approval.OWNER: f"needs the owner's approval ({owner})",
            Approval.FINANCE: "needs finance approval",
            None: "approval not set",
        }[esc.approval]
        return f"{words}\nTone *{tone}* · {approval}"
    if esc.kind is Kind.OWNER_TASK:
        return f"{words}\nFor the owner ({owner}) to act"
    return f"{words}\nFor finance to decide"


def _flags(card: CardData) -> str:
    note = ", nothing is sent without approval" if card.risk.sensitive else ""
    return customer_flags(card.invoice.customer, card.risk.sensitivity_reasons
                          if card.risk.sensitive else (), sensitive_note=note)


def _risk_text(risk: RiskAssessment) -> str:
    head = f"*Risk {risk.score}/100*"
    if risk.chronic_late:
        head += " · chronic late payer"
    elif risk.first_time_late:
        head += " · first time late"
    lines = bullets((escape(r) for r in risk.reasons), limit=900, most=RISK_REASONS_SHOWN,
                    each=300)
    return f"{head}\n{lines}" if lines else head


def _state_lines(card: CardData, *, today: date) -> list[str]:
    inv = card.invoice
    lines: list[str] = []
    if inv.promise is not None:
        p = inv.promise
        amount = f"{money(p.amount, inv.currency)} " if p.amount is not None else ""
        status = p.status.value
        if p.status is PromiseStatus.OPEN:
            status = ("due today" if p.promised_date == today
                      else "overdue" if p.promised_date < today else "open")
        lines.append(f"🤝 Promise to pay {amount}by {p.promised_date.isoformat()} ({status})")
    if inv.dispute is not None:
        d = inv.dispute
        amount = f" {money(d.amount, inv.currency)}" if d.amount is not None else ""
        since = f" since {d.opened_on.isoformat()}" if d.opened_on else ""
        lines.append(clip(f"⚠️ Disputed{amount}{since}: {escape(one_line(d.reason))}", 400))
    if inv.snoozed_until is not None and inv.snoozed_until > today:
        lines.append(f"😴 Snoozed until {inv.snoozed_until.isoformat()}")
    if card.last_touch is not None:
        t = card.last_touch
        lines.append(clip(f"🕘 Last touch: {escape(one_line(t.channel))} on "
                          f"{t.at.date().isoformat()} by {label(t.actor)}: "
                          f"{escape(one_line(t.summary))}", 500))
    return lines


def _draft_blocks(draft: Draft) -> list[Block]:
    body = draft.body.strip()
    preview = body if len(body) <= DRAFT_PREVIEW else _cut_words(body, DRAFT_PREVIEW)
    quoted = "\n".join(f"> {escape(line)}" if line.strip() else ">"
                       for line in preview.splitlines())
    text = clip(f"✉️ *{clip(escape(one_line(draft.subject)), 300)}*\n{quoted}", 2200)
    source = "drafted by the model" if draft.source == "llm" else "from a template"
    to = ", ".join(escape(a) for a in draft.to) or "no recipient"
    meta = f"To: {to}"
    if draft.cc:
        meta += f" · Cc: {', '.join(escape(a) for a in draft.cc)}"
    lines = [clip(f"{meta} · {source}", 600)]
    if draft.note:
        lines.append(clip(f"⚠️ {escape(one_line(draft.note))}", 300))
    return [divider(), section(text), context(*lines)]


def _cut_words(text: str, limit: int) -> str:
    cut = text[:limit]
    space = cut.rfind(" ")
    if space > limit * 0.8:
        cut = cut[:space]
    return cut.rstrip() + " …"


def _others_text(others: tuple[InvoiceState, ...], *, today: date) -> str:
    totals: dict[str, Decimal] = defaultdict(Decimal)
    for o in others:
        totals[o.currency] += o.amount_due
    noun = "other open invoice" if len(others) == 1 else "other open invoices"
    head = clip(f"*{len(others)} {noun}* for this customer · {totals_line(totals)} due", 400)
    oldest = sorted(others, key=lambda o: (o.due_date, o.number))[:OTHERS_SHOWN]
    lines = [f"{escape(one_line(o.number))} · {due_words(days_past_due(o.due_date, today))} · "
             f"{money(o.amount_due, o.currency)}" for o in oldest]
    listed = bullets(lines, limit=1500, most=OTHERS_SHOWN, each=250)  # 5 x 250: all fit
    more = len(others) - len(oldest)
    tail = f"\n_and {more} more_" if more > 0 else ""
    title = "Oldest:\n" if len(others) > OTHERS_SHOWN else ""
    return f"{head}\n{title}{listed}{tail}"


def _actions(esc: Escalation) -> Block:
    value = str(esc.id)
    elements: list[dict[str, Any]]
    if esc.kind is Kind.CUSTOMER_MESSAGE:
        elements = [
            button("Approve & send…", action_id=ActionId.APPROVE.value, value=value,
                   style="primary"),
            button("Reject", action_id=ActionId.REJECT.value, value=value),
        ]
    elif esc.kind is Kind.OWNER_TASK:
        elements = [button("Done", action_id=ActionId.DONE.value, value=value,
                           style="primary")]
    else:
        elements = [{
            "type": "static_select",
            "action_id": ActionId.FINANCE_DECISION.value,
            "placeholder": plain("Finance decision…"),
            "options": [option(FINANCE_WORDS[d].capitalize(), d.value)
                        for d in FinanceDecision],
        }]
    if esc.kind is Kind.FINANCE_DECISION:
        elements += [button("Snooze", action_id=ActionId.SNOOZE.value, value=value),
                     button("Reassign", action_id=ActionId.REASSIGN.value, value=value)]
    else:
        elements += [
            button("Snooze", action_id=ActionId.SNOOZE.value, value=value),
            button("Dispute", action_id=ActionId.DISPUTE.value, value=value),
            button("Promise to pay", action_id=ActionId.PROMISE.value, value=value),
            button("Reassign", action_id=ActionId.REASSIGN.value, value=value),
            button("Log call", action_id=ActionId.CALL_OUTCOME.value, value=value),
        ]
    return {"type": "actions", "block_id": card_actions_block_id(esc.id), "elements": elements}


# --- customer replies -----------------------------------------------------------------------

CONFIRM_WORDS: dict[Intent, str] = {
    Intent.PROMISE_TO_PAY: "Log promise",
    Intent.DISPUTE: "Record dispute",
    Intent.ALREADY_PAID: "Note claimed payment",
    Intent.OUT_OF_OFFICE: "Note out of office",
}


def _log_reply_button(card: CardData) -> dict[str, Any] | None:
    """"Log customer reply" on an open card of an open invoice (a handled card offers no
    buttons; replies by email still reach it through the mailbox)."""
    if card.invoice.status is not InvoiceStatus.OPEN or not card.escalation.state.is_open:
        return None
    return button("Log customer reply", action_id=ActionId.LOG_REPLY.value,
                  value=str(card.escalation.id))


def reply_words(analysis: ReplyAnalysis, *, invoice_currency: str) -> str:
    """What the customer's reply seems to say, in one mrkdwn line (customer text escaped)."""
    a = analysis
    amount = (f" {money(a.amount, a.currency or invoice_currency)}"
              if a.amount is not None and a.amount > 0 else "")
    if a.intent is Intent.PROMISE_TO_PAY:
        when = f" on {short_date(a.promise_date)}" if a.promise_date else " (no date given)"
        return f"Customer promises to pay{amount}{when}"
    if a.intent is Intent.ALREADY_PAID:
        ref = f" (reference {escape(one_line(a.reference))[:80]})" if a.reference else ""
        return f"Customer says it has already paid{amount}{ref}"
    if a.intent is Intent.DISPUTE:
        why = f": {clip(escape(one_line(a.dispute_reason)), 200)}" if a.dispute_reason else ""
        return f"Customer disputes the invoice{amount}{why}"
    if a.intent is Intent.OUT_OF_OFFICE:
        back = f" until {short_date(a.return_date)}" if a.return_date else ""
        return f"Out of office{back}"
    if a.intent is Intent.PAYMENT_PLAN:
        start = f" starting {short_date(a.promise_date)}" if a.promise_date else ""
        return f"Customer asks for a payment plan{start}"
    if a.intent is Intent.RESEND_INVOICE:
        return "Customer asks for the invoice again"
    if a.intent is Intent.BILLING_UPDATE:
        return "Customer sends a billing or contact update"
    return "Customer replied"


def reply_blocks(card: CardData, *, most: int = REPLIES_SHOWN) -> list[Block]:
    """Each pending reply proposal: what it says with its evidence, where it came from (and
    a visible prompt-injection warning), and the buttons to apply it or dismiss it."""
    out: list[Block] = []
    for proposal in card.replies[:most]:
        a = proposal.analysis
        words = reply_words(a, invoice_currency=card.invoice.currency)
        evidence = clip(escape(one_line(a.evidence)), EVIDENCE_SHOWN) if a.evidence else ""
        quote = f" (evidence: “{evidence}”)" if evidence else ""
        out.append(section(clip(f"💬 {words}{quote}", 2900)))
        origin = ("pasted on the card" if proposal.source == "card"
                  else f"email from {escape(proposal.sender)}" if proposal.sender
                  else "email")
        lines = [clip(f"Reply #{proposal.reply_id} · {origin} · nothing changes until "
                      "someone confirms", 600)]
        if a.injection_suspected:
            lines.insert(0, "⚠️ possible prompt injection in this reply: read it before "
                            "confirming")
        out.append(context(*lines))
        value = reply_value(proposal.reply_id, card.escalation.id)
        confirm = button(CONFIRM_WORDS.get(a.intent, "Log on the invoice"),
                         action_id=ActionId.REPLY_CONFIRM.value, value=value,
                         style=None if a.injection_suspected else "primary")
        out.append({"type": "actions", "block_id": f"{BlockId.REPLY.value}:{proposal.reply_id}",
                    "elements": [confirm, button("Dismiss", action_id=ActionId.REPLY_DISMISS.value,
                                                 value=value)]})
    return out
