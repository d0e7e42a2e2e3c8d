"""Drafting a customer message: the model when it is configured, affordable and right;
the template otherwise, with a note saying why (the card shows it).

gather: the escalation, its invoice as the rules see it, prior touches, today's model spend;
decide: cache hit, over budget, or ask the model and check its draft against the ledger
(`dunning.drafts.check_draft`); apply: one Draft row per escalation, one LlmCall row per
model call (tokens, cost, outcome), whatever the outcome.

The cache key is (invoice, step, hash of the prompt and model): the same context never
pays for a second call, and a changed context (a payment arrived, a promise was broken)
gets a fresh draft.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal

from sqlalchemy import func
from sqlmodel import Session, col, select

from connectors.errors import (
    AuthError,
    ConnectorError,
    DataError,
    RateLimitedError,
    UnavailableError,
)
from connectors.llm import LlmClient, LlmTimeoutError, MalformedOutputError, Usage
from dunning.calendar import local_date
from dunning.drafts import check_draft, draft_prompt, language_for, template_draft
from dunning.escalation import decide
from dunning.model import (
    Action,
    Approval,
    Channel,
    Draft,
    EscalationState,
    InvoiceState,
    Kind,
    Lane,
    Tone,
    Touch,
)
from dunning.policy import Policy
from services.common import NotFoundError
from store import tables as t
from store.repository import load_states

log = logging.getLogger(__name__)
PURPOSE = "draft"
NO_AP_EMAIL = "no accounts-payable email on file: add one before approving"
MICROS = Decimal(1_000_000)


@dataclass(frozen=True)
class DraftResult:
    """What was drafted and how: `source` is "llm" or "template"; `fallback` says why the
    template was used although a model is configured (None otherwise)."""

    draft: Draft
    language: str
    fallback: str | None
    cached: bool = False
    outcome: str | None = None  # the model call's outcome, when one was made


def _action_of(row: t.Escalation) -> Action:
    return Action(
        invoice_id=row.invoice_id, step=row.step, kind=Kind(row.kind),
        tone=Tone(row.tone) if row.tone else None,
        approval=Approval(row.approval) if row.approval else None,
        channel=Channel(row.channel), lane=Lane(row.lane) if row.lane else Lane.CURRENT,
        days_past_due=row.days_past_due, scheduled_on=row.scheduled_on,
        reasons=tuple(json.loads(row.reasons or "[]")), owner=row.owner)


def prior_touches(session: Session, invoice_id: str, *, limit: int = 5) -> list[Touch]:
    rows = session.exec(select(t.Touch).where(t.Touch.invoice_id == invoice_id)
                        .order_by(col(t.Touch.occurred_at).desc()).limit(limit)).all()
    return [Touch(r.occurred_at, r.channel, r.summary, r.actor) for r in reversed(rows)]


def cache_key(state: InvoiceState, action: Action, messages: Sequence[dict[str, str]],
              model: str) -> str:
    digest = hashlib.sha256(json.dumps([model, list(messages)], sort_keys=True,
                                       ensure_ascii=False).encode()).hexdigest()[:24]
    return f"{state.invoice_id}:{action.step}:{digest}"


def spent_today_micros(session: Session, now: datetime) -> int:
    """Model spend since midnight UTC of `now`, in micro-USD (every purpose counts)."""
    start = datetime.combine(now.astimezone(UTC).date(), time(0), tzinfo=UTC)
    total = session.exec(select(func.coalesce(func.sum(t.LlmCall.cost_micros), 0))
                         .where(col(t.LlmCall.at) >= start)).one()
    return int(total)


def budget_micros(budget_usd: Decimal | str) -> int:
    return int(Decimal(str(budget_usd)) * MICROS)


def record_llm_call(session: Session, *, purpose: str, model: str, usage: Usage,
                    outcome: str, subject_id: str | None, now: datetime) -> None:
    """One row of `llm_call`: what a model call was for, its tokens, cost and outcome."""
    session.add(t.LlmCall(at=now, purpose=purpose, model=model,
                          prompt_tokens=usage.prompt_tokens,
                          completion_tokens=usage.completion_tokens,
                          cost_micros=usage.cost_micros, outcome=outcome,
                          subject_id=subject_id))
    session.flush()


def call_outcome(exc: ConnectorError) -> tuple[str, str]:
    """(LlmCall.outcome, the card's note) for a failed call."""
    if isinstance(exc, LlmTimeoutError):
        return "timeout", "the model did not answer in time"
    if isinstance(exc, RateLimitedError):
        return "rate-limited", "the model server was rate limited"
    if isinstance(exc, MalformedOutputError):
        return "malformed", "the model's answer was malformed"
    if isinstance(exc, AuthError):
        return "error", "the model server refused the API key (check OPENAI_API_KEY)"
    if isinstance(exc, UnavailableError):
        return "error", "the model server was unavailable"
    if isinstance(exc, DataError):
        return "error", "the model server refused the request"
    return "error", "the model call failed"


def _with_ap_note(state: InvoiceState, note: str | None) -> str | None:
    parts = [p for p in (note, None if state.customer.ap_contact_email else NO_AP_EMAIL) if p]
    return "; ".join(parts) or None


def _cached(session: Session, key: str) -> t.Draft | None:
    return session.exec(select(t.Draft).where(t.Draft.cache_key == key,
                                              t.Draft.source == t.DraftSource.LLM.value)
                        .order_by(col(t.Draft.id))).first()


def compose(session: Session, state: InvoiceState, action: Action, *,
            llm: LlmClient | None, sender_name: str, now: datetime,
            budget_usd: Decimal | str | None, subject_id: str | None,
            record: bool = True) -> tuple[DraftResult, str, Usage]:
    """Decide the draft for one customer-message action: (result, cache key, usage).

    With `record`, every model call is logged in LlmCall (the budget depends on it); the
    Draft row itself is the caller's to write. Without `record` (a preview) nothing is
    written, and the model is not called when it would be the only way to know.
    """
    language = language_for(state.customer)
    template = template_draft(state, action, sender_name=sender_name)

    def fallback(reason: str | None, outcome: str | None = None) -> DraftResult:
        note = f"{reason}: template used" if reason else None
        d = Draft(subject=template.subject, body=template.body, to=template.to,
                  source="template", note=_with_ap_note(state, note))
        return DraftResult(d, language, reason, outcome=outcome)

    if llm is None:
        return fallback(None), f"{state.invoice_id}:{action.step}", Usage()
    touches = prior_touches(session, state.invoice_id)
    messages = draft_prompt(state, action, sender_name=sender_name, touches=touches,
                            language=language)
    key = cache_key(state, action, messages, llm.model)
    hit = _cached(session, key)
    if hit is not None:
        d = Draft(subject=hit.subject, body=hit.body, to=template.to, source=hit.source,
                  note=_with_ap_note(state, None))
        return DraftResult(d, language, None, cached=True), key, Usage()

    spent = spent_today_micros(session, now)
    cap = budget_micros(budget_usd) if budget_usd is not None else None
    if cap is not None and spent >= cap:
        reason = (f"daily model budget reached ({Decimal(spent) / MICROS:.2f} of "
                  f"{Decimal(cap) / MICROS:.2f} USD spent today)")
        return fallback(reason), key, Usage()

    def log_call(outcome: str, usage: Usage) -> None:
        if record:
            record_llm_call(session, purpose=PURPOSE, model=llm.model, usage=usage,
                            outcome=outcome, subject_id=subject_id, now=now)

    try:
        answer = llm.draft(messages)
    except ConnectorError as exc:
        outcome, reason = call_outcome(exc)
        usage = getattr(exc, "usage", None) or Usage()
        log.warning("draft for %s/%s: model call failed (%s): %s", state.invoice_id,
                    action.step, outcome, exc)
        log_call(outcome, usage)
        return fallback(reason, outcome), key, usage
    problems = check_draft(answer.subject, answer.body, state, language)
    if problems:
        log.warning("draft for %s/%s: model draft refused: %s", state.invoice_id,
                    action.step, "; ".join(problems))
        log_call("fact-mismatch", answer.usage)
        return (fallback(f"the model's draft misstated the ledger ({problems[0]})",
                         "fact-mismatch"), key, answer.usage)
    log_call("ok", answer.usage)
    d = Draft(subject=answer.subject, body=answer.body, to=template.to,
              source=t.DraftSource.LLM.value, note=_with_ap_note(state, None))
    return DraftResult(d, language, None, outcome="ok"), key, answer.usage


def make_draft(session: Session, escalation_id: int, *, llm: LlmClient | None,
               sender_name: str, now: datetime,
               budget_usd: Decimal | str | None = None) -> DraftResult | None:
    """The draft of a customer-message card, made once per escalation (None for other
    kinds; an existing draft is returned as stored, without recipients or language).

    The model is asked when `llm` is given, the day's budget allows it and no draft for
    the same context exists; every failure falls back to the template.
    `budget_usd` caps the day's model spend (None: no cap)."""
    row = session.get(t.Escalation, escalation_id)
    if row is None:
        raise NotFoundError(f"no escalation #{escalation_id}")
    if row.kind != Kind.CUSTOMER_MESSAGE.value:
        return None
    existing = session.exec(select(t.Draft).where(t.Draft.escalation_id == escalation_id)).first()
    if existing is not None:
        return DraftResult(Draft(existing.subject, existing.body, (), source=existing.source,
                                 note=existing.note), "", None, cached=True)
    state = load_states(session, [row.invoice_id])[row.invoice_id]
    action = _action_of(row)
    result, key, usage = compose(session, state, action, llm=llm, sender_name=sender_name,
                                 now=now, budget_usd=budget_usd, subject_id=str(escalation_id))
    d = result.draft
    session.add(t.Draft(escalation_id=escalation_id, subject=d.subject, body=d.body,
                        source=d.source, cache_key=key,
                        prompt_tokens=usage.prompt_tokens if d.source != "template" else 0,
                        completion_tokens=usage.completion_tokens
                        if d.source != "template" else 0,
                        cost_micros=usage.cost_micros if d.source != "template" else 0,
                        note=d.note, created_at=now))
    session.flush()
    return result


# ---- preview (the CLI): what would be sent today, written nowhere ----------------------

@dataclass(frozen=True)
class Preview:
    invoice_id: str
    number: str
    customer: str
    date: date
    step: str | None  # the customer-message step due, or the step due of another kind
    kind: str | None
    tone: str | None
    message: str  # why there is no draft, or where the draft comes from
    result: DraftResult | None = None
    escalation_id: int | None = None


def _find_invoice(session: Session, query: str) -> t.Invoice:
    inv = session.get(t.Invoice, query)
    if inv is None:
        inv = session.exec(select(t.Invoice).where(t.Invoice.number == query)).first()
    if inv is None:
        raise NotFoundError(f"no invoice with id or number {query!r}")
    return inv


def preview_draft(session: Session, policy: Policy, query: str, today: date | None, *,
                  llm: LlmClient | None, sender_name: str, now: datetime,
                  budget_usd: Decimal | str | None) -> Preview:
    """The draft the invoice's due customer-message step would carry on `today`.

    `today` defaults to the customer's own date at `now`. A card already made for it
    shows its stored draft; otherwise the draft is composed
    (with the model only when `llm` is given) and nothing is written, not even the call
    log. Without a customer message due, `message` says which step is due and why.
    """
    inv = _find_invoice(session, query)
    state = load_states(session, [inv.id])[inv.id]
    day = today or local_date(now, state.customer.timezone)

    def out(step: str | None, kind: str | None, tone: str | None, message: str,
            result: DraftResult | None = None, escalation_id: int | None = None) -> Preview:
        return Preview(inv.id, inv.number, state.customer.name, day, step, kind, tone,
                       message, result, escalation_id)

    decision = decide(state, policy, day)
    message_actions = [a for a in decision.actions if a.kind is Kind.CUSTOMER_MESSAGE]
    if message_actions:
        action = message_actions[0]
        fresh, _, _ = compose(session, state, action, llm=llm, sender_name=sender_name,
                              now=now, budget_usd=budget_usd, subject_id=None, record=False)
        origin = ("drafted by the model" if fresh.draft.source == t.DraftSource.LLM.value
                  else "from the template")
        return out(action.step, action.kind.value, action.tone.value if action.tone else None,
                   f"{action.step} is due today: {origin}", fresh)
    # Already on a card (the cycle ran): the stored draft is what would be sent.
    open_states = [s.value for s in EscalationState if s.is_open]
    row = session.exec(select(t.Escalation).where(
        t.Escalation.invoice_id == inv.id,
        t.Escalation.kind == Kind.CUSTOMER_MESSAGE.value,
        col(t.Escalation.state).in_(open_states)).order_by(col(t.Escalation.id).desc())).first()
    if row is not None and row.id is not None:
        stored = session.exec(select(t.Draft).where(t.Draft.escalation_id == row.id)).first()
        c = state.customer
        if stored is not None:
            result = DraftResult(Draft(stored.subject, stored.body,
                                       (c.ap_contact_email,) if c.ap_contact_email else (),
                                       source=stored.source, note=stored.note),
                                 language_for(c), None, cached=True)
        else:
            result, _, _ = compose(session, state, _action_of(row), llm=None,
                                   sender_name=sender_name, now=now, budget_usd=budget_usd,
                                   subject_id=None, record=False)
        return out(row.step, row.kind, row.tone,
                   f"{row.step} is already on card #{row.id} ({row.state})", result, row.id)
    if decision.actions:
        a = decision.actions[0]
        what = "an owner task" if a.kind is Kind.OWNER_TASK else "a finance decision"
        return out(a.step, a.kind.value, None,
                   f"{a.step} is due today: {what}, no customer message")
    if decision.holds:
        h = decision.holds[0]
        until = f" until {h.until.isoformat()}" if h.until else ""
        return out(h.step, None, None,
                   f"held ({h.reason.value}){until}: {h.detail or 'no message today'}")
    if not state.is_open:
        why = f"the invoice is {state.status.value}: no message"
    elif state.amount_due <= 0:
        why = "nothing is due on the invoice: no message"
    else:
        why = "no step is due today: no message"
    return out(None, None, None, why)
