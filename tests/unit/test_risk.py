"""Risk score, chronic and first-time lateness, sensitivity and tone."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import date
from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from dunning.metrics import InvoiceFact
from dunning.model import CustomerContext, InvoiceStatus, PaymentHistory, Tone
from dunning.policy import DEFAULT_POLICY, Chronic, Sensitivity
from dunning.risk import (
    HISTORY_MAX,
    RiskAssessment,
    assess,
    auc,
    backtest,
    history_from_facts,
    history_points,
    is_chronic_late,
    sensitivity_reasons,
    spearman,
    tone_for,
)

D = Decimal
POLICY = DEFAULT_POLICY
ACME = CustomerContext(customer_id="C1", name="Acme")
PUNCTUAL = PaymentHistory(invoices_paid=12)
# 9 of 12 late (75%), 126 days late in all: 14 days when late, 10.5 per settled invoice.
CHRONIC = PaymentHistory(invoices_paid=12, paid_late=9, days_late_total=126, disputes=2)


def risk(history: PaymentHistory = PUNCTUAL, customer: CustomerContext = ACME, *,
         amount_due: str = "100", days_past_due: int = 3) -> RiskAssessment:
    return assess(customer, history, amount_due=D(amount_due), days_past_due=days_past_due,
                  policy=POLICY)


def points_in(reasons: tuple[str, ...]) -> int:
    return sum(int(m.group(1)) for r in reasons if (m := re.search(r": \+(\d+)$", r)))


def test_chronic_late_payer_scores_higher_than_punctual_one() -> None:
    assert risk(CHRONIC).score > risk(PUNCTUAL).score + 30


def test_the_reasons_add_up_to_the_score() -> None:
    a = risk(CHRONIC, replace(ACME, health=30, arr=D("40000")), amount_due="12000",
             days_past_due=31)
    assert points_in(a.reasons) == a.score


def test_a_full_assessment_reads_as_numbers_a_person_can_check() -> None:
    a = risk(CHRONIC, replace(ACME, health=30, arr=D("40000")), amount_due="12000",
             days_past_due=31)
    # late share 25 x 0.75 = 18.75 -> 19; days late 10.5 per invoice >= 10 -> 10;
    # disputes 2/12 = 16.7% of the 50% for full -> 5 x 0.333 = 1.67 -> 2; late lane 16;
    # 12,000 is 30% of ARR, over the 25% for full -> 15; health 30 -> 10 x 0.7 = 7.
    assert a.reasons == (
        "9 of 12 settled invoices paid late (75%): +19",
        "31 days past due (late lane, from day 15): +16",
        "amount due 12,000.00 USD is 30% of ARR 40,000.00 USD: +15",
        "settled invoices paid 10.5 days late on average, on-time ones counting 0: +10",
        "health 30 of 100: +7",
        "2 disputes over 12 settled invoices (17%): +2",
        "chronic late payer: 75% of 12 settled invoices paid late (at least 50%), 14.0 days "
        "late on average (at least 5.0)",
    )
    assert a.score == 19 + 16 + 15 + 10 + 7 + 2
    assert a.chronic_late
    assert not a.first_time_late


def test_reasons_list_the_biggest_contribution_first() -> None:
    a = risk(PaymentHistory(invoices_paid=10, paid_late=1, days_late_total=2),
             days_past_due=60)
    assert a.reasons[0].startswith("60 days past due (critical lane")
    assert a.reasons[1].startswith("1 of 10 settled invoices paid late")


def test_punctual_customer_is_first_time_late_and_says_so() -> None:
    a = risk(PUNCTUAL)
    assert a.first_time_late
    assert not a.chronic_late
    assert "no late payment in 12 settled invoices" in a.reasons


def test_a_new_customer_is_first_time_late_with_little_history() -> None:
    a = risk(PaymentHistory())
    assert a.first_time_late
    assert not a.chronic_late
    assert a.reasons == (
        "3 days past due (early lane, from day 1): +8",
        "little payment history (0 settled invoices, fewer than 3): invoice history counts "
        "half",
    )


def test_little_history_halves_the_invoice_points_and_says_so() -> None:
    thin = PaymentHistory(invoices_paid=2, paid_late=2, days_late_total=40)
    # Late share 25 x 1.0 x 0.5 = 12.5 -> 13; days late 20 per invoice -> 10 x 0.5 = 5.
    assert history_points(thin, POLICY) == 18
    a = risk(thin)
    assert "little payment history (2 settled invoices, fewer than 3): invoice history " \
           "counts half" in a.reasons
    assert not a.chronic_late  # 2 settled invoices are fewer than min_invoices


def test_broken_promises_count_in_full_even_with_little_history() -> None:
    assert history_points(PaymentHistory(broken_promises=1), POLICY) == 5
    assert "1 broken promise to pay: +5" in risk(PaymentHistory(broken_promises=1)).reasons
    assert history_points(PaymentHistory(broken_promises=5), POLICY) == 10


def test_one_late_payment_breaks_the_first_time_late_status() -> None:
    a = risk(PaymentHistory(invoices_paid=12, paid_late=1, days_late_total=3))
    assert not a.first_time_late
    assert not a.chronic_late


def test_a_broken_promise_breaks_the_first_time_late_status() -> None:
    assert not risk(PaymentHistory(invoices_paid=12, broken_promises=1)).first_time_late


def test_half_late_by_five_days_on_average_is_chronic_at_the_defaults() -> None:
    # 3 of 6 late = 50%, 15 days late in all = 5.0 on average: both thresholds met exactly.
    assert is_chronic_late(PaymentHistory(invoices_paid=6, paid_late=3, days_late_total=15),
                           POLICY)
    # 14 days: 4.67 on average, below 5.
    assert not is_chronic_late(PaymentHistory(invoices_paid=6, paid_late=3,
                                              days_late_total=14), POLICY)
    # 2 of 6: 33% late, however late.
    assert not is_chronic_late(PaymentHistory(invoices_paid=6, paid_late=2,
                                              days_late_total=60), POLICY)


def test_two_broken_promises_make_a_chronic_late_payer_without_any_late_invoice() -> None:
    a = risk(PaymentHistory(invoices_paid=12, broken_promises=2))
    assert a.chronic_late
    assert "chronic late payer: 2 broken promises to pay (at least 2)" in a.reasons


def test_chronic_thresholds_come_from_the_policy() -> None:
    history = PaymentHistory(invoices_paid=6, paid_late=2, days_late_total=6)
    strict = replace(POLICY, chronic=Chronic(min_invoices=3, late_share=0.3,
                                             average_days_late=3.0, broken_promises=2))
    assert not is_chronic_late(history, POLICY)
    assert is_chronic_late(history, strict)


def test_a_zero_broken_promise_threshold_turns_the_promise_rule_off() -> None:
    off = replace(POLICY, chronic=replace(POLICY.chronic, broken_promises=0))
    assert not is_chronic_late(PaymentHistory(invoices_paid=12), off)


def test_lateness_rule_needs_a_late_invoice_even_with_zero_thresholds() -> None:
    zero = replace(POLICY, chronic=Chronic(min_invoices=0, late_share=0.0,
                                           average_days_late=0.0, broken_promises=2))
    assert not is_chronic_late(PaymentHistory(), zero)
    assert not is_chronic_late(PaymentHistory(invoices_paid=4), zero)


def test_current_invoice_adds_no_exposure() -> None:
    assert risk(PUNCTUAL, days_past_due=-3).score == 0
    assert risk(PUNCTUAL, days_past_due=-3).reasons == ("no late payment in 12 settled invoices",)


def test_exposure_follows_the_policy_lanes() -> None:
    assert risk(days_past_due=1).score == 8
    assert risk(days_past_due=15).score == 16
    assert risk(days_past_due=45).score == 25


def test_amount_is_weighed_against_arr_when_known() -> None:
    # 2,000 of 40,000 = 5%: 15 x 0.05 / 0.25 = 3
    a = risk(customer=replace(ACME, arr=D("40000")), amount_due="2000", days_past_due=0)
    assert a.reasons[0] == "amount due 2,000.00 USD is 5% of ARR 40,000.00 USD: +3"


def test_amount_is_scaled_on_a_log_scale_without_arr() -> None:
    # 10,000 is halfway between 1,000 and 100,000 on a log scale: 7.5 -> 8
    a = risk(amount_due="10000", days_past_due=0)
    assert a.reasons[0] == ("amount due 10,000.00 USD (ARR unknown: scaled from 1,000 to "
                            "100,000): +8")
    assert risk(amount_due="999", days_past_due=0).score == 0
    assert risk(amount_due="250000", days_past_due=0).score == 15


def test_low_health_raises_risk() -> None:
    assert risk(customer=replace(ACME, health=30), days_past_due=0).score == 7
    assert risk(customer=replace(ACME, health=100), days_past_due=0).score == 0


def test_sensitivity_reasons_name_each_rule_and_its_numbers() -> None:
    customer = replace(ACME, strategic=True, health=30, arr=D("312000"), do_not_contact=True)
    assert sensitivity_reasons(customer, POLICY) == (
        "strategic account",
        "health 30 is below 40 (at risk)",
        "ARR 312,000.00 USD is at or above 250,000",
        "do-not-contact",
    )
    a = risk(customer=customer)
    assert a.sensitive
    assert a.sensitivity_reasons == sensitivity_reasons(customer, POLICY)


def test_an_ordinary_account_is_not_sensitive() -> None:
    customer = replace(ACME, health=40, arr=D("249999.99"))
    assert sensitivity_reasons(customer, POLICY) == ()
    assert not risk(customer=customer).sensitive


def test_sensitivity_thresholds_come_from_the_policy() -> None:
    policy = replace(POLICY, sensitivity=Sensitivity(high_arr=D("50000"), low_health_below=60))
    customer = replace(ACME, health=50, arr=D("50000"), currency="EUR")
    assert sensitivity_reasons(customer, policy) == (
        "health 50 is below 60 (at risk)",
        "ARR 50,000.00 EUR is at or above 50,000",
    )


def test_chronic_late_payer_gets_one_tone_firmer() -> None:
    chronic = risk(CHRONIC)
    assert tone_for(Tone.FRIENDLY, chronic) is Tone.FIRM
    assert tone_for(Tone.FIRM, chronic) is Tone.FINAL
    assert tone_for(Tone.FINAL, chronic) is Tone.FINAL


def test_first_time_late_customer_keeps_the_step_tone() -> None:
    for tone in Tone:
        assert tone_for(tone, risk(PUNCTUAL)) is tone


# --- the grounding helpers, on data small enough to check by hand ---------------------------


def test_auc_is_one_for_a_perfect_ranking_and_half_for_ties() -> None:
    assert auc([3.0, 4.0], [1.0, 2.0]) == 1.0
    assert auc([1.0], [2.0]) == 0.0
    assert auc([1.0, 1.0], [1.0]) == 0.5
    # 3 beats 1 and 2, 1.5 beats 1 only: 3 of 4 pairs.
    assert auc([3.0, 1.5], [1.0, 2.0]) == 0.75
    assert auc([], [1.0]) is None


def test_spearman_compares_ranks_not_values() -> None:
    assert spearman([1.0, 2.0, 30.0], [10.0, 20.0, 21.0]) == 1.0
    assert spearman([1.0, 2.0, 3.0], [3.0, 2.0, 1.0]) == -1.0
    assert spearman([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None


def paid(invoice_id: str, customer: str, issued: date, paid_on: date, *,
         disputed: bool = False) -> InvoiceFact:
    # Net 30: due 30 days after issue.
    due = date.fromordinal(issued.toordinal() + 30)
    return InvoiceFact(invoice_id=invoice_id, customer_id=customer, currency="USD",
                       amount=D("10"), issue_date=issued, due_date=due, paid_date=paid_on,
                       amount_paid=D("10"), status=InvoiceStatus.PAID, disputed=disputed)


# Customer L pays 10 days late every time, P always on time; the cutoff is 2013-01-01.
#   L: issued 09-01, 10-01, 11-01 2012 (due 10-01, 10-31, 12-01), paid 10 days after the due
#      date; 2013: issued 01-10, due 02-09, paid 02-19 (late).
#   P: the same invoices paid on the day they were issued; 2013: paid on time too.
#   An invoice of L issued 2012-12-01 and paid 2013-01-10 belongs to neither period.
LEDGER = [
    *(paid(f"L{m}", "L", date(2012, m, 1),
           date.fromordinal(date(2012, m, 1).toordinal() + 40), disputed=m == 9)
      for m in (9, 10, 11)),
    paid("L12", "L", date(2012, 12, 1), date(2013, 1, 10)),
    paid("L13", "L", date(2013, 1, 10), date(2013, 2, 19)),
    *(paid(f"P{m}", "P", date(2012, m, 1), date(2012, m, 1)) for m in (9, 10, 11)),
    paid("P13", "P", date(2013, 1, 10), date(2013, 1, 10)),
]


def test_history_from_facts_uses_only_invoices_settled_before_the_cutoff() -> None:
    histories = history_from_facts(LEDGER, before=date(2013, 1, 1))
    assert histories["L"] == PaymentHistory(invoices_paid=3, paid_late=3, days_late_total=30,
                                            disputes=1)
    assert histories["P"] == PaymentHistory(invoices_paid=3)
    assert history_from_facts(LEDGER, before=date(2013, 1, 1), last=1)["L"] == \
        PaymentHistory(invoices_paid=1, paid_late=1, days_late_total=10)


def test_backtest_compares_history_with_the_later_invoices() -> None:
    result = backtest(LEDGER, cutoff=date(2013, 1, 1), policy=POLICY)
    late, punctual = result.customers
    assert (late.customer_id, late.chronic, late.later_invoices, late.later_late) == \
        ("L", True, 1, 1)
    assert (punctual.customer_id, punctual.chronic, punctual.later_late) == ("P", False, 0)
    # L: 25 (all late) + 10 (10 days per invoice) + 3 (1 of 3 disputed: 5 x 0.67) = 38.
    assert late.history_points == 38
    assert punctual.history_points == 0
    assert result.chronic_later_late_share == 1.0
    assert result.other_later_late_share == 0.0
    assert result.invoice_auc == 1.0
    assert result.chronic_customers == 1


# --- invariants ----------------------------------------------------------------------------


@st.composite
def histories(draw: st.DrawFn) -> PaymentHistory:
    paid = draw(st.integers(0, 40))
    late = draw(st.integers(0, paid))
    days = draw(st.integers(late, late * 60))  # each late invoice is at least a day late
    return PaymentHistory(invoices_paid=paid, paid_late=late, days_late_total=days,
                          broken_promises=draw(st.integers(0, 5)),
                          kept_promises=draw(st.integers(0, 5)),
                          disputes=draw(st.integers(0, paid)))


customers = st.builds(
    CustomerContext, customer_id=st.just("C"), name=st.just("C"),
    arr=st.none() | st.integers(0, 10**7).map(D),
    health=st.none() | st.integers(0, 100),
    strategic=st.booleans(), do_not_contact=st.booleans())
amounts = st.integers(0, 10**8).map(lambda cents: D(cents) / 100)
dpds = st.integers(-30, 400)


def score(customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int) -> int:
    return assess(customer, history, amount_due=amount, days_past_due=dpd, policy=POLICY).score


@given(customers, histories(), amounts, dpds)
def test_score_stays_between_0_and_100_and_matches_its_reasons(
        customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int) -> None:
    a = assess(customer, history, amount_due=amount, days_past_due=dpd, policy=POLICY)
    assert 0 <= a.score <= 100
    assert points_in(a.reasons) == a.score
    assert 0 <= history_points(history, POLICY) <= HISTORY_MAX


@given(customers, histories(), amounts, dpds, st.integers(1, 40))
def test_more_late_invoices_never_lower_the_score(
        customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int,
        more: int) -> None:
    # Same number of settled invoices, more of them late (each at least a day late).
    late = min(history.paid_late + more, history.invoices_paid)
    worse = replace(history, paid_late=late,
                    days_late_total=max(history.days_late_total, late))
    assert score(customer, worse, amount, dpd) >= score(customer, history, amount, dpd)


@given(customers, histories(), amounts, dpds, st.integers(1, 500))
def test_more_days_late_never_lower_the_score(
        customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int,
        more: int) -> None:
    worse = replace(history, days_late_total=history.days_late_total + more)
    assert score(customer, worse, amount, dpd) >= score(customer, history, amount, dpd)


@given(customers, histories(), amounts, dpds, st.integers(1, 5))
def test_more_broken_promises_never_lower_the_score(
        customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int,
        more: int) -> None:
    worse = replace(history, broken_promises=history.broken_promises + more)
    assert score(customer, worse, amount, dpd) >= score(customer, history, amount, dpd)


@given(customers, histories(), amounts, dpds, st.integers(1, 400))
def test_more_days_past_due_never_lower_the_score(
        customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int,
        more: int) -> None:
    assert score(customer, history, amount, dpd + more) >= score(customer, history, amount, dpd)


@given(customers, histories(), amounts, dpds, st.integers(0, 100), st.integers(0, 100))
def test_lower_health_never_lowers_the_score(
        customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int,
        a: int, b: int) -> None:
    healthy, sick = replace(customer, health=max(a, b)), replace(customer, health=min(a, b))
    assert score(sick, history, amount, dpd) >= score(healthy, history, amount, dpd)


@given(customers, histories(), amounts, amounts, dpds)
def test_a_larger_amount_never_lowers_the_score(
        customer: CustomerContext, history: PaymentHistory, a: Decimal, b: Decimal,
        dpd: int) -> None:
    assert score(customer, history, max(a, b), dpd) >= score(customer, history, min(a, b), dpd)


@given(customers, histories(), amounts, dpds, st.sampled_from(list(Tone)))
def test_tone_for_never_lowers_a_tone(
        customer: CustomerContext, history: PaymentHistory, amount: Decimal, dpd: int,
        tone: Tone) -> None:
    a = assess(customer, history, amount_due=amount, days_past_due=dpd, policy=POLICY)
    assert tone_for(tone, a).rank >= tone.rank


@given(customers, histories(), histories(), amounts, dpds, st.sampled_from(list(Tone)))
def test_chronic_late_payer_hears_a_firmer_tone_than_a_first_time_late_one(
        customer: CustomerContext, chronic: PaymentHistory, punctual: PaymentHistory,
        amount: Decimal, dpd: int, tone: Tone) -> None:
    chronic = replace(chronic, broken_promises=max(chronic.broken_promises, 2))
    punctual = replace(punctual, paid_late=0, days_late_total=0, broken_promises=0)
    a = assess(customer, chronic, amount_due=amount, days_past_due=dpd, policy=POLICY)
    b = assess(customer, punctual, amount_due=amount, days_past_due=dpd, policy=POLICY)
    assert a.chronic_late
    assert b.first_time_late
    if tone is Tone.FINAL:
        assert tone_for(tone, a) is tone_for(tone, b) is Tone.FINAL
    else:
        assert tone_for(tone, a).rank > tone_for(tone, b).rank


@given(histories())
def test_chronic_and_first_time_late_exclude_each_other(history: PaymentHistory) -> None:
    a = risk(history)
    assert not (a.chronic_late and a.first_time_late)


@given(histories())
def test_chronic_by_lateness_always_meets_every_threshold(history: PaymentHistory) -> None:
    c = POLICY.chronic
    if is_chronic_late(history, POLICY) and history.broken_promises < c.broken_promises:
        assert history.invoices_paid >= c.min_invoices
        assert history.late_share >= c.late_share
        assert history.average_days_late >= c.average_days_late
