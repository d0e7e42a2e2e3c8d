"""The CSV import format (shared/samples/README.md): every bad row named, nothing partial."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from connectors.csv_source import CsvImportError, Defaults, read_customers, read_invoices
from dunning.model import InvoiceStatus

SAMPLES = Path(__file__).resolve().parents[1] / "data" / "samples"
CUSTOMER_HEADER = ("customer_id,name,country,timezone,currency,arr,health,owner_email,csm_email,"
                   "ap_contact_name,ap_contact_email,strategic,autopay,do_not_contact")
INVOICE_HEADER = ("invoice_id,number,customer_id,issue_date,due_date,currency,amount,amount_paid,"
                  "status,paid_date,payment_link")


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_sample_files_parse_exactly() -> None:
    customers = read_customers(SAMPLES / "customers.csv")
    assert [c.customer_id for c in customers] == ["C-1001", "C-1002", "C-1003", "C-1004"]
    acme = customers[0]
    assert (acme.arr, acme.health, acme.strategic, acme.timezone) == (
        Decimal("312000.00"), 82, True, "America/New_York")
    assert customers[2].autopay and customers[2].health is None
    invoices = read_invoices(SAMPLES / "invoices.csv",
                             known_customers={c.customer_id for c in customers})
    by_id = {i.invoice_id: i for i in invoices}
    assert by_id["INV-5002"].amount - by_id["INV-5002"].amount_paid == Decimal("4000.00")
    assert by_id["INV-5004"].amount == Decimal("18250.50")
    assert by_id["INV-4990"].status is InvoiceStatus.PAID
    assert str(by_id["INV-4990"].paid_date) == "2026-08-19"


def test_column_order_is_free_and_extra_columns_are_ignored(tmp_path: Path) -> None:
    p = write(tmp_path, "customers.csv", "name,extra,customer_id\nAcme,x,C-1\n")
    [c] = read_customers(p, Defaults(country="DE", timezone="Europe/Berlin", currency="EUR"))
    assert (c.customer_id, c.name, c.country, c.currency) == ("C-1", "Acme", "DE", "EUR")


def test_every_bad_row_is_reported_with_file_line_and_reason(tmp_path: Path) -> None:
    p = write(tmp_path, "customers.csv", "\n".join([
        CUSTOMER_HEADER,
        "C-1,Good Co,US,America/New_York,USD,1000,50,a@example.com,,,,false,false,false",
        ",No Id,US,,,,,,,,,,,",
        "C-3,Bad Country,XX,,,,,,,,,,,",
        "C-4,Bad Zone,US,Mars/Base,,,,,,,,,,",
        "C-5,Bad Health,US,,,,150,,,,,,,",
        "C-6,Bad Flag,US,,,,,,,,,maybe,,",
        "C-1,Duplicate,US,,,,,,,,,,,",
        "C-8,Bad Email,US,,,,,not-an-email,,,,,,",
    ]) + "\n")
    with pytest.raises(CsvImportError) as err:
        read_customers(p)
    got = [(x.line, x.reason.split(" ")[0]) for x in err.value.problems]
    assert got == [(3, "customer_id"), (4, "country"), (5, "timezone"), (6, "health"),
                   (7, "strategic"), (8, "duplicate"), (9, "owner_email")]
    assert "customers.csv:3: customer_id is required" in str(err.value)
    assert "nothing was imported" in str(err.value)


def test_bad_invoice_rows(tmp_path: Path) -> None:
    rows = [
        INVOICE_HEADER,
        "I-1,1,C-1,2026-10-01,2026-10-31,USD,100.00,0,open,,",
        "I-2,2,C-404,2026-10-01,2026-10-31,USD,100.00,0,open,,",
        "I-3,3,C-1,2026-10-01,31/10/2026,USD,100.00,0,open,,",
        "I-4,4,C-1,2026-10-01,2026-10-31,USD,-5,0,open,,",
        "I-5,5,C-1,2026-10-01,2026-10-31,USD,100.001,0,open,,",
        "I-6,6,C-1,2026-10-01,2026-10-31,USD,100,200,open,,",
        "I-7,7,C-1,2026-10-01,2026-10-31,USD,100,0,pending,,",
        "I-8,8,C-1,2026-10-31,2026-10-01,USD,100,0,open,,",
        "I-9,9,C-1,2026-10-01,2026-10-31,JPY,100.5,0,open,,",
        "I-10,10,C-1,2026-10-01,2026-10-31,USD,100,0,open,2026-10-20,",
        "I-11,11,C-1,2026-10-01,2026-10-31,USD,abc,0,open,,",
        "I-12,12,C-1,2026-10-01,2026-10-31,USD,100,0,open,,ftp://x",
    ]
    p = write(tmp_path, "invoices.csv", "\n".join(rows) + "\n")
    with pytest.raises(CsvImportError) as err:
        read_invoices(p, known_customers={"C-1"})
    lines = [x.line for x in err.value.problems]
    assert lines == list(range(3, 14))
    text = str(err.value)
    assert "unknown customer_id 'C-404'" in text
    assert "'31/10/2026' is not a date in YYYY-MM-DD form" in text
    assert "too many for JPY" in text


def test_missing_required_header_column_is_one_clear_problem(tmp_path: Path) -> None:
    p = write(tmp_path, "invoices.csv", "invoice_id,customer_id,amount\nI-1,C-1,5\n")
    with pytest.raises(CsvImportError) as err:
        read_invoices(p, known_customers={"C-1"})
    assert str(err.value.problems[0]) == (
        "invoices.csv:1: header lacks required column(s): issue_date, due_date")


def test_non_utf8_and_ragged_rows_are_reported(tmp_path: Path) -> None:
    p = tmp_path / "customers.csv"
    p.write_bytes(b"customer_id,name\nC-1,Caf\xe9 SARL\n")
    with pytest.raises(CsvImportError, match="not UTF-8"):
        read_customers(p)
    q = write(tmp_path, "c2.csv", "customer_id,name\nC-1,A,extra\n")
    with pytest.raises(CsvImportError, match=r"c2\.csv:2: more values than header columns"):
        read_customers(q)


def test_utf8_bom_and_blank_lines_are_accepted(tmp_path: Path) -> None:
    p = tmp_path / "customers.csv"
    p.write_bytes("\ufeffcustomer_id,name\n\nC-1,Café SARL\n".encode())
    [c] = read_customers(p)
    assert c.name == "Café SARL"


def test_paid_row_without_amount_paid_counts_as_paid_in_full(tmp_path: Path) -> None:
    p = write(tmp_path, "invoices.csv",
              INVOICE_HEADER + "\nI-1,1,C-1,2026-10-01,2026-10-31,USD,100,,paid,2026-11-02,\n")
    [i] = read_invoices(p, known_customers={"C-1"})
    assert i.amount_paid == Decimal("100.00") and i.status is InvoiceStatus.PAID
