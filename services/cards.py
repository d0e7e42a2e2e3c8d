"""Escalation cards: what a card shows, and what people do on it.

Every action is authorized (`may_act`), idempotent (a handled card refuses a second
handling and says who handled it, atomically: the state changes with a conditional
UPDATE), and audited. Approving a customer message queues it in the outbox; nothing is
sent from here.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from email.utils import make_msgid
from typing import Any

from sqlalchemy import bindparam, or_, update
from sqlalchemy import select as sa_select
from sqlalchemy.sql.elements import BindParameter
from sqlmodel import Session, col, select

from connectors.llm import LlmClient
from dunning.model import (
    Approval,
    Channel,
    Draft,
    Escalation,
    EscalationState,
    InvoiceState,
    InvoiceStatus,
    Kind,
    Lane,
    Tone,
    Touch,
)
from dunning.policy import Policy
from dunning.risk import RiskAssessment, assess
from services.common import Actor, NotFoundError, ServiceError, audit, refresh_next_actions
from services.drafting import make_draft
from services.importing import close_invoice_escalations
from services.outbox import enqueue
from store import tables as t
from store._sql import table_of
from store.repository import load_states

MAX_SUBJECT = 200
# A person may act on a card until it is handled; `posting` included: a card may be on Slack
# already while its ts is not stored (the poster died), and a click must still work.
OPEN_STATES = [s.value for s in EscalationState if s.is_open]
MAX_BODY = 10_000


class AlreadyHandledError(ServiceError):
    """A second click: the card was handled already; the message says by whom."""


class NotAllowedError(ServiceError):
    """The person may not act on this card; the message says who may."""


@dataclass(frozen=True)
class Roles:
    """Who is finance and who manages, by Slack user id or email (settings)."""

    finance: frozenset[str] = frozenset()
    managers: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Person:
    """Someone clicking in Slack: their Slack id and, when Slack tells us, their email."""

    user_id: str
    email: str | None = None

    @property
    def actor(self) -> Actor:
        return Actor(self.email or self.user_id)

    def is_in(self, group: frozenset[str]) -> bool:
        return self.user_id in group or (self.email is not None and self.email in group)


@dataclass(frozen=True)
class Card:
    escalation: Escalation
    invoice: InvoiceState
    others: tuple[InvoiceState, ...]
    risk: RiskAssessment
    draft: Draft | None
    last_touch: Touch | None
    channel: str | None
    ts: str | None


def escalation_from_row(row: t.Escalation) -> Escalation:
    assert row.id is not None
    return Escalation(
        id=row.id, invoice_id=row.invoice_id, step=row.step, kind=Kind(row.kind),
        tone=Tone(row.tone) if row.tone else None,
        approval=Approval(row.approval) if row.approval else None,
        channel=Channel(row.channel), lane=Lane(row.lane) if row.lane else Lane.CURRENT,
        days_past_due=row.days_past_due, scheduled_on=row.scheduled_on,
        reasons=tuple(json.loads(row.reasons or "[]")), owner=row.owner,
        state=EscalationState(row.state), plan_date=row.plan_date,
        handled_by=row.handled_by, handled_at=row.handled_at,
        note=getattr(row, "note", None),
    )


def _row(session: Session, escalation_id: int) -> t.Escalation:
    row = session.get(t.Escalation, escalation_id)
    if row is None:
        raise NotFoundError(f"no escalation #{escalation_id}: the card may be from another "
                            "installation or was removed")
    return row


_INVOICE = table_of(t.Invoice)
_DRAFT = table_of(t.Draft)
_TOUCH = table_of(t.Touch)
_INVOICE_ID: BindParameter[str] = bindparam("invoice")
# The card's invoice and its customer's other open invoices, in one query.
_CARD_INVOICES = sa_select(_INVOICE.c.id).where(
    _INVOICE.c.customer_id == sa_select(_INVOICE.c.customer_id).where(
        _INVOICE.c.id == _INVOICE_ID).scalar_subquery(),
    or_(_INVOICE.c.status == "open", _INVOICE.c.id == _INVOICE_ID))
_CARD_DRAFT = sa_select(_DRAFT.c.subject, _DRAFT.c.body, _DRAFT.c.source, _DRAFT.c.note).where(
    _DRAFT.c.escalation_id == bindparam("escalation")).limit(1)
_LAST_TOUCH = sa_select(_TOUCH.c.occurred_at, _TOUCH.c.channel, _TOUCH.c.summary,
                        _TOUCH.c.actor).where(_TOUCH.c.invoice_id == _INVOICE_ID).order_by(
    _TOUCH.c.occurred_at.desc()).limit(1)


def load_card(session: Session, policy: Policy, escalation_id: int, today: date) -> Card:
    """A card as the person sees it: ten queries, whatever the size of the ledger (this
    runs on every click)."""
    row = _row(session, escalation_id)
    conn = session.connection()
    ids = list(conn.execute(_CARD_INVOICES, {"invoice": row.invoice_id}).scalars())
    states = load_states(session, ids)
    state = states.pop(row.invoice_id)
    others = tuple(sorted(states.values(), key=lambda s: (s.due_date, s.invoice_id)))
    total_due = state.amount_due + sum((o.amount_due for o in others
                                        if o.currency == state.currency), state.amount_due * 0)
    risk = assess(state.customer, state.history, amount_due=total_due,
                  days_past_due=(today - state.due_date).days, policy=policy)
    draft_row = conn.execute(_CARD_DRAFT, {"escalation": escalation_id}).first()
    draft = None
    if draft_row is not None:
        c = state.customer
        draft = Draft(subject=draft_row.subject, body=draft_row.body,
                      to=(c.ap_contact_email,) if c.ap_contact_email else (),
                      source=draft_row.source, note=draft_row.note)
    touch_row = conn.execute(_LAST_TOUCH, {"invoice": state.invoice_id}).first()
    touch = (Touch(touch_row.occurred_at, touch_row.channel, touch_row.summary, touch_row.actor)
             if touch_row else None)
    return Card(escalation_from_row(row), state, others, risk, draft, touch,
                row.slack_channel, row.slack_ts)


def ensure_draft(session: Session, escalation_id: int, *, sender_name: str,
                 now: datetime, llm: LlmClient | None = None,
                 budget_usd: Decimal | str | None = None) -> None:
    """The draft of a customer-message card, made once (services.drafting: the model when
    configured and affordable, else the template, with a note saying why)."""
    make_draft(session, escalation_id, llm=llm, sender_name=sender_name, now=now,
               budget_usd=budget_usd)


def cards_to_post(session: Session) -> list[int]:
    """Escalations the cycle created that are not on Slack yet, oldest first."""
    return [i for i in session.exec(
        select(t.Escalation.id).where(t.Escalation.state == EscalationState.PROPOSED.value)
        .order_by(col(t.Escalation.id))) if i is not None]


def claim_for_posting(session: Session, escalation_ids: list[int], *, channel: str) -> bool:
    """proposed -> posting with the target channel, for all of `escalation_ids` or none.

    Committed before chat.postMessage: a worker killed after Slack accepted the card but
    before its ts was stored leaves the card in `posting`, which the next run reconciles
    from the channel's history instead of posting it again.
    """
    result = session.exec(update(t.Escalation).where(
        col(t.Escalation.id).in_(escalation_ids),
        col(t.Escalation.state) == EscalationState.PROPOSED.value,
    ).values(state=EscalationState.POSTING.value, slack_channel=channel, slack_ts=None))
    if result.rowcount != len(escalation_ids):
        session.rollback()  # another poster took some of them: leave the batch to it
        return False
    return True


def release_claim(session: Session, escalation_ids: list[int]) -> None:
    """posting -> proposed: Slack refused the card (it was not posted), try it again later."""
    session.exec(update(t.Escalation).where(
        col(t.Escalation.id).in_(escalation_ids),
        col(t.Escalation.state) == EscalationState.POSTING.value,
    ).values(state=EscalationState.PROPOSED.value, slack_channel=None))


@dataclass(frozen=True)
class PostingClaim:
    """A card claimed for posting whose outcome is unknown (the poster died or timed out)."""

    escalation_id: int
    channel: str
    created_at: datetime


def cards_in_posting(session: Session) -> list[PostingClaim]:
    """Escalations left in `posting` (with the channel they were meant for), oldest first."""
    return [PostingClaim(r.id, r.slack_channel or "", r.created_at)
            for r in session.exec(select(t.Escalation).where(
                t.Escalation.state == EscalationState.POSTING.value)
                .order_by(col(t.Escalation.id))) if r.id is not None]


def mark_posted(session: Session, escalation_id: int, *, channel: str, ts: str) -> None:
    """Record the card's message (from a claim, or from a proposed card posted directly)."""
    session.exec(update(t.Escalation).where(
        col(t.Escalation.id) == escalation_id,
        col(t.Escalation.state).in_([EscalationState.PROPOSED.value,
                                     EscalationState.POSTING.value]),
    ).values(state=EscalationState.POSTED.value, slack_channel=channel, slack_ts=ts))


