"""Deliver the outbox: each approved email exactly once, or handed to a person.

Per item: claim it (pending -> sending, a conditional UPDATE, so two workers never take
the same item), send it, record it (sending -> sent, the escalation -> sent, a touch, an
audit event). A crash between send and record leaves the item in `sending`; the next run
moves such stale items to `needs_human` rather than sending again, since the message may
already have left. Transient failures go back to `pending` with backoff; a refusal (bad
address, login refused) or too many attempts ends in `failed`, for a person to fix.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import col, select

from connectors.email import EmailSender, build_message
from connectors.errors import AuthError, ConnectorError, DataError
from dunning.model import EscalationState
from services.common import Actor, audit
from services.outbox import claim, record_failure
from services.sync import queue_crm_note, queue_quickbooks_send
from store import tables as t
from store.engine import session_scope

log = logging.getLogger(__name__)
MAX_ATTEMPTS = 5
STALE_SENDING = timedelta(minutes=10)
BOT = Actor("outbox")


@dataclass
class DeliveryResult:
    sent: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    needs_human: list[str] = field(default_factory=list)


def deliver_outbox(engine: Engine, sender: EmailSender, *, now: datetime,
                   limit: int = 50, quickbooks_send: bool = False) -> DeliveryResult:
    """Send pending emails; with `quickbooks_send`, each reminder of a QuickBooks invoice
    also queues `Invoice.send` (QUICKBOOKS_SEND_INVOICES), in the same transaction."""
    result = DeliveryResult()
    with session_scope(engine) as s:
        stale = list(s.exec(select(t.Outbox).where(
            t.Outbox.status == "sending", col(t.Outbox.available_at) < now - STALE_SENDING)))
        for item in stale:
            item.status = "needs_human"
            item.last_error = ("interrupted while sending: it may or may not have left; check "
                               "the mail server's log before sending again")
            s.add(item)
            audit(s, actor=BOT, action="outbox.needs_human", entity="outbox", entity_id=item.key,
                  at=now, before={"status": "sending"}, after={"status": "needs_human"})
            result.needs_human.append(item.key)
    with session_scope(engine) as s:
        ids = [i for i in s.exec(select(t.Outbox.id).where(
            t.Outbox.status == "pending", t.Outbox.kind == "email",
            col(t.Outbox.available_at) <= now).order_by(col(t.Outbox.id)).limit(limit))
            if i is not None]
    for item_id in ids:
        _deliver_one(engine, sender, item_id, now=now, result=result,
                     quickbooks_send=quickbooks_send)
    return result


def _deliver_one(engine: Engine, sender: EmailSender, item_id: int, *, now: datetime,
                 result: DeliveryResult, quickbooks_send: bool = False) -> None:
    got = claim(engine, item_id, now=now)
    if got is None:
        return  # another worker took it
    key, attempts, payload = got.key, got.attempts, got.payload
    try:
        sender.send(build_message(payload))
    except ConnectorError as exc:
        permanent = isinstance(exc, (DataError, AuthError)) or attempts >= MAX_ATTEMPTS
        record_failure(engine, item_id, exc, permanent=permanent, actor=BOT,
                       action="outbox.failed", now=now, details={"attempts": attempts})
        (result.failed if permanent else result.retried).append(key)
        log.warning("outbox %s: %s (%s)", key, exc, "failed" if permanent else "will retry")
        return
    with session_scope(engine) as s:
        row = s.get(t.Outbox, item_id)
        assert row is not None
        row.status, row.sent_at, row.last_error = "sent", now, None
        s.add(row)
        esc_id = payload.get("escalation_id")
        if esc_id is not None:
            s.exec(update(t.Escalation).where(
                col(t.Escalation.id) == int(esc_id),
                col(t.Escalation.state) == EscalationState.APPROVED.value,
            ).values(state=EscalationState.SENT.value))
            inv = s.get(t.Invoice, payload["invoice_id"])
            if inv is not None:
                s.add(t.Touch(invoice_id=inv.id, customer_id=inv.customer_id, channel="email",
                              step=None, occurred_at=now,
                              summary=f"email sent: {payload['subject']}"[:500], actor="outbox"))
                # The sent reminder goes on the CRM company's timeline (when linked).
                queue_crm_note(s, invoice_id=inv.id, subject=str(payload["subject"]),
                               sent_key=key, now=now)
                if quickbooks_send and payload.get("to"):
                    queue_quickbooks_send(s, invoice_id=inv.id, to=str(payload["to"][0]),
                                          sent_key=key, now=now)
        audit(s, actor=BOT, action="outbox.sent", entity="outbox", entity_id=key, at=now,
              after={"to": payload["to"], "message_id": payload["message_id"]})
    result.sent.append(key)
