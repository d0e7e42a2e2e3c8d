"""Receivables metrics: aging buckets, DSO, CEI, days to pay and recovery per lane.

Pure functions over `InvoiceFact`s (one invoice as the ledger knows it), used by the CLI,
the manager digest and the benchmark. Any past day's receivables are reconstructed from
issue and paid dates, so every metric can be asked "as of" an earlier `today`.

Currency: the money metrics (`aging_buckets`, `dso`, `cei`, `dso_trend`) sum amounts, so they
take facts in one currency and raise `ValueError` on a mix; split a ledger with
`by_currency` first. `days_to_pay` and `recovery_by_lane` only count invoices and days, so
they accept any mix.

Reconstruction rules (the ledger keeps no payment dates for partial payments):
- a void invoice was never a sale nor a receivable;
- an invoice is receivable from its issue date until the end of the day before `paid_date`
  (the day it was paid in full, or written off for an uncollectible one);
- an open invoice counts at its remaining balance (amount - amount_paid) on every day since
  issue; a closed one at its full amount until the day it closed.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal

from dunning.aging import lane_for
from dunning.model import InvoiceStatus, Lane
from dunning.money import is_currency_code
from dunning.policy import Lanes

_ZERO = Decimal("0")
_TENTH = Decimal("0.1")

AGING_BUCKETS: tuple[str, ...] = ("current", "1-30", "31-60", "61-90", "90+")


@dataclass(frozen=True)
class InvoiceFact:
    """One invoice as the metrics see it: amounts, dates and how it ended."""

    invoice_id: str
    customer_id: str
    currency: str
    amount: Decimal
    issue_date: date
    due_date: date
    paid_date: date | None  # paid in full on (PAID), or written off on (UNCOLLECTIBLE)
    amount_paid: Decimal
    status: InvoiceStatus
    disputed: bool = False
    max_lane: Lane | None = None  # the furthest lane the bot recorded, when known

    def __post_init__(self) -> None:
        if not is_currency_code(self.currency):
            raise ValueError(f"{self.invoice_id}: not an ISO 4217 currency code: "
                             f"{self.currency!r}")
        if self.amount < 0 or self.amount_paid < 0:
            raise ValueError(f"{self.invoice_id}: amounts cannot be negative")
        closed = self.status in (InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE)
        if closed and self.paid_date is None:
            raise ValueError(f"{self.invoice_id}: a {self.status.value} invoice needs the date "
                             "it closed (paid_date)")
        if self.status is InvoiceStatus.OPEN and self.paid_date is not None:
            raise ValueError(f"{self.invoice_id}: an open invoice has no paid_date")

    def outstanding_on(self, day: date) -> Decimal:
        """The receivable balance at the end of `day`, reconstructed from dates."""
        if self.status is InvoiceStatus.VOID or self.issue_date > day:
            return _ZERO
        if self.paid_date is not None and self.paid_date <= day:
            return _ZERO
        if self.status is InvoiceStatus.OPEN:
            return max(self.amount - self.amount_paid, _ZERO)
        return self.amount

    @property
    def is_sale(self) -> bool:
        """Void invoices were never credit sales."""
        return self.status is not InvoiceStatus.VOID


@dataclass(frozen=True)
class DaysToPay:
    """How long paid invoices took: from issue to payment, and past their due date."""

    count: int  # paid invoices (status paid, with a paid date)
    paid_late: int  # ... of which paid after the due date
    mean_days_to_pay: Decimal | None  # issue date -> paid date
    median_days_to_pay: Decimal | None
    mean_days_late: Decimal | None  # paid date - due date, on-time invoices count 0
    median_days_late: Decimal | None
    mean_days_late_when_late: Decimal | None  # over the invoices paid late only

    @property
    def late_share(self) -> float | None:
        """Share of paid invoices paid after their due date (a ratio, not money)."""
        return self.paid_late / self.count if self.count else None


@dataclass(frozen=True)
class LaneRecovery:
    """Invoices that ever reached a lane, and how many of them were then paid."""

    entered: int
    recovered: int
    median_days_to_pay: Decimal | None  # issue -> payment, over the recovered invoices

    @property
    def rate(self) -> float | None:
        return self.recovered / self.entered if self.entered else None


def by_currency(facts: Iterable[InvoiceFact]) -> dict[str, list[InvoiceFact]]:
    """Split a ledger by currency (sorted by code) for the single-currency metrics."""
    groups: dict[str, list[InvoiceFact]] = {}
    for f in facts:
        groups.setdefault(f.currency, []).append(f)
    return dict(sorted(groups.items()))


def _one_currency(facts: Iterable[InvoiceFact]) -> list[InvoiceFact]:
    items = list(facts)
    currencies = sorted({f.currency for f in items})
    if len(currencies) > 1:
        raise ValueError(f"mixed currencies ({', '.join(currencies)}): money metrics take one "
                         "currency at a time; split the facts with by_currency() first")
    return items


def _tenth(value: Decimal) -> Decimal:
    return value.quantize(_TENTH, rounding=ROUND_HALF_UP)


def _days_stat(values: Sequence[int]) -> tuple[Decimal | None, Decimal | None]:
    """(mean, median) of whole days, to one decimal place; (None, None) when empty."""
    if not values:
        return None, None
    mean = _tenth(Decimal(sum(values)) / Decimal(len(values)))
    median = _tenth(Decimal(str(statistics.median(values))))
    return mean, median


def receivables_on(facts: Iterable[InvoiceFact], day: date) -> Decimal:
    """Total receivables at the end of `day` (one currency)."""
    return sum((f.outstanding_on(day) for f in _one_currency(facts)), _ZERO)


def credit_sales(facts: Iterable[InvoiceFact], start: date, end: date) -> Decimal:
    """Amount invoiced from `start` to `end`, both included (one currency; void excluded)."""
    return sum((f.amount for f in _one_currency(facts)
                if f.is_sale and start <= f.issue_date <= end), _ZERO)


def aging_buckets(facts: Iterable[InvoiceFact], today: date) -> dict[str, Decimal]:
    """Open amount due at `today` by days past due: current (not yet due), 1-30, ..., 90+.

    Every bucket is present, in order, zero when empty.
    """
    buckets = dict.fromkeys(AGING_BUCKETS, _ZERO)
    for f in _one_currency(facts):
        balance = f.outstanding_on(today)
        if balance == 0:
            continue
        dpd = (today - f.due_date).days
        if dpd <= 0:
            key = "current"
        elif dpd <= 30:
            key = "1-30"
        elif dpd <= 60:
            key = "31-60"
        elif dpd <= 90:
            key = "61-90"
        else:
            key = "90+"
        buckets[key] += balance
    return buckets


def dso(facts: Iterable[InvoiceFact], today: date, period_days: int = 90) -> Decimal | None:
    """Days sales outstanding: receivables at `today` / credit sales of the period * its days.

    The period is the `period_days` days ending with `today` (today included). One decimal
    place, rounded half up; None when the period has no sales.
    """
    if period_days < 1:
        raise ValueError(f"period_days must be at least 1, got {period_days}")
    items = _one_currency(facts)
    sales = credit_sales(items, today - timedelta(days=period_days - 1), today)
    if sales == 0:
        return None
    return _tenth(receivables_on(items, today) / sales * period_days)


def cei(facts: Iterable[InvoiceFact], start: date, end: date) -> Decimal | None:
    """Collection effectiveness index in percent, for the period `start`..`end` (included).

    (beginning receivables + credit sales - ending total receivables)
    / (beginning receivables + credit sales - ending current receivables) * 100, where the
    beginning receivables are those at the end of the day before `start` and the ending
    current receivables are those not yet past due at `end`. Between 0 and 100; one decimal
    place; None when nothing was collectible (a zero denominator).
    """
    if end < start:
        raise ValueError(f"the period ends ({end}) before it starts ({start})")
    items = _one_currency(facts)
    beginning = receivables_on(items, start - timedelta(days=1))
    sales = credit_sales(items, start, end)
    ending_total = receivables_on(items, end)
    ending_current = sum((f.outstanding_on(end) for f in items if f.due_date >= end), _ZERO)
    collectible = beginning + sales - ending_current
    if collectible == 0:
        return None
    return _tenth((beginning + sales - ending_total) / collectible * 100)


def dso_trend(facts: Iterable[InvoiceFact], today: date, days: int = 30,
              period_days: int = 90) -> list[tuple[date, Decimal | None]]:
    """DSO on each of the `days` days ending with `today`, oldest first (the digest chart)."""
    if days < 1:
        raise ValueError(f"days must be at least 1, got {days}")
    items = _one_currency(facts)
    return [(d, dso(items, d, period_days))
            for d in (today - timedelta(days=back) for back in range(days - 1, -1, -1))]


def days_to_pay(facts: Iterable[InvoiceFact]) -> DaysToPay:
    """Days from issue to payment and days late, over the paid invoices (any currency)."""
    to_pay: list[int] = []
    late: list[int] = []
    for f in facts:
        if f.status is not InvoiceStatus.PAID or f.paid_date is None:
            continue
        to_pay.append((f.paid_date - f.issue_date).days)
        late.append(max((f.paid_date - f.due_date).days, 0))
    late_only = [d for d in late if d > 0]
    mean_pay, median_pay = _days_stat(to_pay)
    mean_late, median_late = _days_stat(late)
    mean_when_late, _ = _days_stat(late_only)
    return DaysToPay(count=len(to_pay), paid_late=len(late_only),
                     mean_days_to_pay=mean_pay, median_days_to_pay=median_pay,
                     mean_days_late=mean_late, median_days_late=median_late,
                     mean_days_late_when_late=mean_when_late)


def recovery_by_lane(facts: Iterable[InvoiceFact], today: date,
                     lanes: Lanes | None = None) -> dict[Lane, LaneRecovery]:
    """Per lane: invoices that ever reached it by `today`, and how many were then paid.

    An invoice reached a lane when it was ever that many days past its contractual due date,
    counted to the day it closed (paid or written off) or to `today` while still open; or
    when the bot recorded it there (`max_lane`), whichever is further. "Recovered" means
    paid by `today`. Every invoice issued by `today` entered the current lane. Void invoices
    and invoices issued after `today` are left out. Keys are every lane, in lane order.
    """
    lanes = lanes or Lanes()
    entered = dict.fromkeys(Lane, 0)
    paid_days: dict[Lane, list[int]] = {lane: [] for lane in Lane}
    for f in facts:
        if not f.is_sale or f.issue_date > today:
            continue
        closed = f.paid_date is not None and f.paid_date <= today
        end = f.paid_date if closed and f.paid_date is not None else today
        reached = lane_for((end - f.due_date).days, lanes)
        if f.max_lane is not None and f.max_lane.rank > reached.rank:
            reached = f.max_lane
        recovered = closed and f.status is InvoiceStatus.PAID
        for lane in Lane:
            if lane.rank <= reached.rank:
                entered[lane] += 1
                if recovered:
                    paid_days[lane].append((end - f.issue_date).days)
    return {lane: LaneRecovery(entered=entered[lane], recovered=len(paid_days[lane]),
                               median_days_to_pay=_days_stat(paid_days[lane])[1])
            for lane in Lane}
