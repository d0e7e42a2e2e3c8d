"""Rows -> domain: load_states, payment histories, the plan's selections, meta values."""

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, event
from sqlmodel import Session

from dunning.model import (
    Dispute,
    InvoiceStatus,
    PaymentHistory,
    Promise,
    PromiseStatus,
)
from store.engine import make_engine, migrate, session_scope
from store.repository import (
    customer_context,
    due_invoice_ids,
    get_meta,
    held_candidate_ids,
    load_states,
    payment_histories,
    set_meta,
)
from store.tables import (
    Customer,
    Escalation,
    Invoice,
    Snooze,
)
from store.tables import Dispute as DisputeRow
from store.tables import Promise as PromiseRow

TODAY = date(2026, 3, 2)


def customer(cid: str, **kw: Any) -> Customer:
    return Customer(id=cid, name=cid.title(), name_normalized=cid.lower(), **kw)


def invoice(iid: str, cid: str, **kw: Any) -> Invoice:
    fields: dict[str, Any] = {
        "number": f"N-{iid}", "issue_date": date(2026, 1, 1), "due_date": date(2026, 2, 1),
        "currency": "USD", "amount_minor": 10000,
    }
    fields.update(kw)
    return Invoice(id=iid, customer_id=cid, **fields)


def promise(iid: str, **kw: Any) -> PromiseRow:
    fields: dict[str, Any] = {"promised_date": date(2026, 3, 10), "currency": "USD",
                              "created_by": "U_ANA"}
    fields.update(kw)
    return PromiseRow(invoice_id=iid, **fields)


def dispute(iid: str, **kw: Any) -> DisputeRow:
    fields: dict[str, Any] = {"reason": "wrong quantity", "currency": "USD",
                              "opened_on": date(2026, 2, 20), "created_by": "U_ANA"}
    fields.update(kw)
    return DisputeRow(invoice_id=iid, **fields)


def snooze(scope: str, target: str, until: date, **kw: Any) -> Snooze:
    return Snooze(scope=scope, target=target, until=until, created_by="U_ANA", **kw)


def escalation(iid: str, step: str, state: str = "sent") -> Escalation:
    return Escalation(invoice_id=iid, step=step, kind="customer_message", channel="email",
                      lane="early", days_past_due=1, scheduled_on=TODAY, plan_date=TODAY,
                      state=state)


def add(engine: Engine, *rows: Any) -> None:
    with session_scope(engine) as s:
        for row in rows:
            s.add(row)
            s.flush()  # keep insertion order (created_at and ids follow it)


@contextmanager
def counted(engine: Engine) -> Iterator[list[str]]:
    statements: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        event.remove(engine, "before_cursor_execute", record)


@pytest.fixture
def ledger(db: Engine) -> Engine:
    """One customer's rich history (acme, in Sydney) and a plain one (globex)."""
    add(
        db,
        customer("acme", country="AU", timezone="Australia/Sydney", currency="AUD",
                 arr_minor=30000000, health=35, owner_email="Ana@Example.com",
                 csm_email="csm@example.com", ap_contact_name="Pat", ap_contact_email="ap@acme",
                 strategic=True, autopay=False, do_not_contact=True),
        customer("globex"),
        customer("initech", owner_email="ana@example.com"),
        # acme: two open invoices ...
        invoice("a-open", "acme", currency="AUD", amount_minor=1825050,
                amount_paid_minor=100000, next_action_on=date(2026, 3, 1),
                payment_failed_on=date(2026, 2, 2)),
        invoice("a-disputed", "acme", currency="AUD", amount_minor=500000,
                next_action_on=date(2026, 3, 5)),
        # ... and a settled history: on time, 5 days late, 12 days late; two that do not count
        invoice("a-p1", "acme", due_date=date(2026, 1, 10), status="paid",
                paid_date=date(2026, 1, 8)),
        invoice("a-p2", "acme", due_date=date(2026, 1, 10), status="paid",
                paid_date=date(2026, 1, 15)),
        invoice("a-p3", "acme", due_date=date(2026, 1, 31), status="paid",
                paid_date=date(2026, 2, 12)),
        invoice("a-p4", "acme", status="paid"),  # no paid_date: not in the history
        invoice("a-void", "acme", status="void", paid_date=date(2026, 3, 1)),
        invoice("g-open", "globex", next_action_on=TODAY),
        invoice("i-open", "initech"),
        escalation("a-open", "nudge"),
        escalation("a-open", "follow_up", state="skipped"),
        escalation("g-open", "pre_due", state="proposed"),
        promise("a-open", status="kept", promised_date=date(2026, 2, 1),
                created_at=datetime(2026, 1, 20, tzinfo=UTC)),
        # the latest: logged 20:00 UTC on 1 March, already 2 March in Sydney
        promise("a-open", status="open", amount_minor=500000, currency="AUD",
                created_at=datetime(2026, 3, 1, 20, 0, tzinfo=UTC)),
        promise("a-p3", status="broken", created_at=datetime(2026, 2, 1, tzinfo=UTC)),
        dispute("a-disputed", status="resolved", opened_on=date(2026, 2, 1),
                resolved_on=date(2026, 2, 5)),
        dispute("a-disputed", reason="not delivered", amount_minor=250050, currency="AUD",
                opened_on=date(2026, 2, 20)),
        snooze("customer", "acme", date(2026, 3, 31)),
        snooze("customer", "acme", date(2026, 6, 30), cancelled=True),
        snooze("owner", "ANA@example.com", date(2026, 4, 15)),  # case differs from the CRM
    )
    return db


