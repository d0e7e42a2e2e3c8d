"""The outbox: customer-facing effects recorded in the same transaction as the decision,
delivered later by the worker exactly once per key.

States: pending -> sending -> sent. A crash after "sending" leaves the item there; the
next delivery run moves stale "sending" items to needs_human instead of sending again,
because the message may already have left (an SMTP server gives no way to ask).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from services.common import Actor, audit
from store import tables as t
from store._sql import insert_if_absent
from store.engine import session_scope


def enqueue(session: Session, *, key: str, kind: str, payload: dict[str, Any],
            now: datetime) -> bool:
    """Queue once per key; returns False when the key was already queued."""
    before = session.exec(select(t.Outbox.id).where(t.Outbox.key == key)).first()
    if before is not None:
        return False
    insert_if_absent(session, t.Outbox, {
        "key": key, "kind": kind, "payload": json.dumps(payload, sort_keys=True),
        "status": "pending", "attempts": 0, "available_at": now, "created_at": now,
    }, "key")
    return True


def backoff(attempts: int) -> timedelta:
    """How long a failed item waits before its next attempt: 30 s, doubling, at most 1 h."""
    return timedelta(seconds=min(3600, 30 * 2 ** max(0, attempts - 1)))


def record_failure(engine: Engine, item_id: int, exc: Exception, *, permanent: bool,
                   actor: Actor, action: str, now: datetime,
                   details: dict[str, Any] | None = None) -> None:
    """A failed attempt: back to `pending` after the backoff, or `failed` for good (audited
    as `action`, with the error and `details`)."""
    with session_scope(engine) as s:
        row = s.get(t.Outbox, item_id)
        assert row is not None
        row.status = "failed" if permanent else "pending"
        row.last_error = str(exc)[:1000]
        row.available_at = now + backoff(row.attempts)
        s.add(row)
        if permanent:
            audit(s, actor=actor, action=action, entity="outbox", entity_id=row.key, at=now,
                  after={"error": row.last_error, **(details or {})})


@dataclass(frozen=True)
class Claimed:
    kind: str
    key: str
    attempts: int  # including this one
    payload: dict[str, Any]


def claim(engine: Engine, item_id: int, *, now: datetime) -> Claimed | None:
    """pending -> sending by a conditional UPDATE in its own transaction: of two workers
    only one gets the item (None for the other)."""
    with session_scope(engine) as s:
        claimed = s.exec(update(t.Outbox).where(
            col(t.Outbox.id) == item_id, col(t.Outbox.status) == "pending",
        ).values(status="sending", attempts=t.Outbox.attempts + 1, available_at=now))
        if claimed.rowcount != 1:
            return None
        item = s.get(t.Outbox, item_id)
        assert item is not None
        return Claimed(item.kind, item.key, item.attempts, json.loads(item.payload))


def deliver_calls(engine: Engine, *, kinds: Sequence[str],
                  perform: Callable[[str, str, dict[str, Any]], str], actor: Actor,
                  now: datetime, limit: int = 50, max_attempts: int = 5) -> dict[str, int]:
    """Deliver pending items of `kinds` by calling `perform(kind, key, payload)` (returns a
    reference, audited), each once: claim (pending -> sending, conditional UPDATE), call,
    record. A crash mid-call leaves the item `sending`, which `deliver_outbox` later moves
    to needs_human instead of calling again. Refusals (AuthError, DataError) and items out
    of attempts end `failed`; other ConnectorErrors go back to `pending` with backoff."""
    from connectors.errors import AuthError, ConnectorError, DataError

    counts = {"sent": 0, "retried": 0, "failed": 0}
    with session_scope(engine) as s:
        ids = [i for i in s.exec(select(t.Outbox.id).where(
            col(t.Outbox.kind).in_(list(kinds)), t.Outbox.status == "pending",
            col(t.Outbox.available_at) <= now).order_by(col(t.Outbox.id)).limit(limit))
            if i is not None]
    for item_id in ids:
        got = claim(engine, item_id, now=now)
        if got is None:
            continue  # another worker took it
        kind, key, attempts, payload = got.kind, got.key, got.attempts, got.payload
        try:
            ref = perform(kind, key, payload)
        except ConnectorError as exc:
            permanent = isinstance(exc, (AuthError, DataError)) or attempts >= max_attempts
            record_failure(engine, item_id, exc, permanent=permanent, actor=actor,
                           action=f"{kind}.failed", now=now)
            counts["failed" if permanent else "retried"] += 1
            continue
        with session_scope(engine) as s:
            row = s.get(t.Outbox, item_id)
            assert row is not None
            row.status, row.sent_at, row.last_error = "sent", now, None
            s.add(row)
            audit(s, actor=actor, action=f"{kind}.done", entity="outbox", entity_id=key,
                  at=now, after={"ref": ref})
        counts["sent"] += 1
    return counts
