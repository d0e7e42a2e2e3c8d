"""Use cases over a real database (SQLite and PostgreSQL), from CSV import to cycle.

The sample ledger (shared/samples), planned for Tue 2026-11-24, by hand:
- INV-5001 Acme (US), due Thu 10-15; effective Mon 10-19 (+2 business days); 40 days past
  due (late). Latest step due: pause_warning on 10-19+30 = Wed 11-18. Final tone, finance
  approval; Acme is strategic with ARR 312,000: sensitive.
- INV-5002 Northwind (DE), due Sat 10-31 -> Mon 11-02, effective Wed 11-04; 24 days past
  due (late). Latest step due: firm_notice on 11-04+15 = Thu 11-19. 4,000.00 EUR due.
- INV-5003 Tailspin (GB, autopay: no pre-due), due Thu 11-19, effective Mon 11-23; nudge
  on Tue 11-24, today; 5 days past due (early).
- INV-5004 Contoso (AU), due Mon 08-31, effective Wed 09-02; 85 days past due (critical).
  Latest step due: service_pause on 09-02+45 = Sat 10-17 -> Mon 10-19: a finance decision.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, text
from sqlmodel import select

from connectors.csv_source import CsvImportError, read_customers, read_invoices
from dunning.policy import DEFAULT_POLICY
from services import actions
from services.common import Actor, NotFoundError, ServiceError
from services.importing import upsert_ledger
from services.planning import CycleOrderError, build_plan, plan_json, run_cycle
from services.status import customer_status, find_customer, status_json
from store import tables as t
from store.audit import verify_chain
from store.engine import session_scope

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
NOW = datetime(2026, 11, 24, 14, 0, tzinfo=UTC)
TODAY = date(2026, 11, 24)
P = DEFAULT_POLICY
ME = Actor("dana.reyes@example.com")


def import_samples(db: Engine, *, now: datetime = NOW) -> None:
    customers = read_customers(SAMPLES / "customers.csv")
    invoices = read_invoices(SAMPLES / "invoices.csv",
                             known_customers={c.customer_id for c in customers})
    with session_scope(db) as s:
        upsert_ledger(s, customers=customers, invoices=invoices, source="csv", actor=ME,
                      now=now, policy=P)


def count(db: Engine, table: type) -> int:
    with session_scope(db) as s:
        return int(s.exec(select(func.count()).select_from(table)).one())


def test_sample_plan_matches_the_clerks_hand_computation(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        plan = plan_json(build_plan(s, P, TODAY))
    got = {(a["invoice_id"], a["step"], a["lane"], a["days_past_due"], a["kind"], a["tone"],
            a["approval"], a["amount_due"], a["currency"], a["owner"]) for a in plan["actions"]}
    assert got == {
        ("INV-5001", "pause_warning", "late", 40, "customer_message", "final", "finance",
         "40000.00", "USD", "dana.reyes@example.com"),
        ("INV-5002", "firm_notice", "late", 24, "customer_message", "firm", "owner",
         "4000.00", "EUR", "sam.okafor@example.com"),
        ("INV-5003", "nudge", "early", 5, "customer_message", "friendly", "owner",
         "1200.00", "GBP", "dana.reyes@example.com"),
        ("INV-5004", "service_pause", "critical", 85, "finance_decision", None, None,
         "18250.50", "AUD", "sam.okafor@example.com"),
    }
    assert plan["held"] == [] and plan["date"] == "2026-11-24"
    assert set(plan["actions"][0]) == {
        "invoice_id", "invoice_number", "customer_id", "customer_name", "days_past_due", "lane",
        "step", "kind", "tone", "approval", "owner", "amount_due", "currency", "reasons"}
    acme = next(a for a in plan["actions"] if a["invoice_id"] == "INV-5001")
    assert any("strategic" in r for r in acme["reasons"])


def test_reimport_is_idempotent_and_writes_no_audit_event(db: Engine) -> None:
    import_samples(db)
    events = count(db, t.AuditEvent)
    import_samples(db)
    assert count(db, t.AuditEvent) == events
    assert count(db, t.Invoice) == 6 and count(db, t.Customer) == 4


def test_a_bad_file_imports_nothing(db: Engine, tmp_path: Path) -> None:
    bad = tmp_path / "invoices.csv"
    bad.write_text((SAMPLES / "invoices.csv").read_text() +
                   "INV-9,9,C-9999,2026-10-01,2026-10-31,USD,5,0,open,,\n")
    customers = read_customers(SAMPLES / "customers.csv")
    with pytest.raises(CsvImportError, match=r"invoices\.csv:8: unknown customer_id 'C-9999'"):
        read_invoices(bad, known_customers={c.customer_id for c in customers})
    assert count(db, t.Invoice) == 0


def test_cycle_creates_each_escalation_once_and_runs_forward_only(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        first = run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
    assert len(first.created) == 4
    with session_scope(db) as s:
        again = run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
        assert again.created == [] and build_plan(s, P, TODAY).actions == []
        nudge = s.get(t.Invoice, "INV-5003")
        assert nudge is not None and nudge.next_action_on == date(2026, 11, 30)  # follow_up
    assert count(db, t.Escalation) == 4
    with session_scope(db) as s, pytest.raises(CycleOrderError, match="forward only"):
        run_cycle(s, P, date(2026, 11, 23), actor=Actor("scheduler"), now=NOW)


def test_promise_holds_then_breaks_and_reminders_resume(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
        out = actions.log_promise(s, P, invoice="INV-5003", promised_date=date(2026, 12, 2),
                                  amount=Decimal("1200.00"), note="AP run on Wednesday",
                                  actor=ME, now=NOW)
    # GB: promised Wed 12-02 + 2 business days = Fri 12-04; checked on Sat 12-05.
    assert out.next_action_on == date(2026, 12, 5)
    with session_scope(db) as s:
        held = plan_json(build_plan(s, P, date(2026, 11, 30)))
        assert held["held"] == [{"invoice_id": "INV-5003", "reason": "promise_to_pay"}]
        broke = run_cycle(s, P, date(2026, 12, 7), actor=Actor("scheduler"), now=NOW)
    assert [p.action.step for p in broke.created if p.state.invoice_id == "INV-5003"] == [
        "broken_promise:2026-12-02"]
    with session_scope(db) as s:
        promise = s.exec(select(t.Promise).where(t.Promise.invoice_id == "INV-5003")).one()
        assert promise.status == "broken"
        resumed = run_cycle(s, P, date(2026, 12, 8), actor=Actor("scheduler"), now=NOW)
    # Latest step due on Tue 12-08: firm_notice (11-23 + 15); the missed ones are skipped.
    assert [p.action.step for p in resumed.created if p.state.invoice_id == "INV-5003"] == [
        "firm_notice"]


def test_dispute_routes_to_owner_then_holds(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        actions.open_dispute(s, P, invoice="INV-5002", reason="pricing: contract rate",
                             amount=Decimal("1000.00"), actor=ME, now=NOW)
        with pytest.raises(ServiceError, match="already disputed"):
            actions.open_dispute(s, P, invoice="INV-5002", reason="again", amount=None,
                                 actor=ME, now=NOW)
    with session_scope(db) as s:
        result = run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
    steps = {p.state.invoice_id: p.action.step for p in result.created}
    assert steps["INV-5002"] == "dispute_review:2026-11-24"
    with session_scope(db) as s:
        plan = plan_json(build_plan(s, P, date(2026, 12, 7)))
    assert {"invoice_id": "INV-5002", "reason": "disputed"} in plan["held"]
    assert "INV-5002" not in {a["invoice_id"] for a in plan["actions"]}


def test_snooze_holds_the_customer_until_the_date(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        actions.snooze(s, P, scope="customer", target="C-1002", until=date(2026, 12, 31),
                       reason="quarter-end close", actor=ME, now=NOW)
        plan = plan_json(build_plan(s, P, TODAY))
    assert {"invoice_id": "INV-5002", "reason": "snoozed"} in plan["held"]
    with session_scope(db) as s, pytest.raises(ServiceError, match="must be after today"):
        actions.snooze(s, P, scope="customer", target="C-1002", until=date(2026, 11, 1),
                       reason="x", actor=ME, now=NOW)


def test_full_payment_closes_the_invoice_and_its_escalations(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
        actions.record_payment(s, P, invoice="INV-5001", amount=Decimal("40000.00"),
                               paid_on=TODAY, reference="WIRE-1", source="manual", actor=ME,
                               now=NOW)
    with session_scope(db) as s:
        inv = s.get(t.Invoice, "INV-5001")
        assert inv is not None and inv.status == "paid" and inv.next_action_on is None
        states = set(s.exec(select(t.Escalation.state).where(
            t.Escalation.invoice_id == "INV-5001")))
        assert states == {"closed"}
        with pytest.raises(ServiceError, match="is paid"):
            actions.record_payment(s, P, invoice="INV-5001", amount=Decimal("1"), paid_on=TODAY,
                                   reference=None, source="manual", actor=ME, now=NOW)


def test_refusals_are_clear_and_change_nothing(db: Engine) -> None:
    import_samples(db)
    events = count(db, t.AuditEvent)
    with session_scope(db) as s:
        with pytest.raises(NotFoundError, match="no invoice 'NOPE'"):
            actions.log_promise(s, P, invoice="NOPE", promised_date=TODAY, amount=None,
                                actor=ME, now=NOW)
        with pytest.raises(ServiceError, match="in the past"):
            actions.log_promise(s, P, invoice="INV-5001", promised_date=date(2026, 1, 1),
                                amount=None, actor=ME, now=NOW)
        with pytest.raises(ServiceError, match="more than the"):
            actions.log_promise(s, P, invoice="INV-5002", promised_date=date(2026, 12, 1),
                                amount=Decimal("5000"), actor=ME, now=NOW)
    assert count(db, t.AuditEvent) == events


def test_status_finds_customers_fuzzily_and_reports_the_account(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        assert find_customer(s, "acme").customer_id == "C-1001"
        assert find_customer(s, "C-1004").customer_id == "C-1004"
        assert find_customer(s, "northwnd traders").customer_id == "C-1002"
        with pytest.raises(NotFoundError, match="no customer matches"):
            find_customer(s, "zzqx")
        with pytest.raises(NotFoundError, match="give a customer"):
            find_customer(s, "   ")
        with pytest.raises(NotFoundError, match="characters long"):
            find_customer(s, "x" * 5000)
        st = status_json(customer_status(s, P, "C-1002", TODAY))
    assert st["customer"]["id"] == "C-1002" and st["open_totals"] == {"EUR": "4000.00"}
    [inv] = st["invoices"]
    assert (inv["id"], inv["days_past_due"], inv["lane"], inv["amount_due"]) == (
        "INV-5002", 24, "late", "4000.00")
    assert set(inv) >= {"id", "number", "due_date", "days_past_due", "lane", "amount_due",
                        "currency", "last_touch", "promise", "dispute", "snoozed_until"}
    assert set(st["customer"]) >= {"id", "name", "owner", "arr", "risk_score", "tone",
                                   "reasons"}


def test_audit_chain_verifies_after_a_day_of_work_and_detects_tampering(db: Engine) -> None:
    import_samples(db)
    with session_scope(db) as s:
        run_cycle(s, P, TODAY, actor=Actor("scheduler"), now=NOW)
        actions.open_dispute(s, P, invoice="INV-5002", reason="quality", amount=None,
                             actor=ME, now=NOW)
    with session_scope(db) as s:
        ok = verify_chain(s)
        assert ok.ok and ok.events > 10
        s.connection().execute(text(
            "UPDATE audit_event SET actor = 'mallory' WHERE id = 3"))
    with session_scope(db) as s:
        broken = verify_chain(s)
    assert not broken.ok and broken.first_bad_id == 3


def test_scheduled_cycle_decides_each_customer_on_its_own_date(db: Engine) -> None:
    import_samples(db)
    # 2026-11-23 20:00 UTC: still Monday 11-23 in New York and London, but already
    # Tuesday 11-24 07:00 in Sydney. Tailspin (GB) gets its nudge on Tue 11-24 only.
    evening = datetime(2026, 11, 23, 20, 0, tzinfo=UTC)
    with session_scope(db) as s:
        plan = build_plan(s, P, date(2026, 11, 23), now=evening)
        by_invoice = {p.state.invoice_id: p.action for p in plan.actions}
        assert "INV-5003" not in by_invoice  # London: still Monday, nudge is Tuesday
        assert by_invoice["INV-5004"].days_past_due == 85  # Sydney: already Tuesday
        assert by_invoice["INV-5001"].days_past_due == 39  # New York: Monday
