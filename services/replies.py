"""Customer replies: store what came in, say what it seems to mean, apply it only when a
person confirms.

A reply (an email read over IMAP, or text pasted on a card) is matched to an invoice,
classified by the rules in `dunning.replies`, stored once (by Message-ID) and audited.
Nothing in the ledger changes then: the reply carries a *proposal* (promise, dispute,
claimed payment...) that the card shows, and `confirm_reply` applies it through the same
services a person would use by hand, exactly once (a conditional UPDATE on the status, like
the card actions). A reply that names neither a known invoice nor a known customer is kept
as `unmatched` for finance to look at; no reply is ever dropped.

Matching, first that succeeds:
1. In-Reply-To, then References, against the Message-IDs of our reminders (outbox payloads):
   the customer answered a reminder, so the invoice is the reminder's.
2. An invoice number (or id) written in the subject or the body; when the sender is a known
   customer, only that customer's invoices count (a customer cannot reach another's).
3. The sender: the AP contact's exact address, else the domain (Customer.domain or the AP
   contact's domain; never a public mail domain) gives the customer; its invoice is the
   only open one, else the one we last emailed about, else the oldest open one.

A reply's date is the email's Date in the customer's time zone (relative dates such as
"next Friday" are read against it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import func, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col, select

from connectors.imap import InboundEmail, MailSource
from connectors.llm import LlmClient
from dunning.calendar import local_date, zone
from dunning.model import EscalationState, InvoiceStatus
from dunning.money import format_money, to_minor
from dunning.policy import Policy
from dunning.replies import Intent, ReplyAnalysis
from services import actions as ledger
from services.actions import Outcome
from services.cards import (
    AlreadyHandledError,
    NotAllowedError,
    Person,
    Roles,
    load_card,
    may_act,
    set_aside,
)
from services.common import Actor, NotFoundError, ServiceError, audit, customer_today
from services.reply_llm import classify_reply
from store import tables as t
from store.engine import session_scope

log = logging.getLogger(__name__)

CURSOR_SOURCE = "imap"
BOT = Actor("imap")
MAX_TEXT = 10_000  # characters of pasted reply text (a Slack input holds 3,000)
CARD_PROPOSALS = 3  # pending proposals shown per card
_OPEN_CARD_STATES = [s.value for s in EscalationState if s.is_open]
_OUR_MSGID = re.compile(r"\.esc(\d+)@")  # make_msgid(idstring=f"esc{id}") in services.cards
_TOKEN = re.compile(r"[A-Za-z0-9][A-Za-z0-9/_.#-]*[A-Za-z0-9]")
MAX_AMOUNT = Decimal(10) ** 15  # larger "amounts" in a reply are misread digits
MAX_CANDIDATES = 60  # invoice-number candidates per reply: one bounded IN query
# Many unrelated senders share these: a domain here never identifies a customer.
PUBLIC_DOMAINS = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "msn.com",
    "yahoo.com", "yahoo.co.uk", "icloud.com", "me.com", "mac.com", "aol.com", "gmx.de",
    "gmx.net", "web.de", "t-online.de", "orange.fr", "free.fr", "laposte.net", "proton.me",
    "protonmail.com", "zoho.com", "mail.com", "yandex.ru", "qq.com", "163.com",
})


class ReplySource:
    IMAP = "imap"
    CARD = "card"


@dataclass(frozen=True)
class Match:
    customer_id: str | None = None
    invoice_id: str | None = None
    escalation_id: int | None = None
    matched_by: str | None = None


@dataclass(frozen=True)
class IngestResult:
    """What storing one reply did; `created` is False for a reply stored before."""

    reply_id: int
    created: bool
    status: str
    intent: str
    invoice_id: str | None
    customer_id: str | None
    matched_by: str | None
    injection_suspected: bool


@dataclass(frozen=True)
class PendingReply:
    """A reply waiting for a person's decision, as a card shows it."""

    reply_id: int
    invoice_id: str
    analysis: ReplyAnalysis
    source: str
    sender: str | None
    received_at: datetime


@dataclass(frozen=True)
class ReplySummary:
    """One line of the unmatched list finance works through."""

    reply_id: int
    received_at: datetime
    sender: str | None
    subject: str
    intent: str
    injection_suspected: bool


# --- matching -------------------------------------------------------------------------------


