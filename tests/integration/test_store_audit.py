"""The hash-chained audit log: appends, verification, tampering, concurrent writers."""

import itertools
import threading
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal

import pytest
from sqlalchemy import Engine, text
from sqlmodel import Session, col, select

from store.audit import (
    AUDIT_HEAD_KEY,
    GENESIS_HASH,
    EventIn,
    append_event,
    canonical_json,
    defer_event,
    event_hash,
    verify_chain,
)
from store.engine import session_scope
from store.repository import get_meta
from store.tables import AuditEvent

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)


def append(engine: Engine, n: int, *, actor: str = "U_ANA", start: int = 0) -> list[int]:
    ids = []
    for i in range(start, start + n):
        with session_scope(engine) as s:
            event = append_event(
                s, actor=actor, action="escalation.approve", entity_type="escalation",
                entity_id=str(i), before={"state": "posted"},
                after={"state": "approved", "amount": Decimal("12.50"), "on": date(2026, 3, 2)},
                at=T0 + timedelta(minutes=i),
            )
            assert event.id is not None
            ids.append(event.id)
    return ids


def events(engine: Engine) -> list[AuditEvent]:
    with session_scope(engine) as s:
        return list(s.exec(select(AuditEvent).order_by(col(AuditEvent.id))))


def test_an_empty_log_verifies(db: Engine) -> None:
    with session_scope(db) as s:
        result = verify_chain(s)
    assert (result.ok, result.events, result.first_bad_id) == (True, 0, None)


def test_appended_events_form_a_verifiable_chain(db: Engine) -> None:
    append(db, 5)
    rows = events(db)
    assert rows[0].prev_hash == GENESIS_HASH
    for earlier, later in itertools.pairwise(rows):
        assert later.prev_hash == earlier.hash
    with session_scope(db) as s:
        assert get_meta(s, AUDIT_HEAD_KEY) == rows[-1].hash
        result = verify_chain(s)
    assert result.ok, result.problem
    assert result.events == 5


def test_the_hash_is_sha256_of_the_canonical_event(db: Engine) -> None:
    append(db, 1)
    row = events(db)[0]
    assert row.after == canonical_json({"amount": "12.50", "on": "2026-03-02", "state": "approved"})
    assert row.hash == event_hash(
        prev_hash=GENESIS_HASH, at=T0, actor="U_ANA", action="escalation.approve",
        entity_type="escalation", entity_id="0", before={"state": "posted"},
        after={"amount": "12.50", "on": "2026-03-02", "state": "approved"},
    )
    assert row.at == T0


def test_editing_an_event_is_detected_at_that_event(db: Engine) -> None:
    ids = append(db, 5)
    with db.begin() as conn:
        conn.execute(text("UPDATE audit_event SET after = :a WHERE id = :id"),
                     {"a": '{"state":"rejected"}', "id": ids[2]})
    with session_scope(db) as s:
        result = verify_chain(s)
    assert not result.ok
    assert result.first_bad_id == ids[2]
    assert result.events == 3
    assert f"event {ids[2]}" in result.problem and "altered" in result.problem


def test_deleting_a_middle_event_is_detected_at_the_next_one(db: Engine) -> None:
    ids = append(db, 5)
    with db.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE id = :id"), {"id": ids[2]})
    with session_scope(db) as s:
        result = verify_chain(s)
    assert not result.ok
    assert result.first_bad_id == ids[3]
    assert f"does not link to event {ids[1]}" in result.problem


def test_deleting_the_first_event_is_detected(db: Engine) -> None:
    ids = append(db, 3)
    with db.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE id = :id"), {"id": ids[0]})
    with session_scope(db) as s:
        result = verify_chain(s)
    assert (result.ok, result.first_bad_id) == (False, ids[1])
    assert "start of the log" in result.problem


def test_deleting_the_newest_events_is_detected_through_the_head(db: Engine) -> None:
    ids = append(db, 4)
    with db.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE id >= :id"), {"id": ids[2]})
    with session_scope(db) as s:
        result = verify_chain(s)
    assert not result.ok
    assert result.first_bad_id is None
    assert result.events == 2
    assert "newest events were deleted" in result.problem


def test_appending_after_a_deletion_does_not_hide_it(db: Engine) -> None:
    ids = append(db, 3)
    with db.begin() as conn:
        conn.execute(text("DELETE FROM audit_event WHERE id = :id"), {"id": ids[-1]})
    new_ids = append(db, 1, start=10)
    with session_scope(db) as s:
        result = verify_chain(s)
    assert (result.ok, result.first_bad_id) == (False, new_ids[0])
    assert new_ids[0] > ids[-1]  # ids are never reused, also on SQLite