def may_act(roles: Roles, person: Person, card: Card, *, finance_only: bool) -> bool:
    if person.is_in(roles.finance):
        return True
    if finance_only:
        return False
    if person.is_in(roles.managers):
        return True
    if person.email is None:
        return False
    email = person.email.lower()
    c = card.invoice.customer
    owners = {x.lower() for x in (card.escalation.owner, c.owner_email, c.csm_email) if x}
    return email in owners


def _authorize(roles: Roles, person: Person, card: Card, *, finance_only: bool) -> None:
    if not may_act(roles, person, card, finance_only=finance_only):
        who = "finance" if finance_only else "the account's owner or CSM, finance or a manager"
        raise NotAllowedError(f"Only {who} can do this on {card.invoice.customer.name}'s "
                              "invoice. Nothing was changed.")


def _transition(session: Session, card: Card, *, to: EscalationState, person: Person,
                now: datetime, note: str | None = None) -> None:
    """Move an open card to `to` exactly once; a second click gets AlreadyHandledError."""
    result = session.exec(update(t.Escalation).where(
        col(t.Escalation.id) == card.escalation.id,
        col(t.Escalation.state).in_(OPEN_STATES),
    ).values(state=to.value, handled_by=person.user_id, handled_at=now,
             **({"note": note} if note is not None else {})))
    if result.rowcount != 1:
        session.rollback()
        current = _row(session, card.escalation.id)
        who = f"<@{current.handled_by}>" if current.handled_by else "someone"
        when = current.handled_at.strftime("%Y-%m-%d %H:%M UTC") if current.handled_at else ""
        raise AlreadyHandledError(f"Already handled: {current.state} by {who} {when}".strip())
    audit(session, actor=person.actor, action=f"escalation.{to.value}", entity="escalation",
          entity_id=str(card.escalation.id), at=now,
          before={"state": card.escalation.state.value},
          after={"state": to.value, "by": person.user_id, "note": note})