def _domain(address: str | None) -> str | None:
    if not address or "@" not in address:
        return None
    return address.rsplit("@", 1)[1].strip().lower() or None


def _outbox_escalation(session: Session, message_id: str) -> tuple[int | None, str] | None:
    """(escalation id, invoice id) of the reminder we sent with this Message-ID."""
    got = _OUR_MSGID.search(message_id)
    rows: Iterable[t.Outbox]
    if got is not None:
        rows = session.exec(select(t.Outbox).where(
            t.Outbox.key == f"email:escalation:{int(got.group(1))}"))
    else:  # a Message-ID not made by us, or by an older version: look for it in payloads
        rows = session.exec(select(t.Outbox).where(
            t.Outbox.kind == "email",
            col(t.Outbox.payload).contains(json.dumps(message_id), autoescape=True)).limit(5))
    for row in rows:
        try:
            payload = json.loads(row.payload)
        except json.JSONDecodeError:
            continue
        if payload.get("message_id") == message_id and payload.get("invoice_id"):
            esc = payload.get("escalation_id")
            return (int(esc) if esc is not None else None), str(payload["invoice_id"])
    return None


def _by_thread(session: Session, mail: InboundEmail) -> Match | None:
    refs: list[tuple[str, str]] = []
    if mail.in_reply_to:
        refs.append((mail.in_reply_to, "in-reply-to"))
    # The newest reference is last; a reply to a reply still threads under our reminder.
    refs += [(r, "references") for r in reversed(mail.references) if r != mail.in_reply_to]
    for ref, how in refs:
        found = _outbox_escalation(session, ref)
        if found is None:
            continue
        esc_id, invoice_id = found
        inv = session.get(t.Invoice, invoice_id)
        if inv is not None:
            return Match(inv.customer_id, inv.id, esc_id, how)
    return None


def _candidates(*texts: str) -> list[str]:
    """Tokens that could be an invoice number, in order of appearance, unique."""
    seen: dict[str, None] = {}
    for text in texts:
        for token in _TOKEN.findall(text):
            token = token.lstrip("#")
            if 3 <= len(token) <= 40 and any(ch.isdigit() for ch in token):
                seen.setdefault(token, None)
                if len(seen) >= MAX_CANDIDATES:
                    return list(seen)
    return list(seen)


def _by_number(session: Session, subject: str, body: str,
               customer_id: str | None) -> Match | None:
    tokens = _candidates(subject, body)
    if not tokens:
        return None
    query = select(t.Invoice).where(
        (col(t.Invoice.number).in_(tokens)) | (col(t.Invoice.id).in_(tokens)))
    if customer_id is not None:
        query = query.where(t.Invoice.customer_id == customer_id)
    found = list(session.exec(query))
    if not found:
        return None
    order = {tok: i for i, tok in enumerate(tokens)}

    def rank(inv: t.Invoice) -> tuple[int, int]:
        first = min(order.get(inv.number, len(order)), order.get(inv.id, len(order)))
        return (0 if inv.status == InvoiceStatus.OPEN.value else 1, first)

    best = min(found, key=rank)
    return Match(best.customer_id, best.id, None, "invoice-number")


def _customer_of_sender(session: Session, sender: str | None) -> str | None:
    """The customer whose AP contact wrote, else whose domain it is; None when unknown or
    ambiguous (two customers on one domain: better unmatched than wrong)."""
    if not sender:
        return None
    exact = list(session.exec(select(t.Customer.id).where(
        func.lower(col(t.Customer.ap_contact_email)) == sender.lower())))
    if len(exact) == 1:
        return exact[0]
    domain = _domain(sender)
    if domain is None or domain in PUBLIC_DOMAINS or exact:
        return None
    ids = set(session.exec(select(t.Customer.id).where(
        (func.lower(col(t.Customer.domain)) == domain)
        | (func.lower(col(t.Customer.ap_contact_email)).endswith(f"@{domain}")))))
    return ids.pop() if len(ids) == 1 else None


def _likely_invoice(session: Session, customer_id: str) -> str | None:
    """The invoice a customer most likely answers about: their only open one, else the one
    we last emailed them about, else the oldest open one."""
    open_ids = list(session.exec(select(t.Invoice.id).where(
        t.Invoice.customer_id == customer_id, t.Invoice.status == InvoiceStatus.OPEN.value)
        .order_by(col(t.Invoice.due_date), col(t.Invoice.id))))
    if len(open_ids) <= 1:
        return open_ids[0] if open_ids else None
    emailed = session.exec(select(t.Touch.invoice_id).where(
        t.Touch.customer_id == customer_id, t.Touch.channel == "email",
        col(t.Touch.invoice_id).in_(open_ids))
        .order_by(col(t.Touch.occurred_at).desc(), col(t.Touch.id).desc())).first()
    return emailed or open_ids[0]