def test_customer_context_maps_every_field(ledger: Engine) -> None:
    with session_scope(ledger) as s:
        ctx = customer_context(s.get_one(Customer, "acme"))
    assert ctx.customer_id == "acme"
    assert ctx.arr == Decimal("300000.00")
    assert (ctx.country, ctx.timezone, ctx.currency) == ("AU", "Australia/Sydney", "AUD")
    assert (ctx.health, ctx.owner_email, ctx.csm_email) == (35, "Ana@Example.com",
                                                            "csm@example.com")
    assert (ctx.ap_contact_name, ctx.ap_contact_email) == ("Pat", "ap@acme")
    assert (ctx.strategic, ctx.autopay, ctx.do_not_contact) == (True, False, True)


def test_customer_context_without_arr() -> None:
    ctx = customer_context(Customer(id="x", name="X", name_normalized="x", currency="JPY"))
    assert ctx.arr is None
    ctx = customer_context(Customer(id="x", name="X", name_normalized="x", currency="JPY",
                                    arr_minor=1200))
    assert ctx.arr == Decimal("1200")


def test_payment_histories_aggregate_settled_invoices_promises_and_disputes(
    ledger: Engine,
) -> None:
    with session_scope(ledger) as s:
        histories = payment_histories(s, ["acme", "globex", "nobody"])
    assert histories["acme"] == PaymentHistory(
        invoices_paid=3, paid_late=2, days_late_total=17, broken_promises=1, kept_promises=1,
        disputes=2,
    )
    assert histories["acme"].average_days_late == 8.5
    assert histories["globex"] == PaymentHistory()
    assert histories["nobody"] == PaymentHistory()


def test_load_states_maps_invoice_customer_and_everything_around_it(ledger: Engine) -> None:
    with session_scope(ledger) as s:
        states = load_states(s, ["a-open", "a-disputed", "g-open", "i-open", "missing"])
    assert set(states) == {"a-open", "a-disputed", "g-open", "i-open"}

    a = states["a-open"]
    assert (a.number, a.currency, a.status) == ("N-a-open", "AUD", InvoiceStatus.OPEN)
    assert a.amount == Decimal("18250.50")
    assert a.amount_paid == Decimal("1000.00")
    assert a.amount_due == Decimal("17250.50")
    assert (a.issue_date, a.due_date) == (date(2026, 1, 1), date(2026, 2, 1))
    assert a.payment_failed_on == date(2026, 2, 2)
    assert a.customer.customer_id == "acme" and a.customer.strategic
    assert a.steps_done == frozenset({"nudge", "follow_up"})
    assert a.promise == Promise(promised_date=date(2026, 3, 10), amount=Decimal("5000.00"),
                                status=PromiseStatus.OPEN, logged_on=date(2026, 3, 2))
    assert a.dispute is None
    # customer snooze to 31 March, owner snooze (other case) to 15 April: the later one
    assert a.snoozed_until == date(2026, 4, 15)
    assert a.history.invoices_paid == 3 and a.history.disputes == 2

    d = states["a-disputed"]
    assert d.dispute == Dispute(reason="not delivered", amount=Decimal("2500.50"),
                                opened_on=date(2026, 2, 20))
    assert d.promise is None
    assert d.steps_done == frozenset()

    g = states["g-open"]
    assert g.steps_done == frozenset({"pre_due"})
    assert (g.promise, g.dispute, g.snoozed_until) == (None, None, None)
    assert g.history == PaymentHistory()

    assert states["i-open"].snoozed_until == date(2026, 4, 15)  # owner snooze only


def test_load_states_uses_a_fixed_number_of_queries(db: Engine) -> None:
    def seed(prefix: str, n: int) -> list[str]:
        ids = [f"{prefix}-{i:05d}" for i in range(n)]
        # Tables have no ORM relationships, so the unit of work does not order inserts by
        # foreign key: insert parents first.
        add(db, customer(f"{prefix}-c", owner_email=f"{prefix}@x"))
        with session_scope(db) as s:
            s.add_all([invoice(iid, f"{prefix}-c") for iid in ids])
        with session_scope(db) as s:
            for iid in ids:
                s.add_all([escalation(iid, "nudge"), promise(iid), dispute(iid)])
        return ids

    def queries(ids: list[str]) -> int:
        with session_scope(db) as s, counted(db) as statements:
            states = load_states(s, ids)
        assert set(states) == set(ids)
        return len([q for q in statements if q.lstrip().upper().startswith("SELECT")])

    few, many, chunked = seed("few", 3), seed("many", 60), seed("big", 1100)
    assert queries(few) == queries(many) == 6
    assert queries(chunked) == 3 * 6  # 1100 ids: three chunks of at most 500


