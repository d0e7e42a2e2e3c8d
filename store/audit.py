"""Append-only audit log, each event chained to the one before by a SHA-256 hash.

Why a chain: finance must be able to show that nobody quietly edited or removed what the
bot and its users did. Each event's hash covers its content and the previous event's hash,
so changing or deleting any event breaks every link after it; `verify_chain` finds the
first broken one. The hash of the newest event is also kept in `meta` ("audit_head"), so
deleting the newest events is detected too.

Appends are serialized on the `meta` row "audit_head": `SELECT ... FOR UPDATE` on
PostgreSQL; on SQLite the append first writes that row, which takes the database write
lock before the head is read (a plain SELECT would let two sessions read the same head).
"""

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import event as sa_event
from sqlalchemy import insert, update
from sqlmodel import Session, col, select

from store._sql import insert_if_absent
from store.tables import AuditEvent, Meta

GENESIS_HASH = "0" * 64  # prev_hash of the first event
AUDIT_HEAD_KEY = "audit_head"


def canonical_json(value: Any) -> str:
    """The one JSON spelling that is hashed: sorted keys, no spaces, str() for the rest."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _as_utc(at: datetime) -> datetime:
    if at.tzinfo is None or at.utcoffset() is None:
        raise ValueError(f"audit timestamps must be timezone-aware, got naive {at.isoformat()}")
    return at.astimezone(UTC)


def event_hash(
    *,
    prev_hash: str,
    at: datetime,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> str:
    """SHA-256 (hex) of the canonical JSON of an event's content and its predecessor's hash."""
    payload = {
        "prev_hash": prev_hash,
        "at": _as_utc(at).isoformat(),
        "actor": actor,
        "action": action,
        "entity_type": entity_type,
        "entity_id": entity_id,
        "before": before,
        "after": after,
    }
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


def _normalized(value: dict[str, Any] | None) -> dict[str, Any] | None:
    """The dict as it will read back from storage (dates and Decimals become strings).

    Hashing this, not the caller's objects, makes the hash at append time equal the hash
    recomputed from the stored text.
    """
    if value is None:
        return None
    loaded: dict[str, Any] = json.loads(canonical_json(value))
    return loaded


def _loads(text: str | None) -> dict[str, Any] | None:
    if text is None:
        return None
    loaded = json.loads(text)
    if not isinstance(loaded, dict):
        raise ValueError("not a JSON object")
    return loaded


def _lock_head(session: Session) -> str:
    """Take the append lock and return the current head hash (the new event's prev_hash)."""
    # A write first: on SQLite it takes the database write lock (waiting up to busy_timeout)
    # before anything is read; on PostgreSQL it creates the row the first time.
    insert_if_absent(session, Meta, {"key": AUDIT_HEAD_KEY, "value": GENESIS_HASH}, "key")
    head = session.exec(
        select(Meta.value).where(col(Meta.key) == AUDIT_HEAD_KEY).with_for_update()
    ).one()
    return head


def append_event(
    session: Session,
    *,
    actor: str,
    action: str,
    entity_type: str,
    entity_id: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
    at: datetime,
) -> AuditEvent:
    """Add one event at the head of the chain, in the caller's transaction.

    The lock is held until the caller commits, so keep the transaction short after this.
    """
    [digest] = _append(session, [EventIn(actor=actor, action=action, entity_type=entity_type,
                                         entity_id=entity_id, at=at, before=before,
                                         after=after)])
    return session.exec(select(AuditEvent).where(col(AuditEvent.hash) == digest)).one()


@dataclass(frozen=True)
class EventIn:
    """One event to append with `append_events`."""

    actor: str
    action: str
    entity_type: str
    entity_id: str
    at: datetime
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


PENDING_KEY = "audit_pending"  # Session.info: events waiting for the commit


def defer_event(session: Session, event: EventIn) -> None:
    """Append `event` when the session commits, after everything else it wrote.

    The chain's lock is then held only for the insert and the commit, not for the rest
    of the transaction, so concurrent audited writes (clicks from many people) wait on
    each other for milliseconds. A rollback drops the deferred events with the changes.
    """
    session.connection()  # in a transaction, so that a rollback (which drops these) fires
    session.info.setdefault(PENDING_KEY, []).append(event)


@sa_event.listens_for(Session, "before_commit")
def _append_deferred(session: Session) -> None:
    pending: list[EventIn] = session.info.pop(PENDING_KEY, [])
    if pending:
        _append(session, pending)


@sa_event.listens_for(Session, "after_rollback")
def _drop_deferred(session: Session) -> None:
    session.info.pop(PENDING_KEY, None)


def append_events(session: Session, events: Sequence[EventIn]) -> int:
    """Append many events in order under one lock and one bulk insert (imports, cycles).

    The chain is the same as `append_event` called once per event: each hash covers its
    predecessor's.
    """
    return len(_append(session, events)) if events else 0


def _append(session: Session, events: Sequence[EventIn]) -> list[str]:
    """Chain `events` after the current head, insert them, move the head; their hashes."""
    prev_hash = _lock_head(session)
    rows: list[dict[str, Any]] = []
    for e in events:
        at_utc = _as_utc(e.at)
        before_n, after_n = _normalized(e.before), _normalized(e.after)
        digest = event_hash(prev_hash=prev_hash, at=at_utc, actor=e.actor, action=e.action,
                            entity_type=e.entity_type, entity_id=e.entity_id,
                            before=before_n, after=after_n)
        rows.append({
            "at": at_utc, "actor": e.actor, "action": e.action, "entity_type": e.entity_type,
            "entity_id": e.entity_id,
            "before": None if before_n is None else canonical_json(before_n),
            "after": None if after_n is None else canonical_json(after_n),
            "prev_hash": prev_hash, "hash": digest,
        })
        prev_hash = digest
    # Every row names every column, so NULLs can be rendered: one batch, not one per
    # pattern of missing values.
    session.execute(insert(AuditEvent).execution_options(render_nulls=True), rows)
    session.exec(update(Meta).where(col(Meta.key) == AUDIT_HEAD_KEY).values(value=prev_hash))
    return [r["hash"] for r in rows]


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of `verify_chain`; `problem` is a sentence a person can act on."""

    ok: bool
    events: int  # events checked (all of them when ok)
    first_bad_id: int | None  # the first event whose hash or link is wrong
    problem: str  # empty when ok


def verify_chain(session: Session, *, batch: int = 1000) -> VerifyResult:
    """Recompute every hash and link in id order; report the first that does not match."""
    expected_prev = GENESIS_HASH
    previous_id: int | None = None
    checked = 0
    stmt = select(AuditEvent).order_by(col(AuditEvent.id)).execution_options(yield_per=batch)
    for event in session.exec(stmt):
        checked += 1
        event_id = event.id
        if event.prev_hash != expected_prev:
            after = "the start of the log" if previous_id is None else f"event {previous_id}"
            return VerifyResult(
                ok=False,
                events=checked,
                first_bad_id=event_id,
                problem=(
                    f"event {event_id} does not link to {after}: an event between them was "
                    "deleted or inserted, or the link itself was edited"
                ),
            )
        try:
            recomputed = event_hash(
                prev_hash=event.prev_hash,
                at=event.at,
                actor=event.actor,
                action=event.action,
                entity_type=event.entity_type,
                entity_id=event.entity_id,
                before=_loads(event.before),
                after=_loads(event.after),
            )
        except ValueError:
            recomputed = ""
        if recomputed != event.hash:
            return VerifyResult(
                ok=False,
                events=checked,
                first_bad_id=event_id,
                problem=(
                    f"event {event_id} ({event.action} on {event.entity_type} "
                    f"{event.entity_id}) was altered after it was written: its content no "
                    "longer matches its hash"
                ),
            )
        expected_prev = event.hash
        previous_id = event_id

    head = session.exec(select(Meta.value).where(col(Meta.key) == AUDIT_HEAD_KEY)).first()
    if head is not None and head != expected_prev:
        last = "the log is empty" if previous_id is None else f"the last event is {previous_id}"
        return VerifyResult(
            ok=False,
            events=checked,
            first_bad_id=None,
            problem=(
                f"{last}, but the recorded head of the chain is a later event: the newest "
                "events were deleted"
            ),
        )
    return VerifyResult(ok=True, events=checked, first_bad_id=None, problem="")