def match_email(session: Session, mail: InboundEmail) -> Match:
    """Which invoice (and customer) an email is about; an empty Match when nothing fits."""
    thread = _by_thread(session, mail)
    if thread is not None:
        return thread
    customer_id = _customer_of_sender(session, mail.sender)
    by_number = _by_number(session, mail.subject, mail.body, customer_id)
    if by_number is not None:
        return by_number
    if customer_id is not None:
        return Match(customer_id, _likely_invoice(session, customer_id), None, "domain")
    return Match()


# --- storing --------------------------------------------------------------------------------


def _proposal(analysis: ReplyAnalysis) -> dict[str, Any]:
    def iso(d: date | None) -> str | None:
        return d.isoformat() if d else None

    return {
        "promise_date": iso(analysis.promise_date),
        "amount": str(analysis.amount) if analysis.amount is not None else None,
        "currency": analysis.currency,
        "reference": analysis.reference,
        "dispute_reason": analysis.dispute_reason,
        "return_date": iso(analysis.return_date),
        "language": analysis.language,
        "injection_reasons": list(analysis.injection_reasons),
    }


def analysis_of(row: t.CustomerReply) -> ReplyAnalysis:
    """The stored reading of a reply, as the classifier returned it."""
    data = json.loads(row.proposal or "{}")

    def day(key: str) -> date | None:
        raw = data.get(key)
        return date.fromisoformat(raw) if isinstance(raw, str) else None

    try:
        amount = Decimal(data["amount"]) if data.get("amount") is not None else None
    except (InvalidOperation, TypeError):
        amount = None
    if amount is not None and not (amount.is_finite() and abs(amount) < MAX_AMOUNT):
        amount = None  # a number no invoice has (a phone number, an IBAN): not an amount
    try:
        intent = Intent(row.intent)
    except ValueError:
        intent = Intent.OTHER
    return ReplyAnalysis(
        intent=intent, promise_date=day("promise_date"), amount=amount,
        currency=data.get("currency"), reference=data.get("reference"),
        dispute_reason=data.get("dispute_reason"), return_date=day("return_date"),
        injection_suspected=row.injection_suspected,
        injection_reasons=tuple(data.get("injection_reasons") or ()),
        confidence=row.confidence, evidence=row.evidence, language=data.get("language"),
        classifier=row.classifier,
    )


def _result(row: t.CustomerReply, *, created: bool) -> IngestResult:
    assert row.id is not None
    return IngestResult(row.id, created, row.status, row.intent, row.invoice_id,
                        row.customer_id, row.matched_by, row.injection_suspected)


def _existing(session: Session, message_id: str) -> t.CustomerReply | None:
    return session.exec(select(t.CustomerReply).where(
        t.CustomerReply.message_id == message_id)).first()


def _store(session: Session, *, source: str, message_id: str | None, mail_subject: str,
           body: str, sender: str | None, in_reply_to: str | None, received_at: datetime,
           received_on: date, match: Match, actor: Actor, now: datetime,
           llm: LlmClient | None = None, budget_usd: Decimal | str | None = None
           ) -> t.CustomerReply:
    """Classify (rules, checked by the model when one is configured), insert and audit one
    reply (the caller checked it is new)."""
    analysis = classify_reply(session, body, received=received_on,
                              customer_id=match.customer_id, llm=llm, budget_usd=budget_usd,
                              now=now)
    matched = match.invoice_id is not None or match.customer_id is not None
    row = t.CustomerReply(
        source=source, message_id=message_id, in_reply_to=in_reply_to, sender=sender,
        subject=mail_subject[:500], body=body, received_at=received_at,
        customer_id=match.customer_id, invoice_id=match.invoice_id,
        escalation_id=match.escalation_id, matched_by=match.matched_by,
        intent=analysis.intent.value, proposal=json.dumps(_proposal(analysis), sort_keys=True),
        confidence=float(analysis.confidence), evidence=analysis.evidence[:2000],
        injection_suspected=analysis.injection_suspected, classifier=analysis.classifier,
        status=(t.ReplyStatus.PROPOSED if matched else t.ReplyStatus.UNMATCHED).value,
        created_by=actor.id, created_at=now)
    session.add(row)
    session.flush()
    assert row.id is not None
    audit(session, actor=actor, action="reply.received", entity="customer_reply",
          entity_id=str(row.id), at=now, after={
              "source": source, "sender": sender, "status": row.status,
              "matched_by": match.matched_by, "invoice_id": match.invoice_id,
              "customer_id": match.customer_id, "intent": row.intent,
              "confidence": row.confidence,
              "injection_suspected": analysis.injection_suspected,
              "injection_reasons": list(analysis.injection_reasons)})
    if analysis.injection_suspected:
        # Its own event, so a security review finds every attempt with one query.
        audit(session, actor=actor, action="reply.injection_suspected",
              entity="customer_reply", entity_id=str(row.id), at=now, after={
                  "sender": sender, "invoice_id": match.invoice_id,
                  "reasons": list(analysis.injection_reasons)})
    return row