def test_due_invoice_ids_selects_open_invoices_due_today_or_earlier(ledger: Engine) -> None:
    add(ledger,
        invoice("paid-due", "globex", status="paid", next_action_on=date(2026, 2, 1)),
        invoice("no-date", "globex"),
        invoice("later", "globex", next_action_on=date(2026, 3, 3)),
        invoice("long-ago", "globex", next_action_on=date(2025, 12, 1)))
    with session_scope(ledger) as s:
        assert due_invoice_ids(s, TODAY) == ["long-ago", "a-open", "g-open"]
        assert due_invoice_ids(s, date(2026, 1, 1)) == ["long-ago"]


def explain(session: Session, sql: str, today: date) -> str:
    """The query plan of the plan's query, as one string."""
    conn = session.connection()
    if conn.dialect.name == "sqlite":
        rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", (today.isoformat(), "open"))
    else:
        rows = conn.exec_driver_sql(
            f"EXPLAIN {sql}", {"next_action_on_1": today, "status_1": "open"}
        )
    return " ".join(str(part) for row in rows.all() for part in row)


def test_due_invoice_ids_reads_the_index_on_a_ledger_sized_table(db: Engine) -> None:
    """The plan's query reads ix_invoice_next_action_on (EXPLAIN on both backends).

    A realistic shape, with statistics: mostly settled invoices without a next action and a
    few open ones due; on a near-empty table PostgreSQL rightly prefers a sequential scan.
    """
    customers = [customer(f"c{i:03d}") for i in range(200)]
    add(db, *customers)
    rows = []
    for i in range(4000):
        cid = customers[i % len(customers)].id
        if i % 10:  # nine in ten are settled: no next action
            rows.append(invoice(f"p{i:05d}", cid, status="paid", paid_date=date(2025, 6, 1)))
        else:  # the open ones come due four a day over 100 days
            next_on = date(2026, 1, 1) + timedelta(days=(i // 10) % 100)
            rows.append(invoice(f"o{i:05d}", cid, next_action_on=next_on))
    with session_scope(db) as s:
        s.add_all(rows)
    with db.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    with session_scope(db) as s, counted(db) as statements:
        due = due_invoice_ids(s, date(2026, 1, 3))
        (sql,) = statements
        plan = explain(s, sql, date(2026, 1, 3))
    assert len(due) == 12
    assert "ix_invoice_next_action_on" in plan, plan


def test_due_invoice_ids_reads_the_index_on_sqlite_without_statistics(tmp_path: Path) -> None:
    """A fresh SQLite file never ANALYZEd is the common case: the index must still win."""
    engine = make_engine(f"sqlite:///{tmp_path / 'plan.db'}")
    try:
        migrate(engine)
        with session_scope(engine) as s, counted(engine) as statements:
            due_invoice_ids(s, TODAY)
            (sql,) = statements
            plan = explain(s, sql, TODAY)
        assert "USING INDEX ix_invoice_next_action_on" in plan, plan
    finally:
        engine.dispose()


def test_held_candidate_ids_finds_disputes_promises_and_live_snoozes(ledger: Engine) -> None:
    add(ledger,
        customer("hooli", owner_email="gavin@hooli"),
        customer("umbrella"),
        invoice("h-open", "hooli"),
        invoice("u-open", "umbrella"),
        invoice("g-paid", "globex", status="paid", paid_date=date(2026, 2, 1)),
        invoice("g-kept", "globex"),
        dispute("g-paid"),  # open dispute, but the invoice is paid
        promise("g-kept", status="kept"),
        snooze("owner", "gavin@hooli", TODAY),  # ends today: no longer holds
        snooze("customer", "umbrella", date(2026, 5, 1), cancelled=True))
    with session_scope(ledger) as s:
        held = held_candidate_ids(s, TODAY)
        # a-open: promise + acme snooze; a-disputed: dispute; i-open: owner snooze (any case)
        assert held == ["a-disputed", "a-open", "i-open"]
        assert held_candidate_ids(s, date(2026, 4, 15)) == ["a-disputed", "a-open"]


def test_meta_values_are_set_and_replaced(db: Engine) -> None:
    with session_scope(db) as s:
        assert get_meta(s, "policy_fingerprint") is None
        set_meta(s, "policy_fingerprint", "abc")
    with session_scope(db) as s:
        assert get_meta(s, "policy_fingerprint") == "abc"
        set_meta(s, "policy_fingerprint", "def")
        assert get_meta(s, "policy_fingerprint") == "def"
    with session_scope(db) as s:
        assert get_meta(s, "policy_fingerprint") == "def"


def test_repository_reads_see_unflushed_writes(db: Engine) -> None:
    """Services add rows and read back in one transaction: reads must autoflush first."""
    with Session(db) as s:
        s.add(customer("zeta"))
        s.add(invoice("z-1", "zeta", next_action_on=TODAY))
        assert due_invoice_ids(s, TODAY) == ["z-1"]
        assert set(load_states(s, ["z-1"])) == {"z-1"}
        s.rollback()
