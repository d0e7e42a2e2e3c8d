"""Approve -> outbox -> SMTP (a real aiosmtpd server on loopback) -> recorded, exactly once."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import Engine, update
from sqlmodel import col, select

from connectors.email import SmtpSender
from dunning.policy import DEFAULT_POLICY
from services.cards import (
    AlreadyHandledError,
    Person,
    Roles,
    approve_draft,
    ensure_draft,
    load_card,
)
from services.common import Actor
from services.delivery import deliver_outbox
from services.planning import run_cycle
from store import tables as t
from store.engine import session_scope
from tests.integration.test_services import NOW, TODAY, import_samples

P = DEFAULT_POLICY
FINANCE = Person("U_FIN", "fin@example.com")
ROLES = Roles(finance=frozenset({"U_FIN"}))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Capture:
    def __init__(self) -> None:
        self.messages: list[Any] = []
        self.refuse: str | None = None

    async def handle_RCPT(self, server: Any, session: Any, envelope: Any, address: str,
                          rcpt_options: list[str]) -> str:
        if self.refuse:
            return self.refuse
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append(message_from_bytes(envelope.content))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Capture, int]]:
    handler = Capture()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield handler, port
    finally:
        controller.stop()


def approved(db: Engine) -> str:
    """Import the sample, run the cycle, approve Tailspin's nudge; the outbox key."""
    import_samples(db)
    with session_scope(db) as s:
        result = run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
        esc = next(p for p in result.created if p.state.invoice_id == "INV-5003")
        eid = s.exec(select(t.Escalation.id).where(
            t.Escalation.invoice_id == "INV-5003", t.Escalation.step == esc.action.step)).one()
        assert eid is not None
        ensure_draft(s, eid, sender_name="Accounts Receivable", now=NOW)
        card = load_card(s, P, eid, TODAY)
        assert card.draft is not None and "2026-0313" in card.draft.subject
        return approve_draft(s, card, roles=ROLES, person=FINANCE,
                             subject=card.draft.subject, body=card.draft.body + "\nThanks!",
                             sender="ar@vendor.example", now=NOW)


def test_approved_email_is_sent_once_with_a_stable_message_id(
        db: Engine, smtp: tuple[Capture, int]) -> None:
    capture, port = smtp
    key = approved(db)
    sender = SmtpSender("127.0.0.1", port)
    first = deliver_outbox(db, sender, now=NOW)
    second = deliver_outbox(db, sender, now=NOW + timedelta(minutes=1))
    assert first.sent == [key] and second.sent == []
    [msg] = capture.messages
    assert msg["To"] == "payables@tailspin.example"
    assert msg["Message-ID"].startswith("<") and "esc" in msg["Message-ID"]
    assert "Thanks!" in msg.get_payload()
    with session_scope(db) as s:
        item = s.exec(select(t.Outbox).where(t.Outbox.key == key)).one()
        esc = s.exec(select(t.Escalation).where(t.Escalation.invoice_id == "INV-5003")).one()
        touches = list(s.exec(select(t.Touch).where(t.Touch.invoice_id == "INV-5003")))
    assert item.status == "sent" and esc.state == "sent"
    assert len(touches) == 1 and touches[0].channel == "email"


def test_a_crash_between_send_and_record_goes_to_a_person_not_a_resend(
        db: Engine, smtp: tuple[Capture, int]) -> None:
    capture, port = smtp
    key = approved(db)
    with session_scope(db) as s:  # as a worker killed right after claiming the item
        s.exec(update(t.Outbox).where(col(t.Outbox.key) == key)
               .values(status="sending", available_at=NOW - timedelta(hours=1)))
    result = deliver_outbox(db, SmtpSender("127.0.0.1", port), now=NOW)
    assert result.needs_human == [key] and result.sent == []
    assert capture.messages == []


def test_server_down_is_retried_later_and_a_refusal_fails_for_a_person(
        db: Engine, smtp: tuple[Capture, int]) -> None:
    capture, port = smtp
    key = approved(db)
    down = deliver_outbox(db, SmtpSender("127.0.0.1", free_port(), timeout=2), now=NOW)
    assert down.retried == [key]
    with session_scope(db) as s:
        item = s.exec(select(t.Outbox).where(t.Outbox.key == key)).one()
        assert item.status == "pending" and item.available_at > NOW
        assert "Connection" in (item.last_error or "") or "refused" in (item.last_error or "")
    capture.refuse = "550 5.1.1 mailbox unavailable"
    later = NOW + timedelta(hours=2)
    refused = deliver_outbox(db, SmtpSender("127.0.0.1", port), now=later)
    assert refused.failed == [key] and capture.messages == []
    with session_scope(db) as s:
        assert s.exec(select(t.Outbox.status).where(t.Outbox.key == key)).one() == "failed"


def test_second_approval_of_the_same_card_changes_nothing(db: Engine) -> None:
    approved(db)
    with session_scope(db) as s:
        eid = s.exec(select(t.Escalation.id).where(t.Escalation.invoice_id == "INV-5003")).one()
        assert eid is not None
        card = load_card(s, P, eid, TODAY)
        with pytest.raises(AlreadyHandledError, match="approved"):
            approve_draft(s, card, roles=ROLES, person=FINANCE, subject="x", body="y",
                          sender="ar@vendor.example", now=datetime.now(UTC))
    with session_scope(db) as s:
        assert len(list(s.exec(select(t.Outbox)))) == 1
