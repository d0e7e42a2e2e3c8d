"""Receivables metrics against small ledgers computed by hand, plus invariants."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dunning.metrics import (
    AGING_BUCKETS,
    InvoiceFact,
    aging_buckets,
    by_currency,
    cei,
    credit_sales,
    days_to_pay,
    dso,
    dso_trend,
    receivables_on,
    recovery_by_lane,
)
from dunning.model import InvoiceStatus, Lane
from dunning.policy import Lanes

D = Decimal
TODAY = date(2024, 3, 31)


def fact(invoice_id: str, issue: date, due: date, amount: str, *,
         status: InvoiceStatus = InvoiceStatus.OPEN, paid: date | None = None,
         amount_paid: str | None = None, currency: str = "USD",
         max_lane: Lane | None = None) -> InvoiceFact:
    if amount_paid is None:
        amount_paid = amount if status is InvoiceStatus.PAID else "0"
    return InvoiceFact(invoice_id=invoice_id, customer_id="C1", currency=currency,
                       amount=D(amount), issue_date=issue, due_date=due, paid_date=paid,
                       amount_paid=D(amount_paid), status=status, max_lane=max_lane)


# The hand-computed ledger, as of 2024-03-31 (2024 is a leap year: February has 29 days).
#   id  issued      due         amount  how it stands on 03-31                 days past due
#   A1  2024-01-01  2024-01-31  1000    paid 02-15 (45 days, 15 late)          closed
#   A2  2024-02-01  2024-03-02   500    open, 200 paid: 300 left               29 -> 1-30
#   A3  2024-03-10  2024-04-09  2000    open                                   -9 -> current
#   A4  2023-12-01  2023-12-31   800    open                                   91 -> 90+
#   A5  2024-01-05  2024-01-20   400    open                                   71 -> 61-90
#   A6  2024-02-01  2024-02-15   100    void: never a sale nor a receivable    -
#   A7  2024-01-15  2024-02-14   600    paid 04-05, after "today": still open  46 -> 31-60
#   A8  2024-02-10  2024-03-11   300    paid 03-01 (20 days, on time)          closed
LEDGER = [
    fact("A1", date(2024, 1, 1), date(2024, 1, 31), "1000", status=InvoiceStatus.PAID,
         paid=date(2024, 2, 15)),
    fact("A2", date(2024, 2, 1), date(2024, 3, 2), "500", amount_paid="200"),
    fact("A3", date(2024, 3, 10), date(2024, 4, 9), "2000"),
    fact("A4", date(2023, 12, 1), date(2023, 12, 31), "800"),
    fact("A5", date(2024, 1, 5), date(2024, 1, 20), "400"),
    fact("A6", date(2024, 2, 1), date(2024, 2, 15), "100", status=InvoiceStatus.VOID),
    fact("A7", date(2024, 1, 15), date(2024, 2, 14), "600", status=InvoiceStatus.PAID,
         paid=date(2024, 4, 5)),
    fact("A8", date(2024, 2, 10), date(2024, 3, 11), "300", status=InvoiceStatus.PAID,
         paid=date(2024, 3, 1)),
]


def test_aging_buckets_put_each_open_balance_in_its_days_past_due_bucket() -> None:
    # current: A3 2000; 1-30: A2 300 (500 - 200 paid); 31-60: A7 600 (paid only after
    # today); 61-90: A5 400; 90+: A4 800. A1 and A8 are paid, A6 is void.
    assert aging_buckets(LEDGER, TODAY) == {
        "current": D("2000"), "1-30": D("300"), "31-60": D("600"), "61-90": D("400"),
        "90+": D("800"),
    }


def test_aging_buckets_are_all_present_and_zero_for_an_empty_ledger() -> None:
    assert aging_buckets([], TODAY) == dict.fromkeys(AGING_BUCKETS, D("0"))


def test_aging_bucket_edges_are_30_60_and_90_days_past_due() -> None:
    # Due on 03-01, 03-31 - 30 days, etc.: exactly 30, 60, 90 stay in the lower bucket.
    ledger = [fact(f"E{n}", date(2023, 10, 1), TODAY - timedelta(days=n), "1")
              for n in (0, 1, 30, 31, 60, 61, 90, 91)]
    assert aging_buckets(ledger, TODAY) == {
        "current": D("1"), "1-30": D("2"), "31-60": D("2"), "61-90": D("2"), "90+": D("1"),
    }


def test_dso_divides_receivables_by_the_period_sales_times_its_days() -> None:
    # Period: the 90 days ending 03-31 = 01-02 .. 03-31 (30 + 29 + 31 days).
    # Sales in it: A2 500 + A3 2000 + A5 400 + A7 600 + A8 300 = 3800 (A1 was issued on
    # 01-01, one day early; A6 is void). Receivables on 03-31: 2000+300+600+400+800 = 4100.
    # DSO = 4100 / 3800 * 90 = 97.105... -> 97.1
    assert credit_sales(LEDGER, date(2024, 1, 2), TODAY) == D("3800")
    assert receivables_on(LEDGER, TODAY) == D("4100")
    assert dso(LEDGER, TODAY) == D("97.1")


def test_dso_over_a_shorter_period_counts_only_its_sales() -> None:
    # 30 days ending 03-31 = 03-02 .. 03-31: sales A3 2000. 4100 / 2000 * 30 = 61.5
    assert dso(LEDGER, TODAY, period_days=30) == D("61.5")


def test_dso_is_none_without_sales_in_the_period() -> None:
    assert dso(LEDGER, date(2025, 12, 31)) is None
    assert dso([], TODAY) is None


def test_cei_compares_what_was_collected_with_what_could_be() -> None:
    # Q1 2024. Beginning receivables (end of 2023-12-31): A4 800.
    # Sales 01-01 .. 03-31: A1 1000 + A2 500 + A3 2000 + A5 400 + A7 600 + A8 300 = 4800.
    # Ending total receivables: 4100. Ending current (not past due on 03-31): A3 2000.
    # CEI = (800 + 4800 - 4100) / (800 + 4800 - 2000) * 100 = 1500 / 3600 = 41.666.. -> 41.7
    assert cei(LEDGER, date(2024, 1, 1), TODAY) == D("41.7")


def test_cei_is_100_when_everything_due_was_collected() -> None:
    ledger = [fact("P", date(2024, 1, 1), date(2024, 1, 31), "100",
                   status=InvoiceStatus.PAID, paid=date(2024, 1, 20)),
              fact("N", date(2024, 3, 1), date(2024, 4, 30), "50")]
    # (0 + 150 - 50) / (0 + 150 - 50) * 100 = 100
    assert cei(ledger, date(2024, 1, 1), TODAY) == D("100.0")


def test_cei_is_none_when_nothing_was_collectible() -> None:
    assert cei([], date(2024, 1, 1), TODAY) is None


def test_cei_rejects_a_period_that_ends_before_it_starts() -> None:
    with pytest.raises(ValueError, match="ends"):
        cei(LEDGER, TODAY, date(2024, 1, 1))


def test_dso_trend_gives_one_point_per_day_oldest_first() -> None:
    trend = dso_trend(LEDGER, TODAY, days=3)
    assert [d for d, _ in trend] == [date(2024, 3, 29), date(2024, 3, 30), TODAY]
    assert trend[-1] == (TODAY, D("97.1"))
    # 03-01 (90 days from 2023-12-03): sales A1 1000 + A2 500 + A5 400 + A7 600 + A8 300
    # = 2800. Receivables at the end of 03-01: A2 300 + A4 800 + A5 400 + A7 600 = 2100
    # (A1 paid 02-15, A8 paid that day, A3 not yet issued). 2100 / 2800 * 90 = 67.5
    assert dso_trend(LEDGER, date(2024, 3, 1), days=1) == [(date(2024, 3, 1), D("67.5"))]


def test_days_to_pay_summarises_paid_invoices_only() -> None:
    # Paid: A1 45 days (15 late), A7 81 days (51 late), A8 20 days (on time).
    # Mean to pay (45 + 81 + 20) / 3 = 48.67 -> 48.7, median 45. Days late 15, 51, 0: mean 22.0,
    # median 15; over the two late ones (15 + 51) / 2 = 33.0.
    summary = days_to_pay(LEDGER)
    assert summary.count == 3
    assert summary.paid_late == 2
    assert summary.late_share == pytest.approx(2 / 3)
    assert summary.mean_days_to_pay == D("48.7")
    assert summary.median_days_to_pay == D("45.0")
    assert summary.mean_days_late == D("22.0")
    assert summary.median_days_late == D("15.0")
    assert summary.mean_days_late_when_late == D("33.0")


def test_days_to_pay_is_empty_without_paid_invoices() -> None:
    summary = days_to_pay([])
    assert summary.count == 0
    assert summary.late_share is None
    assert summary.mean_days_to_pay is None
    assert summary.mean_days_late_when_late is None


def test_recovery_by_lane_counts_invoices_that_reached_each_lane_and_were_paid() -> None:
    # Furthest days past due (to the paid date, or to today while open), default lanes:
    #   A1 15 (paid) -> late; A2 29 -> late; A3 -9 -> current; A4 91 -> critical;
    #   A5 71 -> critical; A7 46 (paid only after today) -> critical; A8 -10 (paid) -> current.
    # current: 7 entered, A1 + A8 recovered, median days to pay (45 + 20) / 2 = 32.5
    # early:   A1 A2 A4 A5 A7 = 5, A1 recovered (45 days); late: the same 5, A1;
    # critical: A4 A5 A7 = 3, none recovered.
    result = recovery_by_lane(LEDGER, TODAY)
    assert list(result) == [Lane.CURRENT, Lane.EARLY, Lane.LATE, Lane.CRITICAL]
    assert [(r.entered, r.recovered) for r in result.values()] == [(7, 2), (5, 1), (5, 1),
                                                                   (3, 0)]
    assert result[Lane.CURRENT].median_days_to_pay == D("32.5")
    assert result[Lane.LATE].median_days_to_pay == D("45.0")
    assert result[Lane.CRITICAL].median_days_to_pay is None
    assert result[Lane.CURRENT].rate == pytest.approx(2 / 7)
    assert result[Lane.CRITICAL].rate == 0.0


def test_recovery_by_lane_follows_the_policy_lanes() -> None:
    # With late from day 30 and critical from day 60, A1 (15) and A2 (29) stay early, and
    # A7 (46) becomes late.
    result = recovery_by_lane(LEDGER, TODAY, Lanes(early=1, late=30, critical=60))
    assert [(r.entered, r.recovered) for r in result.values()] == [(7, 2), (5, 1), (3, 0),
                                                                   (2, 0)]


def test_a_lane_the_bot_recorded_counts_even_when_the_dates_say_less() -> None:
    # Paid on time, but its automatic charge failed and the bot moved it to the early lane.
    paid = fact("F", date(2024, 3, 1), date(2024, 3, 31), "10", status=InvoiceStatus.PAID,
                paid=date(2024, 3, 20), max_lane=Lane.EARLY)
    result = recovery_by_lane([paid], TODAY)
    assert result[Lane.EARLY].entered == 1
    assert result[Lane.EARLY].recovered == 1
    assert result[Lane.LATE].entered == 0


def test_a_written_off_invoice_entered_its_lanes_but_was_not_recovered() -> None:
    written_off = fact("W", date(2023, 11, 1), date(2023, 12, 1), "10",
                       status=InvoiceStatus.UNCOLLECTIBLE, paid=date(2024, 2, 1))
    result = recovery_by_lane([written_off], TODAY)
    assert result[Lane.CRITICAL].entered == 1
    assert result[Lane.CRITICAL].recovered == 0
    assert receivables_on([written_off], date(2024, 1, 31)) == D("10")
    assert receivables_on([written_off], date(2024, 2, 1)) == D("0")


def test_money_metrics_refuse_mixed_currencies() -> None:
    mixed = [*LEDGER, fact("E1", date(2024, 3, 1), date(2024, 3, 31), "5", currency="EUR")]
    for compute in (lambda: aging_buckets(mixed, TODAY), lambda: dso(mixed, TODAY),
                    lambda: cei(mixed, date(2024, 1, 1), TODAY),
                    lambda: dso_trend(mixed, TODAY)):
        with pytest.raises(ValueError, match="mixed currencies"):
            compute()


def test_by_currency_splits_a_ledger_for_the_money_metrics() -> None:
    euro = fact("E1", date(2024, 3, 1), date(2024, 4, 30), "5", currency="EUR")
    groups = by_currency([*LEDGER, euro])
    assert list(groups) == ["EUR", "USD"]
    assert aging_buckets(groups["EUR"], TODAY)["current"] == D("5")
    assert dso(groups["USD"], TODAY) == D("97.1")


def test_a_paid_invoice_needs_its_paid_date() -> None:
    with pytest.raises(ValueError, match="paid_date"):
        fact("X", TODAY, TODAY, "1", status=InvoiceStatus.PAID)


def test_an_open_invoice_has_no_paid_date() -> None:
    with pytest.raises(ValueError, match="open invoice"):
        fact("X", TODAY, TODAY, "1", paid=TODAY)


def test_an_invoice_fact_needs_a_currency_code() -> None:
    with pytest.raises(ValueError, match="currency"):
        fact("X", TODAY, TODAY, "1", currency="usd")


# --- invariants ----------------------------------------------------------------------------

BASE = date(2024, 1, 1)


@st.composite
def facts(draw: st.DrawFn) -> InvoiceFact:
    issue = BASE + timedelta(days=draw(st.integers(0, 200)))
    due = issue + timedelta(days=draw(st.integers(0, 60)))
    amount = D(draw(st.integers(0, 1_000_000))) / 100
    status = draw(st.sampled_from(list(InvoiceStatus)))
    paid: date | None = None
    amount_paid = D(0)
    if status in (InvoiceStatus.PAID, InvoiceStatus.UNCOLLECTIBLE):
        paid = issue + timedelta(days=draw(st.integers(0, 150)))
        amount_paid = amount if status is InvoiceStatus.PAID else D(0)
    elif status is InvoiceStatus.OPEN:
        amount_paid = amount * draw(st.integers(0, 100)) / 100
    return InvoiceFact(invoice_id=f"I{draw(st.integers(0, 10**6))}", customer_id="C",
                       currency="USD", amount=amount, issue_date=issue, due_date=due,
                       paid_date=paid, amount_paid=amount_paid, status=status)


ledgers = st.lists(facts(), max_size=25)
days = st.integers(0, 400).map(lambda n: BASE + timedelta(days=n))


@given(ledgers, days)
def test_aging_buckets_add_up_to_the_receivables(ledger: list[InvoiceFact], today: date) -> None:
    buckets = aging_buckets(ledger, today)
    assert all(v >= 0 for v in buckets.values())
    assert sum(buckets.values()) == receivables_on(ledger, today)


@given(ledgers, days, days)
def test_cei_stays_between_0_and_100(ledger: list[InvoiceFact], a: date, b: date) -> None:
    start, end = min(a, b), max(a, b)
    value = cei(ledger, start, end)
    assert value is None or D(0) <= value <= D(100)


@given(ledgers, days, st.integers(1, 120))
def test_dso_is_none_exactly_when_the_period_has_no_sales(
        ledger: list[InvoiceFact], today: date, period: int) -> None:
    value = dso(ledger, today, period)
    sales = credit_sales(ledger, today - timedelta(days=period - 1), today)
    assert (value is None) == (sales == 0)
    assert value is None or value >= 0


@given(ledgers, days)
def test_recovery_never_grows_with_the_lane_and_never_exceeds_entries(
        ledger: list[InvoiceFact], today: date) -> None:
    rows = list(recovery_by_lane(ledger, today).values())
    assert all(r.recovered <= r.entered for r in rows)
    assert all(a.entered >= b.entered for a, b in pairwise(rows))
    assert all(a.recovered >= b.recovered for a, b in pairwise(rows))


@given(ledgers)
def test_days_to_pay_counts_each_paid_invoice_once(ledger: list[InvoiceFact]) -> None:
    summary = days_to_pay(ledger)
    assert summary.count == sum(1 for f in ledger if f.status is InvoiceStatus.PAID)
    assert 0 <= summary.paid_late <= summary.count