def approve_draft(session: Session, card: Card, *, roles: Roles, person: Person,
                  subject: str, body: str, sender: str, now: datetime) -> str:
    """Approve (maybe edited) and queue the message; returns the outbox key."""
    esc = card.escalation
    if esc.kind is not Kind.CUSTOMER_MESSAGE:
        raise ServiceError("only customer messages have a draft to approve")
    _authorize(roles, person, card, finance_only=esc.approval is Approval.FINANCE)
    subject, body = subject.strip(), body.strip()
    if not subject or not body:
        raise ServiceError("the subject and the body must not be empty")
    if len(subject) > MAX_SUBJECT or len(body) > MAX_BODY:
        raise ServiceError(f"the subject is limited to {MAX_SUBJECT} characters and the body "
                           f"to {MAX_BODY}")
    to = card.invoice.customer.ap_contact_email
    if not to:
        raise ServiceError(f"{card.invoice.customer.name} has no accounts-payable email on "
                           "file: add one in the billing system or CRM, then approve again")
    if card.invoice.status is not InvoiceStatus.OPEN:
        raise ServiceError(f"invoice {card.invoice.number} is {card.invoice.status.value}: "
                           "nothing to send")
    _transition(session, card, to=EscalationState.APPROVED, person=person, now=now)
    key = f"email:escalation:{esc.id}"
    domain = sender.rsplit("@", 1)[-1] if "@" in sender else "dunning.local"
    payload: dict[str, Any] = {
        "escalation_id": esc.id, "invoice_id": esc.invoice_id, "to": [to], "cc": [],
        "from": sender, "subject": subject, "body": body,
        "message_id": make_msgid(idstring=f"esc{esc.id}", domain=domain),
    }
    enqueue(session, key=key, kind="email", payload=payload, now=now)
    draft = session.exec(select(t.Draft).where(t.Draft.escalation_id == esc.id)).first()
    if draft is not None and (draft.subject != subject or draft.body != body):
        audit(session, actor=person.actor, action="draft.edited", entity="escalation",
              entity_id=str(esc.id), at=now, before={"subject": draft.subject},
              after={"subject": subject, "body_changed": draft.body != body})
        draft.subject, draft.body = subject, body
        session.add(draft)
    return key


def reject_draft(session: Session, card: Card, *, roles: Roles, person: Person, reason: str,
                 now: datetime) -> None:
    reason = reason.strip()
    if not reason:
        raise ServiceError("say why the draft is rejected")
    _authorize(roles, person, card, finance_only=False)
    _transition(session, card, to=EscalationState.REJECTED, person=person, now=now,
                note=reason[:2000])


def mark_done(session: Session, card: Card, *, roles: Roles, person: Person, now: datetime,
              note: str | None = None) -> None:
    if card.escalation.kind is Kind.FINANCE_DECISION:
        raise ServiceError("a finance decision is taken with the decision menu")
    _authorize(roles, person, card, finance_only=False)
    _transition(session, card, to=EscalationState.DONE, person=person, now=now, note=note)


