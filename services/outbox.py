"""The outbox: customer-facing effects recorded in the same transaction as the decision,
delivered later by the worker exactly once per key.

States: pending -> sending -> sent. A crash after "sending" leaves the item there; the
next delivery run moves stale "sending" items to needs_human instead of sending again,
because the message may already have left (an SMTP server gives no way to ask).
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlmodel import Session, select

from store import tables as t
from store._sql import insert_if_absent


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
