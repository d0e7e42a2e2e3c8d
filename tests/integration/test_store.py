"""The store against real databases: engine setup, migrations, constraints, money, time."""

import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import Engine, event, inspect, text
from sqlalchemy.exc import IntegrityError
from sqlmodel import select

from dunning.money import from_minor, to_minor
from store.engine import (
    current_revision,
    head_revision,
    make_engine,
    migrate,
    normalize_url,
    schema_diff,
    session_scope,
)
from store.tables import Customer, Escalation, Invoice, Outbox, metadata

STORE_DIR = Path(__file__).resolve().parents[2] / "store"


def add_customer(engine: Engine, customer_id: str = "c1", currency: str = "USD") -> None:
    with session_scope(engine) as s:
        s.add(Customer(id=customer_id, name="Acme", name_normalized="acme", currency=currency))


def add_invoice(engine: Engine, invoice_id: str, *, amount_minor: int, currency: str) -> None:
    with session_scope(engine) as s:
        s.add(Invoice(id=invoice_id, number=invoice_id, customer_id="c1",
                      issue_date=date(2026, 1, 1), due_date=date(2026, 1, 31),
                      currency=currency, amount_minor=amount_minor))


def test_postgres_urls_get_the_psycopg3_driver() -> None:
    assert normalize_url("postgresql://u:p@h:5432/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgres://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("postgresql+psycopg://u@h/d").drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_sqlite_engine_creates_its_folder_and_sets_pragmas(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "deeper" / "dunning.db"
    engine = make_engine(f"sqlite:///{path}")
    try:
        assert path.parent.is_dir()
        with engine.connect() as conn:
            pragma = {name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()
                      for name in ("journal_mode", "foreign_keys", "busy_timeout", "synchronous")}
        # synchronous: 1 is NORMAL
        assert pragma == {"journal_mode": "wal", "foreign_keys": 1, "busy_timeout": 5000,
                          "synchronous": 1}
    finally:
        engine.dispose()


def test_migrate_creates_every_table_and_records_head(engine: Engine) -> None:
    assert current_revision(engine) is None
    revision = migrate(engine)
    assert revision == head_revision() == current_revision(engine)
    tables = set(inspect(engine).get_table_names())
    assert set(metadata.tables) <= tables
    assert "alembic_version" in tables


def test_migrate_twice_is_a_noop(engine: Engine) -> None:
    first = migrate(engine)
    statements: list[str] = []

    def record(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement.strip().split()[0].upper())

    event.listen(engine, "before_cursor_execute", record)
    try:
        second = migrate(engine)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert second == first
    assert not {"CREATE", "ALTER", "DROP", "INSERT", "UPDATE"} & set(statements), statements


def test_migrated_schema_matches_the_models(db: Engine) -> None:
    assert schema_diff(db) == []


def test_the_alembic_command_line_works_from_any_directory(
    tmp_path: Path, db_url: str
) -> None:
    env = {**os.environ, "DATABASE_URL": db_url}
    ini = STORE_DIR / "alembic.ini"
    done = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(ini), "upgrade", "head"],
        cwd=tmp_path, env=env, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    engine = make_engine(db_url)
    try:
        assert current_revision(engine) == head_revision()
        assert schema_diff(engine) == []
    finally:
        engine.dispose()


def test_a_step_is_escalated_once_per_invoice(db: Engine) -> None:
    add_customer(db)
    add_invoice(db, "inv-1", amount_minor=1000, currency="USD")

    def escalation() -> Escalation:
        return Escalation(invoice_id="inv-1", step="nudge", kind="customer_message",
                          channel="email", lane="early", days_past_due=1,
                          scheduled_on=date(2026, 2, 1), plan_date=date(2026, 2, 1))

    with session_scope(db) as s:
        s.add(escalation())
    duplicate = r"uq_escalation_invoice_step|UNIQUE constraint failed: escalation\.invoice_id"
    with pytest.raises(IntegrityError, match=duplicate), session_scope(db) as s:
        s.add(escalation())
    with session_scope(db) as s:
        assert len(s.exec(select(Escalation)).all()) == 1


def test_foreign_keys_are_enforced(db: Engine) -> None:
    with pytest.raises(IntegrityError):
        add_invoice(db, "orphan", amount_minor=1, currency="USD")


@pytest.mark.parametrize(
    ("amount", "currency", "minor"),
    [
        ("18250.50", "AUD", 1825050),
        ("1200", "JPY", 1200),
        ("1.234", "KWD", 1234),
        ("0.01", "USD", 1),
        ("92233720368547.75", "USD", 9223372036854775),  # far beyond a 32-bit column
    ],
)
def test_money_round_trips_exactly(
    db: Engine, amount: str, currency: str, minor: int
) -> None:
    value = Decimal(amount)
    add_customer(db, currency=currency)
    add_invoice(db, "inv-m", amount_minor=to_minor(value, currency), currency=currency)
    with session_scope(db) as s:
        row = s.get_one(Invoice, "inv-m")
        assert row.amount_minor == minor
        assert isinstance(row.amount_minor, int)
        assert from_minor(row.amount_minor, row.currency) == value
        assert str(from_minor(row.amount_minor, row.currency)) == str(value.quantize(
            from_minor(1, currency)))


def test_timestamps_come_back_as_aware_utc(db: Engine) -> None:
    sydney = timezone(timedelta(hours=11))
    at = datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=sydney)
    with session_scope(db) as s:
        s.add(Outbox(key="k1", kind="email", payload="{}", available_at=at))
    with session_scope(db) as s:
        row = s.exec(select(Outbox).where(Outbox.key == "k1")).one()
        assert row.available_at == at
        assert row.available_at.utcoffset() == timedelta(0)
        assert row.available_at.tzinfo is not None
        assert row.created_at.tzinfo is not None


def test_naive_timestamps_are_refused(db: Engine) -> None:
    with pytest.raises(Exception, match="timezone"), session_scope(db) as s:
        s.add(Outbox(key="k2", kind="email", payload="{}",
                     available_at=datetime(2026, 3, 1, 9, 30)))


def test_session_scope_rolls_back_on_error(db: Engine) -> None:
    with pytest.raises(RuntimeError, match="boom"), session_scope(db) as s:
        s.add(Customer(id="c9", name="Gone", name_normalized="gone"))
        s.flush()
        raise RuntimeError("boom")
    with session_scope(db) as s:
        assert s.get(Customer, "c9") is None


def test_objects_stay_readable_after_the_scope(db: Engine) -> None:
    with session_scope(db) as s:
        customer = Customer(id="c2", name="Kept", name_normalized="kept")
        s.add(customer)
    assert customer.name == "Kept"
    assert customer.created_at.tzinfo is UTC or customer.created_at.utcoffset() == timedelta(0)


def test_sqlite_foreign_keys_are_back_on_after_migrate(tmp_path: Path) -> None:
    """migrate() turns them off for batch migrations: the pooled connection must not keep that."""
    engine = make_engine(f"sqlite:///{tmp_path / 'fk.db'}")
    try:
        migrate(engine)
        with engine.connect() as conn:
            assert conn.execute(text("PRAGMA foreign_keys")).scalar() == 1
            assert conn.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    finally:
        engine.dispose()