def test_naive_timestamps_are_refused(db: Engine) -> None:
    with pytest.raises(ValueError, match="timezone-aware"), session_scope(db) as s:
        append_event(s, actor="a", action="x", entity_type="t", entity_id="1",
                     before=None, after=None, at=datetime(2026, 3, 2, 9, 0))


def test_a_rolled_back_append_leaves_no_trace(db: Engine) -> None:
    append(db, 2)
    with pytest.raises(RuntimeError), session_scope(db) as s:
        append_event(s, actor="a", action="x", entity_type="t", entity_id="1",
                     before=None, after={"a": 1}, at=T0)
        raise RuntimeError("service failed after auditing")
    append(db, 1, start=5)
    with session_scope(db) as s:
        result = verify_chain(s)
    assert result.ok, result.problem
    assert result.events == 3


def test_concurrent_appends_from_two_threads_keep_one_chain(db: Engine) -> None:
    per_thread = 25
    errors: list[BaseException] = []
    barrier = threading.Barrier(2)

    def worker(actor: str) -> None:
        try:
            barrier.wait()
            append(db, per_thread, actor=actor)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(a,)) for a in ("U_ONE", "U_TWO")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    with session_scope(db) as s:
        result = verify_chain(s)
    assert result.ok, result.problem
    assert result.events == 2 * per_thread
    rows = events(db)
    assert len({r.prev_hash for r in rows}) == len(rows)  # no two events share a parent
    assert {r.actor for r in rows} == {"U_ONE", "U_TWO"}


def test_a_second_writer_waits_for_the_first_to_commit(db: Engine) -> None:
    """Both sessions would read the same head without the lock; with it, B follows A."""
    append(db, 1)  # the head row exists: B must block on it, not on its creation
    a_appended = threading.Event()
    release_a = threading.Event()
    b_done = threading.Event()
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def writer_a() -> None:
        try:
            with session_scope(db) as s:
                ev = append_event(s, actor="A", action="x", entity_type="t", entity_id="a",
                                  before=None, after=None, at=T0)
                results["a"] = ev.hash
                a_appended.set()
                release_a.wait(timeout=30)
        except BaseException as exc:
            errors.append(exc)
            a_appended.set()

    def writer_b() -> None:
        try:
            with session_scope(db) as s:
                ev = append_event(s, actor="B", action="x", entity_type="t", entity_id="b",
                                  before=None, after=None, at=T0)
                results["b_prev"] = ev.prev_hash
            b_done.set()
        except BaseException as exc:
            errors.append(exc)
            b_done.set()

    ta = threading.Thread(target=writer_a)
    ta.start()
    assert a_appended.wait(timeout=30)
    tb = threading.Thread(target=writer_b)
    tb.start()
    assert not b_done.wait(timeout=0.5), "B appended while A still held the chain head"
    release_a.set()
    ta.join(timeout=30)
    tb.join(timeout=30)
    assert not errors, errors
    assert results["b_prev"] == results["a"]
    with session_scope(db) as s:
        result = verify_chain(s)
    assert result.ok, result.problem
    assert result.events == 3


def test_a_deferred_event_takes_the_chain_only_at_commit(db: Engine) -> None:
    """Services audit with defer_event: a transaction that is still working does not hold
    the chain, so another writer appends meanwhile; the deferred events follow it, in the
    order they were made, when the first one commits."""
    append(db, 1)
    with session_scope(db) as s:
        for i in range(3):
            defer_event(s, EventIn(actor="A", action="card.approve", entity_type="escalation",
                                   entity_id=f"a{i}", at=T0 + timedelta(seconds=i)))
        done = threading.Event()
        other = threading.Thread(target=lambda: (append(db, 1, actor="B", start=9),
                                                 done.set()))
        other.start()
        assert done.wait(timeout=10), "the other writer waited for an uncommitted deferral"
        other.join()
    rows = events(db)
    assert [r.entity_id for r in rows] == ["0", "9", "a0", "a1", "a2"]
    with session_scope(db) as s:
        result = verify_chain(s)
    assert result.ok and result.events == 5, result.problem


def test_a_rolled_back_deferral_leaves_no_event(db: Engine) -> None:
    with pytest.raises(RuntimeError), session_scope(db) as s:
        defer_event(s, EventIn(actor="A", action="x", entity_type="t", entity_id="1", at=T0))
        raise RuntimeError("service failed after auditing")
    with Session(db) as s:  # the same session object is not reused: a new one commits clean
        defer_event(s, EventIn(actor="A", action="x", entity_type="t", entity_id="2", at=T0))
        s.rollback()
        s.commit()
    assert events(db) == []