def _timezone_of(session: Session, customer_id: str | None, default: str) -> str:
    cust = session.get(t.Customer, customer_id) if customer_id else None
    return cust.timezone if cust is not None and cust.timezone else default


def ingest_email(session: Session, mail: InboundEmail, *, now: datetime,
                 default_timezone: str = "UTC", llm: LlmClient | None = None,
                 budget_usd: Decimal | str | None = None) -> IngestResult:
    """Store one inbound email as a customer reply, once per Message-ID; change nothing else.

    `default_timezone` (the company's) dates a reply whose customer is unknown.
    """
    message_id = mail.message_id or mail.fingerprint()
    before = _existing(session, message_id)
    if before is not None:
        return _result(before, created=False)
    match = match_email(session, mail)
    # A missing or future Date (a wrong clock) is replaced by the time we read the mail.
    received_at = mail.date if mail.date is not None and mail.date <= now + timedelta(
        days=1) else now
    tz = _timezone_of(session, match.customer_id, default_timezone)
    row = _store(session, source=ReplySource.IMAP, message_id=message_id,
                 mail_subject=mail.subject, body=mail.body, sender=mail.sender,
                 in_reply_to=mail.in_reply_to, received_at=received_at,
                 received_on=local_date(received_at, tz), match=match, actor=BOT, now=now,
                 llm=llm, budget_usd=budget_usd)
    return _result(row, created=True)


def _card_message_id(key: str) -> str:
    """A stable Message-ID for a pasted reply: a retried submission is stored once."""
    return f"<card.{hashlib.sha256(key.encode()).hexdigest()[:32]}@dunning.invalid>"


def log_card_reply(session: Session, escalation_id: int, text: str, *, actor: Actor,
                   now: datetime, received: date | None = None,
                   key: str | None = None, llm: LlmClient | None = None,
                   budget_usd: Decimal | str | None = None) -> IngestResult:
    """A reply a person pasted on a card: about that card's invoice, received on `received`
    (the customer's today when None). `key` (e.g. the modal's trigger id) makes a retried
    submission store nothing twice. The caller authorizes the person."""
    text = text.strip()
    if not text:
        raise ServiceError("paste the customer's reply first")
    if len(text) > MAX_TEXT:
        raise ServiceError(f"the reply is too long ({len(text):,} characters; at most "
                           f"{MAX_TEXT:,})")
    esc = session.get(t.Escalation, escalation_id)
    if esc is None:
        raise NotFoundError(f"no escalation #{escalation_id}")
    inv = session.get(t.Invoice, esc.invoice_id)
    assert inv is not None
    cust = session.get(t.Customer, inv.customer_id)
    assert cust is not None
    message_id = _card_message_id(key) if key else None
    if message_id is not None:
        before = _existing(session, message_id)
        if before is not None:
            return _result(before, created=False)
    today = customer_today(cust.timezone, now)
    received_on = received or today
    if received_on > today:
        raise ServiceError(f"the reply cannot have been received after today ({today} for "
                           f"{cust.name})")
    received_at = now if received_on == today else datetime.combine(
        received_on, now.astimezone(zone(cust.timezone)).timetz()).astimezone(UTC)
    row = _store(session, source=ReplySource.CARD, message_id=message_id, mail_subject="",
                 body=text, sender=None, in_reply_to=None, received_at=received_at,
                 received_on=received_on,
                 match=Match(cust.id, inv.id, escalation_id, "card"), actor=actor, now=now,
                 llm=llm, budget_usd=budget_usd)
    return _result(row, created=True)


