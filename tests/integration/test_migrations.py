"""Migrations upgrade a populated database without loss: from the first revision to head."""

from __future__ import annotations

from alembic import command
from sqlalchemy import Engine, text
from sqlmodel import Session

from store.engine import alembic_config, current_revision, head_revision, schema_diff
from store.repository import load_states


def test_upgrade_from_the_first_revision_keeps_every_row(engine: Engine) -> None:
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001")
    with engine.begin() as conn:
        conn.execute(text(
            "INSERT INTO customer (id, name, name_normalized, country, timezone, currency, "
            "strategic, autopay, do_not_contact, source, external_ids, created_at, updated_at)"
            " VALUES ('C-1', 'Acme', 'acme', 'US', 'UTC', 'USD', false, false, false, 'csv', "
            "'{}', '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')"))
        conn.execute(text(
            "INSERT INTO invoice (id, number, customer_id, issue_date, due_date, currency, "
            "amount_minor, amount_paid_minor, status, source, created_at, updated_at) VALUES "
            "('I-1', '001', 'C-1', '2026-01-01', '2026-01-31', 'USD', 123456, 0, 'open', "
            "'csv', '2026-01-01 00:00:00+00', '2026-01-01 00:00:00+00')"))
        conn.execute(text(
            "INSERT INTO escalation (invoice_id, step, kind, channel, lane, days_past_due, "
            "scheduled_on, reasons, state, plan_date, created_at) VALUES ('I-1', 'nudge', "
            "'customer_message', 'email', 'early', 3, '2026-02-03', '[]', 'posted', "
            "'2026-02-03', '2026-02-03 09:00:00+00')"))
    assert current_revision(engine) == "0001"
    with engine.begin() as conn:
        command.upgrade(alembic_config(conn), "head")
    assert current_revision(engine) == head_revision()
    assert schema_diff(engine) == []
    with engine.connect() as conn:
        row = conn.execute(text("SELECT step, state, note FROM escalation")).one()
    assert tuple(row) == ("nudge", "posted", None)
    with Session(engine) as s:
        state = load_states(s, ["I-1"])["I-1"]
    assert str(state.amount) == "1234.56" and state.steps_done == frozenset({"nudge"})
