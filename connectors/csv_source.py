"""The embedded default billing source: an aging-report export as two CSV files.

Format: shared/samples/README.md (exact header names, free column order, extra columns
ignored, UTF-8). Every bad row is reported with its file, line and reason, and a file with
any bad row imports nothing: `read_customers` / `read_invoices` raise `CsvImportError`.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import TypeVar

from dunning.calendar import is_supported_country, is_valid_timezone
from dunning.model import CustomerContext, InvoiceRecord, InvoiceStatus
from dunning.money import MoneyError, is_currency_code, parse_amount

T = TypeVar("T")

CUSTOMER_COLUMNS = (
    "customer_id", "name", "country", "timezone", "currency", "arr", "health", "owner_email",
    "csm_email", "ap_contact_name", "ap_contact_email", "strategic", "autopay", "do_not_contact",
)
INVOICE_COLUMNS = (
    "invoice_id", "number", "customer_id", "issue_date", "due_date", "currency", "amount",
    "amount_paid", "status", "paid_date", "payment_link",
)
_REQUIRED_CUSTOMER = ("customer_id", "name")
_REQUIRED_INVOICE = ("invoice_id", "customer_id", "issue_date", "due_date", "amount")
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MAX_ERRORS_SHOWN = 50


@dataclass(frozen=True)
class RowProblem:
    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


class CsvImportError(ValueError):
    """One or more rows are bad; nothing from the file was imported."""

    def __init__(self, problems: list[RowProblem]) -> None:
        self.problems = problems
        shown = "\n".join(f"  {p}" for p in problems[:_MAX_ERRORS_SHOWN])
        more = len(problems) - _MAX_ERRORS_SHOWN
        tail = f"\n  ... and {more} more" if more > 0 else ""
        files = sorted({p.file for p in problems})
        super().__init__(
            f"{len(problems)} bad row(s) in {', '.join(files)}; nothing was imported:\n"
            f"{shown}{tail}")


@dataclass(frozen=True)
class Defaults:
    """The company's own country, time zone and currency, used where a column is empty."""

    country: str = "US"
    timezone: str = "UTC"
    currency: str = "USD"


class _Row:
    """One CSV row with typed getters that record problems instead of raising."""

    def __init__(self, file: str, line: int, data: dict[str, str], problems: list[RowProblem]):
        self.file, self.line, self.data, self.problems = file, line, data, problems
        self.ok = True

    def bad(self, reason: str) -> None:
        self.ok = False
        self.problems.append(RowProblem(self.file, self.line, reason))

    def text(self, col: str, *, required: bool = False) -> str | None:
        value = (self.data.get(col) or "").strip()
        if not value:
            if required:
                self.bad(f"{col} is required")
            return None
        return value

    def date_(self, col: str, *, required: bool = False) -> date | None:
        value = self.text(col, required=required)
        if value is None:
            return None
        try:
            if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", value):
                raise ValueError
            return date.fromisoformat(value)
        except ValueError:
            self.bad(f"{col} {value!r} is not a date in YYYY-MM-DD form")
            return None

    def money(self, col: str, currency: str, *, required: bool = False) -> Decimal | None:
        value = self.text(col, required=required)
        if value is None:
            return None
        try:
            return parse_amount(value, currency)
        except MoneyError as exc:
            self.bad(f"{col}: {exc}")
            return None

    def flag(self, col: str) -> bool:
        value = (self.text(col) or "false").lower()
        if value in ("true", "yes", "1"):
            return True
        if value in ("false", "no", "0"):
            return False
        self.bad(f"{col} {value!r} must be true or false")
        return False

    def email(self, col: str) -> str | None:
        value = self.text(col)
        if value is not None and not _EMAIL.match(value):
            self.bad(f"{col} {value!r} is not an email address")
            return None
        return value.lower() if value else None


def _rows(path: Path, required: tuple[str, ...],
          problems: list[RowProblem]) -> Iterator[tuple[int, dict[str, str]]]:
    name = path.name
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        problems.append(RowProblem(name, 0, f"cannot open file: {exc.strerror or exc}"))
        return
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in (reader.fieldnames or [])]
            if not header:
                problems.append(RowProblem(name, 1, "the file is empty: expected a header row"))
                return
            reader.fieldnames = header
            missing = [c for c in required if c not in header]
            if missing:
                problems.append(RowProblem(name, 1, "header lacks required column(s): "
                                           + ", ".join(missing)))
                return
            dupes = sorted({h for h in header if header.count(h) > 1 and h})
            if dupes:
                problems.append(RowProblem(name, 1, "header repeats column(s): "
                                           + ", ".join(dupes)))
                return
            start = 2
            for row in reader:
                if None in row:
                    problems.append(RowProblem(name, start, "more values than header columns"))
                elif any((v or "").strip() for v in row.values()):
                    yield start, {k: (v or "") for k, v in row.items()}
                start = reader.line_num + 1
        except UnicodeDecodeError as exc:
            problems.append(RowProblem(name, 0, f"not UTF-8 text ({exc.reason} at byte "
                                       f"{exc.start}); export the file as UTF-8"))
        except csv.Error as exc:
            problems.append(RowProblem(name, reader.line_num, f"malformed CSV: {exc}"))