# --- reading --------------------------------------------------------------------------------


def pending_replies(session: Session, invoice_ids: Collection[str], *,
                    most: int = CARD_PROPOSALS) -> dict[str, list[PendingReply]]:
    """Proposals waiting for a decision per invoice, newest first (at most `most` each)."""
    out: dict[str, list[PendingReply]] = {}
    if not invoice_ids:
        return out
    rows = session.exec(select(t.CustomerReply).where(
        col(t.CustomerReply.invoice_id).in_(sorted(set(invoice_ids))),
        t.CustomerReply.status == t.ReplyStatus.PROPOSED.value)
        .order_by(col(t.CustomerReply.received_at).desc(), col(t.CustomerReply.id).desc()))
    for row in rows:
        assert row.id is not None and row.invoice_id is not None
        items = out.setdefault(row.invoice_id, [])
        if len(items) < most:
            items.append(PendingReply(row.id, row.invoice_id, analysis_of(row), row.source,
                                      row.sender, row.received_at))
    return out


def unmatched_replies(session: Session, *, limit: int = 50) -> list[ReplySummary]:
    """Replies no invoice or customer was found for, oldest first: finance's to-do list."""
    return [ReplySummary(r.id, r.received_at, r.sender, r.subject, r.intent,
                         r.injection_suspected)
            for r in session.exec(select(t.CustomerReply).where(
                t.CustomerReply.status == t.ReplyStatus.UNMATCHED.value)
                .order_by(col(t.CustomerReply.received_at), col(t.CustomerReply.id))
                .limit(limit)) if r.id is not None]


def card_for_invoice(session: Session, invoice_id: str) -> int | None:
    """The escalation whose Slack message shows this invoice: its open card, else the most
    recent card posted for it (a reminder that was sent)."""
    rows = list(session.exec(select(t.Escalation).where(
        t.Escalation.invoice_id == invoice_id, col(t.Escalation.slack_ts).is_not(None))
        .order_by(col(t.Escalation.id).desc())))
    for row in rows:
        if row.state in _OPEN_CARD_STATES:
            return row.id
    return rows[0].id if rows else None


# --- deciding -------------------------------------------------------------------------------


def _reply(session: Session, reply_id: int) -> t.CustomerReply:
    row = session.get(t.CustomerReply, reply_id)
    if row is None:
        raise NotFoundError(f"no customer reply #{reply_id}")
    return row


def _authorize(session: Session, policy: Policy, row: t.CustomerReply, *, roles: Roles,
               person: Person, now: datetime) -> None:
    """The card's rule (`services.cards.may_act`): the account's owner or CSM, the card's
    owner, finance or a manager; an unmatched reply is finance's or a manager's."""
    if person.is_in(roles.finance) or person.is_in(roles.managers):
        return
    allowed = False
    esc_id = card_for_invoice(session, row.invoice_id) if row.invoice_id else None
    if esc_id is not None:
        card = load_card(session, policy, esc_id, now.date())
        allowed = may_act(roles, person, card, finance_only=False)
    elif row.customer_id is not None and person.email is not None:
        cust = session.get(t.Customer, row.customer_id)
        owners = {x.lower() for x in (cust.owner_email, cust.csm_email) if x} if cust else set()
        allowed = person.email.lower() in owners
    if not allowed:
        raise NotAllowedError("Only the account's owner or CSM, finance or a manager can "
                              "decide on this reply. Nothing was changed.")


def _decide(session: Session, row: t.CustomerReply, *, to: t.ReplyStatus, person: Person,
            now: datetime, allowed_from: tuple[t.ReplyStatus, ...]) -> None:
    """Move the reply to `to` exactly once; a second click gets AlreadyHandledError."""
    assert row.id is not None
    result = session.exec(update(t.CustomerReply).where(
        col(t.CustomerReply.id) == row.id,
        col(t.CustomerReply.status).in_([s.value for s in allowed_from]),
    ).values(status=to.value, handled_by=person.user_id, handled_at=now))
    if result.rowcount != 1:
        session.rollback()
        current = _reply(session, row.id)
        session.refresh(current)
        who = f"<@{current.handled_by}>" if current.handled_by else "someone"
        when = current.handled_at.strftime("%Y-%m-%d %H:%M UTC") if current.handled_at else ""
        raise AlreadyHandledError(f"Already handled: this reply was {current.status} by "
                                  f"{who} {when}".strip())


