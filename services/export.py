"""Export the ledger and the audit log to files: the CSV import format for customers and
invoices (so an export imports into another installation), every other table whole.

Streams rows (`yield_per`), so a million-invoice ledger exports in bounded memory.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from sqlalchemy import select as sa_select
from sqlalchemy.engine import Engine

from dunning.money import from_minor
from store import tables as t

CUSTOMER_HEADER = ["customer_id", "name", "country", "timezone", "currency", "arr", "health",
                   "owner_email", "csm_email", "ap_contact_name", "ap_contact_email",
                   "strategic", "autopay", "do_not_contact"]
INVOICE_HEADER = ["invoice_id", "number", "customer_id", "issue_date", "due_date", "currency",
                  "amount", "amount_paid", "status", "paid_date", "payment_link"]
WHOLE_TABLES = ("payment", "escalation", "draft", "promise", "dispute", "snooze", "touch",
                "outbox", "audit_event")
BATCH = 5000


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if hasattr(value, "isoformat"):
        return str(value.isoformat())
    return str(value)


def _customers(engine: Engine) -> Iterator[list[str]]:
    with engine.connect() as conn:
        for c in conn.execution_options(yield_per=BATCH).execute(
                sa_select(t.Customer.__table__).order_by(t.Customer.__table__.c.id)):  # type: ignore[attr-defined]
            arr = from_minor(c.arr_minor, c.currency) if c.arr_minor is not None else None
            yield [_cell(v) for v in (c.id, c.name, c.country, c.timezone, c.currency, arr,
                                      c.health, c.owner_email, c.csm_email, c.ap_contact_name,
                                      c.ap_contact_email, c.strategic, c.autopay,
                                      c.do_not_contact)]


def _invoices(engine: Engine) -> Iterator[list[str]]:
    with engine.connect() as conn:
        for i in conn.execution_options(yield_per=BATCH).execute(
                sa_select(t.Invoice.__table__).order_by(t.Invoice.__table__.c.id)):  # type: ignore[attr-defined]
            yield [_cell(v) for v in (i.id, i.number, i.customer_id, i.issue_date, i.due_date,
                                      i.currency, from_minor(i.amount_minor, i.currency),
                                      from_minor(i.amount_paid_minor, i.currency), i.status,
                                      i.paid_date, i.payment_link)]


def _write_csv(path: Path, header: list[str], rows: Iterator[list[str]]) -> int:
    n = 0
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        for row in rows:
            writer.writerow(row)
            n += 1
    return n


def export(engine: Engine, folder: Path, *, fmt: str = "csv") -> dict[str, int]:
    """Write every table under `folder`; returns rows written per file."""
    if fmt not in ("csv", "json"):
        raise ValueError("format is csv or json")
    folder.mkdir(parents=True, exist_ok=True)
    counts = {
        "customers.csv": _write_csv(folder / "customers.csv", CUSTOMER_HEADER,
                                    _customers(engine)),
        "invoices.csv": _write_csv(folder / "invoices.csv", INVOICE_HEADER, _invoices(engine)),
    }
    metadata = t.metadata
    for name in WHOLE_TABLES:
        table = metadata.tables[name]
        pk = list(table.primary_key.columns)
        columns = [c.name for c in table.columns]
        path = folder / f"{name}.{'csv' if fmt == 'csv' else 'jsonl'}"
        with engine.connect() as conn:
            rows = conn.execution_options(yield_per=BATCH).execute(
                sa_select(table).order_by(*pk))
            if fmt == "csv":
                counts[path.name] = _write_csv(path, columns,
                                               ([_cell(v) for v in r] for r in rows))
            else:
                n = 0
                with path.open("w", encoding="utf-8") as f:
                    for r in rows:
                        f.write(json.dumps(dict(zip(columns, r, strict=True)), default=str)
                                + "\n")
                        n += 1
                counts[path.name] = n
    return counts