def _read(path: Path, required: tuple[str, ...], parse: Callable[[_Row], T | None],
          key: Callable[[T], str]) -> list[T]:
    problems: list[RowProblem] = []
    out: list[T] = []
    first_line: dict[str, int] = {}
    for line, data in _rows(path, required, problems):
        row = _Row(path.name, line, data, problems)
        item = parse(row)
        if item is None or not row.ok:
            continue
        k = key(item)
        if k in first_line:
            row.bad(f"duplicate id {k!r} (first on line {first_line[k]})")
            continue
        first_line[k] = line
        out.append(item)
    if problems:
        raise CsvImportError(problems)
    return out


def read_customers(path: Path, defaults: Defaults = Defaults()) -> list[CustomerContext]:
    def parse(row: _Row) -> CustomerContext | None:
        cid = row.text("customer_id", required=True)
        name = row.text("name", required=True)
        country = (row.text("country") or defaults.country).upper()
        if not (len(country) == 2 and country.isalpha()):
            row.bad(f"country {country!r} is not an ISO 3166-1 alpha-2 code such as 'DE'")
        elif not is_supported_country(country):
            row.bad(f"country {country!r} is not a known ISO 3166-1 alpha-2 code")
        tz = row.text("timezone") or defaults.timezone
        if not is_valid_timezone(tz):
            row.bad(f"timezone {tz!r} is not an IANA time zone such as 'Europe/Berlin'")
        currency = (row.text("currency") or defaults.currency).upper()
        if not is_currency_code(currency):
            row.bad(f"currency {currency!r} is not an ISO 4217 code such as 'EUR'")
            currency = defaults.currency
        arr = row.money("arr", currency)
        if arr is not None and arr < 0:
            row.bad("arr must not be negative")
        health: int | None = None
        if (h := row.text("health")) is not None:
            if h.isdigit() and 0 <= int(h) <= 100:
                health = int(h)
            else:
                row.bad(f"health {h!r} must be a whole number from 0 to 100")
        owner, csm = row.email("owner_email"), row.email("csm_email")
        ap_email = row.email("ap_contact_email")
        strategic, autopay, dnc = row.flag("strategic"), row.flag("autopay"), \
            row.flag("do_not_contact")
        if cid is None or name is None:
            return None
        return CustomerContext(
            customer_id=cid, name=name, country=country, timezone=tz, currency=currency,
            arr=arr, health=health, owner_email=owner, csm_email=csm,
            ap_contact_name=row.text("ap_contact_name"), ap_contact_email=ap_email,
            strategic=strategic, autopay=autopay, do_not_contact=dnc,
        )

    return _read(path, _REQUIRED_CUSTOMER, parse, lambda c: c.customer_id)


def read_invoices(path: Path, *, known_customers: Collection[str],
                  customer_currency: Callable[[str], str | None] = lambda _: None
                  ) -> list[InvoiceRecord]:
    """Parse invoices; `known_customers` are the ids in the customers file or the ledger."""

    def parse(row: _Row) -> InvoiceRecord | None:
        iid = row.text("invoice_id", required=True)
        cid = row.text("customer_id", required=True)
        if cid is not None and cid not in known_customers:
            row.bad(f"unknown customer_id {cid!r}: not in the customers file nor the ledger")
        issue, due = row.date_("issue_date", required=True), row.date_("due_date", required=True)
        if issue and due and due < issue:
            row.bad(f"due_date {due} is before issue_date {issue}")
        currency = (row.text("currency") or (customer_currency(cid) if cid else None) or "")
        currency = currency.upper()
        if not currency:
            row.bad("currency is required (no default from the customer)")
            return None
        if not is_currency_code(currency):
            row.bad(f"currency {currency!r} is not an ISO 4217 code such as 'EUR'")
            return None
        amount = row.money("amount", currency, required=True)
        if amount is not None and amount <= 0:
            row.bad(f"amount must be greater than 0, got {amount}")
        paid = row.money("amount_paid", currency) or Decimal("0")
        if paid < 0:
            row.bad(f"amount_paid must not be negative, got {paid}")
        if amount is not None and amount > 0 and paid > amount:
            row.bad(f"amount_paid {paid} is more than amount {amount}")
        raw_status = (row.text("status") or "open").lower()
        try:
            status = InvoiceStatus(raw_status)
        except ValueError:
            row.bad(f"status {raw_status!r} must be one of: open, paid, void, uncollectible")
            status = InvoiceStatus.OPEN
        paid_date = row.date_("paid_date")
        if status is InvoiceStatus.PAID and amount is not None and 0 < paid < amount:
            row.bad(f"status is paid but amount_paid {paid} is less than amount {amount}")
        if status is InvoiceStatus.PAID and paid == 0 and amount is not None:
            paid = amount  # a paid row with no amount_paid was paid in full
        if paid_date and issue and paid_date < issue:
            row.bad(f"paid_date {paid_date} is before issue_date {issue}")
        if paid_date and status is InvoiceStatus.OPEN:
            row.bad("paid_date is set but status is open (paid_date means fully paid)")
        link = row.text("payment_link")
        if link and not link.startswith(("https://", "http://")):
            row.bad(f"payment_link {link!r} must be an http(s) URL")
        if iid is None or cid is None or issue is None or due is None or amount is None:
            return None
        return InvoiceRecord(
            invoice_id=iid, number=row.text("number") or iid, customer_id=cid,
            issue_date=issue, due_date=due, currency=currency, amount=amount, amount_paid=paid,
            status=status, paid_date=paid_date, payment_link=link,
        )

    return _read(path, _REQUIRED_INVOICE, parse, lambda i: i.invoice_id)