def _amount_for(analysis: ReplyAnalysis, inv: t.Invoice, override: Decimal | None
                ) -> Decimal | None:
    """The amount to apply: the person's, else the reply's when it is in the invoice's
    currency and not more than is due (else none: the whole amount due)."""
    if override is not None:
        return override
    amount = analysis.amount
    if amount is None or amount <= 0:
        return None
    if analysis.currency and analysis.currency.upper() != inv.currency.upper():
        return None
    due = inv.amount_minor - inv.amount_paid_minor
    return amount if to_minor(amount, inv.currency) <= due else None


def _quote(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _set_card_aside(session: Session, policy: Policy, invoice_id: str, *, roles: Roles,
                    person: Person, note: str, now: datetime) -> None:
    """A promise or a dispute answers the invoice's open card: nothing is sent for it."""
    esc_id = card_for_invoice(session, invoice_id)
    if esc_id is None:
        return
    card = load_card(session, policy, esc_id, now.date())
    if card.escalation.state.is_open:
        set_aside(session, card, roles=roles, person=person, now=now, note=note)


def confirm_reply(session: Session, policy: Policy, reply_id: int, *, actor: Person,
                  roles: Roles, now: datetime, promise_date: date | None = None,
                  amount: Decimal | None = None, note: str = "") -> Outcome:
    """Apply the reply's proposal now, through the ledger's own services, exactly once.

    promise -> log_promise; dispute -> open_dispute; already paid -> a touch noting the
    claimed payment and reference (money moves only when the payment arrives);
    out of office -> a touch with the return date; anything else -> a touch. A refusal
    from the service (a past date, an amount over what is due) changes nothing.
    """
    row = _reply(session, reply_id)
    if row.status == t.ReplyStatus.UNMATCHED.value or row.invoice_id is None:
        raise ServiceError("this reply is not matched to an invoice: log it on the "
                           "invoice's card, or dismiss it")
    _authorize(session, policy, row, roles=roles, person=actor, now=now)
    _decide(session, row, to=t.ReplyStatus.CONFIRMED, person=actor, now=now,
            allowed_from=(t.ReplyStatus.PROPOSED,))
    inv = session.get(t.Invoice, row.invoice_id)
    assert inv is not None
    analysis = analysis_of(row)
    try:
        outcome = _apply(session, policy, row, inv, analysis, actor=actor, roles=roles,
                         now=now, promise_date=promise_date, amount=amount, note=note)
    except ServiceError:
        # Undo the status change too, even if the caller goes on to commit: the reply
        # waits for a person again, exactly as before the click.
        session.rollback()
        raise
    audit(session, actor=actor.actor, action="reply.confirmed", entity="customer_reply",
          entity_id=str(row.id), at=now, before={"status": t.ReplyStatus.PROPOSED.value},
          after={"status": t.ReplyStatus.CONFIRMED.value, "intent": analysis.intent.value,
                 "invoice_id": inv.id, "applied": outcome.message})
    return outcome


def _apply(session: Session, policy: Policy, row: t.CustomerReply, inv: t.Invoice,
           analysis: ReplyAnalysis, *, actor: Person, roles: Roles, now: datetime,
           promise_date: date | None, amount: Decimal | None, note: str) -> Outcome:
    """The proposal through the ledger's services (which refuse what they must)."""
    who = actor.actor
    origin = f"customer reply #{row.id}" + (f" from {row.sender}" if row.sender else "")
    channel = "email" if row.source == ReplySource.IMAP else "other"
    extra = f" {note.strip()}" if note.strip() else ""
    intent = analysis.intent
    outcome: Outcome
    if intent is Intent.PROMISE_TO_PAY:
        day = promise_date or analysis.promise_date
        if day is None:
            raise ServiceError("the reply names no date: use *Promise to pay* on the card "
                               "and pick the date")
        outcome = ledger.log_promise(
            session, policy, invoice=inv.id, promised_date=day,
            amount=_amount_for(analysis, inv, amount), actor=who, now=now,
            note=f"{origin}: “{_quote(analysis.evidence)}”{extra}")
        _set_card_aside(session, policy, inv.id, roles=roles, person=actor, now=now,
                        note=f"promise to pay by {day} (customer reply)")
    elif intent is Intent.DISPUTE:
        reason = analysis.dispute_reason or _quote(analysis.evidence, 200) or \
            "the customer disputes the invoice"
        outcome = ledger.open_dispute(
            session, policy, invoice=inv.id, reason=reason,
            amount=_amount_for(analysis, inv, amount), actor=who, now=now,
            note=f"{origin}{extra}")
        _set_card_aside(session, policy, inv.id, roles=roles, person=actor, now=now,
                        note="disputed (customer reply)")
    else:
        outcome = ledger.record_touch(session, policy, invoice=inv.id, channel=channel,
                                      summary=_touch_summary(analysis, inv) + extra,
                                      actor=who, now=now)
    return outcome


def _touch_summary(analysis: ReplyAnalysis, inv: t.Invoice) -> str:
    """What a non-ledger reply leaves on the invoice's history."""
    evidence = f": “{_quote(analysis.evidence, 200)}”" if analysis.evidence else ""
    if analysis.intent is Intent.ALREADY_PAID:
        amount = (f" {format_money(analysis.amount, analysis.currency or inv.currency)}"
                  if analysis.amount is not None else "")
        ref = f" (reference {_quote(analysis.reference, 80)})" if analysis.reference else ""
        return (f"Customer says it already paid{amount}{ref}; not recorded as a payment "
                f"until it arrives{evidence}")
    if analysis.intent is Intent.OUT_OF_OFFICE:
        back = f" until {analysis.return_date.isoformat()}" if analysis.return_date else ""
        return f"Customer contact out of office{back}{evidence}"
    words = {
        Intent.RESEND_INVOICE: "Customer asks for the invoice again",
        Intent.BILLING_UPDATE: "Customer sent a billing or contact update",
        Intent.PAYMENT_PLAN: "Customer asks for a payment plan",
    }.get(analysis.intent, "Customer replied")
    return f"{words}{evidence}"


def dismiss_reply(session: Session, policy: Policy, reply_id: int, *, actor: Person,
                  roles: Roles, now: datetime, reason: str = "") -> Outcome:
    """The proposal is wrong or not worth acting on: nothing is applied; audited."""
    row = _reply(session, reply_id)
    _authorize(session, policy, row, roles=roles, person=actor, now=now)
    before = row.status
    _decide(session, row, to=t.ReplyStatus.DISMISSED, person=actor, now=now,
            allowed_from=(t.ReplyStatus.PROPOSED, t.ReplyStatus.UNMATCHED))
    audit(session, actor=actor.actor, action="reply.dismissed", entity="customer_reply",
          entity_id=str(row.id), at=now, before={"status": before},
          after={"status": t.ReplyStatus.DISMISSED.value, "reason": reason.strip()[:500]})
    return Outcome(f"Customer reply #{row.id} dismissed; nothing was changed.")


# --- polling --------------------------------------------------------------------------------


@dataclass
class PollResult:
    """What one poll did. `invoices`: invoices with a new proposal, whose cards to update."""

    uidvalidity: int | None = None
    last_uid: int = 0
    stored: list[int] = field(default_factory=list)
    duplicates: int = 0
    unmatched: list[int] = field(default_factory=list)
    injection_suspected: list[int] = field(default_factory=list)
    invoices: list[str] = field(default_factory=list)
    restarted: bool = False  # UIDVALIDITY changed: the folder was read again from the start
    more: bool = False  # the limit was reached; the next poll continues


def _read_cursor(session: Session) -> tuple[int, int] | None:
    row = session.get(t.SyncCursor, CURSOR_SOURCE)
    if row is None:
        return None
    try:
        data = json.loads(row.cursor)
        return int(data["uidvalidity"]), int(data["last_uid"])
    except (ValueError, KeyError, TypeError):
        log.warning("unreadable IMAP cursor %r: reading the folder from the start", row.cursor)
        return None


def _write_cursor(session: Session, uidvalidity: int, last_uid: int, now: datetime) -> None:
    value = json.dumps({"uidvalidity": uidvalidity, "last_uid": last_uid})
    row = session.get(t.SyncCursor, CURSOR_SOURCE)
    if row is None:
        session.add(t.SyncCursor(source=CURSOR_SOURCE, cursor=value, updated_at=now))
    else:
        row.cursor, row.updated_at = value, now
        session.add(row)


def _store_unreadable(session: Session, mail: InboundEmail, *, now: datetime,
                      error: str) -> t.CustomerReply:
    """A message the reply rules failed on is still kept (unmatched), never lost or retried
    forever: the poll moves on and finance sees it in the unmatched list."""
    message_id = mail.message_id or mail.fingerprint()
    before = _existing(session, message_id)
    if before is not None:
        return before
    row = t.CustomerReply(
        source=ReplySource.IMAP, message_id=message_id, in_reply_to=mail.in_reply_to,
        sender=mail.sender, subject=mail.subject[:500], body=mail.body,
        received_at=mail.date or now, status=t.ReplyStatus.UNMATCHED.value,
        evidence="", created_by=BOT.id, created_at=now)
    session.add(row)
    session.flush()
    audit(session, actor=BOT, action="reply.received", entity="customer_reply",
          entity_id=str(row.id), at=now, after={
              "source": ReplySource.IMAP, "sender": mail.sender, "status": row.status,
              "error": error[:300]})
    return row


def poll_mailbox(engine: Engine, poller: MailSource, *, now: datetime,
                 default_timezone: str = "UTC", limit: int = 200,
                 llm: LlmClient | None = None,
                 budget_usd: Decimal | str | None = None) -> PollResult:
    """Read new mail since the stored cursor and store each message as a customer reply.

    Each message and the cursor after it are committed together, one message per
    transaction: a crash loses nothing (the next poll resumes after the last stored UID)
    and stores nothing twice (and the Message-ID is unique besides). When the folder's
    UIDVALIDITY changed, its UIDs mean something else now: the folder is read again from
    the start and what was stored before is recognised by Message-ID.

    Raises ConnectorError when the mailbox cannot be read (the next poll tries again).
    For the scheduler: call every few minutes; `handlers.common.refresh_reply_cards`
    then shows the new proposals on the invoices' cards.
    """
    result = PollResult()
    with session_scope(engine) as s:
        cursor = _read_cursor(s)
    with poller.open() as box:
        result.uidvalidity = box.uidvalidity
        last = 0
        if cursor is not None:
            if cursor[0] == box.uidvalidity:
                last = cursor[1]
            else:
                result.restarted = True
                log.warning("IMAP UIDVALIDITY changed (%s -> %s): reading the folder again",
                            cursor[0], box.uidvalidity)
        result.last_uid = last
        uids = box.uids_after(last)
        result.more = len(uids) > limit
        for uid in uids[:limit]:
            mail = box.fetch(uid)
            _poll_one(engine, mail, uid=uid, uidvalidity=box.uidvalidity, now=now,
                      default_timezone=default_timezone, result=result, llm=llm,
                      budget_usd=budget_usd)
            result.last_uid = uid
    return result


def _poll_one(engine: Engine, mail: InboundEmail | None, *, uid: int, uidvalidity: int,
              now: datetime, default_timezone: str, result: PollResult,
              llm: LlmClient | None = None, budget_usd: Decimal | str | None = None) -> None:
    try:
        with session_scope(engine) as s:
            outcome = ingest_email(s, mail, now=now, default_timezone=default_timezone,
                                   llm=llm, budget_usd=budget_usd) \
                if mail is not None else None
            _write_cursor(s, uidvalidity, uid, now)
    except SQLAlchemyError:
        raise  # the database is the problem: stop, the next poll resumes here
    except Exception as exc:  # one bad message must not block the mailbox
        assert mail is not None
        log.exception("reply UID %s could not be understood; kept as unmatched", uid)
        with session_scope(engine) as s:
            row = _store_unreadable(s, mail, now=now, error=f"{type(exc).__name__}: {exc}")
            _write_cursor(s, uidvalidity, uid, now)
        assert row.id is not None
        result.stored.append(row.id)
        result.unmatched.append(row.id)
        return
    if outcome is None:
        return
    if not outcome.created:
        result.duplicates += 1
        return
    result.stored.append(outcome.reply_id)
    if outcome.status == t.ReplyStatus.UNMATCHED.value:
        result.unmatched.append(outcome.reply_id)
    if outcome.injection_suspected:
        result.injection_suspected.append(outcome.reply_id)
    if outcome.invoice_id and outcome.invoice_id not in result.invoices:
        result.invoices.append(outcome.invoice_id)