def set_aside(session: Session, card: Card, *, roles: Roles, person: Person, note: str,
              now: datetime) -> None:
    """The card is answered another way (snooze, dispute, promise): nothing is sent for it."""
    _authorize(roles, person, card, finance_only=False)
    _transition(session, card, to=EscalationState.SKIPPED, person=person, now=now, note=note)


def decide_finance(session: Session, policy: Policy, card: Card, *, roles: Roles,
                   person: Person, decision: str, note: str, now: datetime) -> str:
    """Service pause, payment plan, write-off or collections: finance only, recorded."""
    allowed = ("service_pause", "payment_plan", "write_off", "collections")
    if decision not in allowed:
        raise ServiceError(f"unknown decision {decision!r}")
    _authorize(roles, person, card, finance_only=True)
    if decision == "write_off" and not note.strip():
        raise ServiceError("a write-off needs a note (why, and who agreed)")
    _transition(session, card, to=EscalationState.DONE, person=person, now=now,
                note=f"{decision}: {note.strip()}" if note.strip() else decision)
    if decision == "write_off":
        inv = session.get(t.Invoice, card.invoice.invoice_id)
        assert inv is not None
        inv.status = InvoiceStatus.UNCOLLECTIBLE.value
        inv.updated_at = now
        session.add(inv)
        session.flush()
        close_invoice_escalations(session, inv.id, reason="written off", actor=person.actor,
                                  now=now)
        refresh_next_actions(session, policy, [inv.id])
        audit(session, actor=person.actor, action="invoice.written_off", entity="invoice",
              entity_id=inv.id, at=now, before={"status": "open"},
              after={"status": "uncollectible", "note": note.strip()})
    return decision


def reassign(session: Session, card: Card, *, roles: Roles, person: Person, new_owner: str,
             now: datetime) -> None:
    """Give the card to another owner (e.g. the AE is away); the card moves with it."""
    _authorize(roles, person, card, finance_only=False)
    new_owner = new_owner.strip().lower()
    if "@" not in new_owner:
        raise ServiceError("the new owner needs an email address in Slack's profile")
    if not card.escalation.state.is_open:
        raise AlreadyHandledError("this card is already handled: nothing to reassign")
    row = _row(session, card.escalation.id)
    before = row.owner
    row.owner = new_owner
    session.add(row)
    audit(session, actor=person.actor, action="escalation.reassigned", entity="escalation",
          entity_id=str(card.escalation.id), at=now, before={"owner": before},
          after={"owner": new_owner})


def open_cards_of(session: Session, policy: Policy, owner_email: str, today: date, *,
                  limit: int) -> list[Card]:
    """The owner's open escalations (proposed, posting or posted), oldest first."""
    ids = [i for i in session.exec(select(t.Escalation.id).where(
        t.Escalation.owner == owner_email.lower(),
        col(t.Escalation.state).in_(OPEN_STATES))
        .order_by(col(t.Escalation.id)).limit(limit)) if i is not None]
    return [load_card(session, policy, i, today) for i in ids]


def cards_in_message(session: Session, policy: Policy, card: Card, today: date) -> list[Card]:
    """Every card posted in the same Slack message as `card` (a customer card holds several)."""
    if not card.channel or not card.ts:
        return [card]
    ids = [i for i in session.exec(select(t.Escalation.id).where(
        t.Escalation.slack_channel == card.channel, t.Escalation.slack_ts == card.ts)
        .order_by(col(t.Escalation.id))) if i is not None]
    return [load_card(session, policy, i, today) for i in ids] if len(ids) > 1 else [card]


def move_card(session: Session, escalation_id: int, *, channel: str, ts: str) -> None:
    """Record where a card now lives (after a reassignment posted it to the new owner)."""
    row = _row(session, escalation_id)
    row.slack_channel, row.slack_ts = channel, ts
    session.add(row)


@dataclass(frozen=True)
class Activity:
    at: datetime
    escalation_id: str
    action: str
    actor: str


def recent_activity(session: Session, owner_email: str, *, cards: int,
                    limit: int) -> list[Activity]:
    """What happened lately on the owner's most recent cards (from the audit log)."""
    recent = [str(i) for i in session.exec(select(t.Escalation.id).where(
        t.Escalation.owner == owner_email.lower())
        .order_by(col(t.Escalation.id).desc()).limit(cards))]
    if not recent:
        return []
    return [Activity(e.at, e.entity_id, e.action.removeprefix("escalation."), e.actor)
            for e in session.exec(select(t.AuditEvent).where(
                t.AuditEvent.entity_type == "escalation",
                col(t.AuditEvent.entity_id).in_(recent))
                .order_by(col(t.AuditEvent.id).desc()).limit(limit))]
