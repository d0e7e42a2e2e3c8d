"""The default policy, checked against an AR clerk's hand computation.

Reference invoice: a US customer, issued 2026-10-03, due Monday 2026-11-02.
  effective due date = Mon 11-02 (a business day) + 2 grace business days = Wed 11-04
  pre_due        11-02 - 3        = Fri 10-30
  nudge          11-04 + 1        = Thu 11-05
  follow_up      11-04 + 7        = Wed 11-11, Veterans Day -> Thu 11-12
  owner_loop_in  11-04 + 10       = Sat 11-14 -> Mon 11-16
  firm_notice    11-04 + 15       = Thu 11-19
  pause_warning  11-04 + 30       = Fri 12-04
  service_pause  11-04 + 45       = Sat 12-19 -> Mon 12-21
"""

from __future__ import annotations

from dataclasses import replace
from datetime import date, timedelta
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from dunning.calendar import is_business_day
from dunning.escalation import decide, next_action_on, schedule
from dunning.model import (
    Approval,
    CustomerContext,
    Dispute,
    HoldReason,
    InvoiceState,
    InvoiceStatus,
    Kind,
    Lane,
    PaymentHistory,
    Promise,
    PromiseStatus,
    Tone,
)
from dunning.policy import DEFAULT_POLICY, policy_from_mapping

P = DEFAULT_POLICY
US = CustomerContext("C-1", "Globex Inc", "US", "America/New_York", "USD",
                     owner_email="dana@example.com")
PUNCTUAL = PaymentHistory(invoices_paid=8, paid_late=0)
CHRONIC = PaymentHistory(invoices_paid=8, paid_late=6, days_late_total=6 * 20)


def invoice(**kw: object) -> InvoiceState:
    base = InvoiceState(invoice_id="INV-1", number="2026-0001", customer=US,
                        issue_date=date(2026, 10, 3), due_date=date(2026, 11, 2),
                        currency="USD", amount=Decimal("1200.00"), history=PUNCTUAL)
    return replace(base, **kw)  # type: ignore[arg-type]


def done(*steps: str) -> frozenset[str]:
    return frozenset(steps)


def only_action(state: InvoiceState, today: date):  # type: ignore[no-untyped-def]
    d = decide(state, P, today)
    assert len(d.actions) == 1, d
    return d.actions[0]


def test_schedule_matches_the_clerks_hand_computation() -> None:
    got = {s.step.key: s.on for s in schedule(invoice(), P)}
    assert got == {
        "pre_due": date(2026, 10, 30), "nudge": date(2026, 11, 5),
        "follow_up": date(2026, 11, 12), "owner_loop_in": date(2026, 11, 16),
        "firm_notice": date(2026, 11, 19), "pause_warning": date(2026, 12, 4),
        "service_pause": date(2026, 12, 21),
    }


def test_pre_due_reminder_is_friendly_and_needs_owner_approval() -> None:
    a = only_action(invoice(), date(2026, 10, 30))
    assert (a.step, a.kind, a.tone, a.approval, a.lane) == (
        "pre_due", Kind.CUSTOMER_MESSAGE, Tone.FRIENDLY, Approval.OWNER, Lane.CURRENT)
    assert a.days_past_due == -3
    assert any("due in 3 days" in r for r in a.reasons)


def test_nothing_during_grace_days_after_the_due_date() -> None:
    state = invoice(steps_done=done("pre_due"))
    for day in (date(2026, 11, 2), date(2026, 11, 3), date(2026, 11, 4)):
        assert decide(state, P, day).actions == ()


def test_pre_due_reminder_expires_with_the_due_date() -> None:
    # First seen during the grace days: no "due in 3 days" message after the due date.
    assert decide(invoice(), P, date(2026, 11, 3)).actions == ()


def test_nudge_on_the_day_after_the_effective_due_date() -> None:
    a = only_action(invoice(steps_done=done("pre_due")), date(2026, 11, 5))
    assert (a.step, a.lane, a.days_past_due, a.tone) == ("nudge", Lane.EARLY, 3, Tone.FRIENDLY)
    assert any("effective due date 2026-11-04" in r for r in a.reasons)


def test_follow_up_waits_for_the_customers_public_holiday_to_pass() -> None:
    state = invoice(steps_done=done("pre_due", "nudge"))
    assert decide(state, P, date(2026, 11, 11)).actions == ()  # Veterans Day
    assert only_action(state, date(2026, 11, 12)).step == "follow_up"


def test_owner_is_looped_in_on_day_ten_as_a_task_without_tone() -> None:
    a = only_action(invoice(steps_done=done("pre_due", "nudge", "follow_up")),
                    date(2026, 11, 16))
    assert (a.step, a.kind, a.tone, a.approval) == ("owner_loop_in", Kind.OWNER_TASK, None, None)


def test_firm_notice_enters_the_late_lane_and_asks_the_owner_to_call() -> None:
    a = only_action(invoice(steps_done=done("pre_due", "nudge", "follow_up", "owner_loop_in")),
                    date(2026, 11, 19))
    assert (a.step, a.lane, a.tone, a.days_past_due) == ("firm_notice", Lane.LATE, Tone.FIRM, 17)
    assert any("call" in r for r in a.reasons)


def test_pause_warning_is_final_and_needs_finance_approval() -> None:
    steps = done("pre_due", "nudge", "follow_up", "owner_loop_in", "firm_notice")
    a = only_action(invoice(steps_done=steps), date(2026, 12, 4))
    assert (a.step, a.tone, a.approval, a.lane) == (
        "pause_warning", Tone.FINAL, Approval.FINANCE, Lane.LATE)
    assert any("CFO" in r for r in a.reasons)


def test_service_pause_is_a_finance_decision_in_the_critical_lane() -> None:
    steps = done("pre_due", "nudge", "follow_up", "owner_loop_in", "firm_notice",
                 "pause_warning")
    a = only_action(invoice(steps_done=steps), date(2026, 12, 21))
    assert (a.step, a.kind, a.lane, a.days_past_due) == (
        "service_pause", Kind.FINANCE_DECISION, Lane.CRITICAL, 49)


def test_invoice_first_seen_late_gets_only_the_step_due_now() -> None:
    a = only_action(invoice(), date(2026, 11, 20))
    assert a.step == "firm_notice"
    assert any("skipped (nudge, follow_up, owner_loop_in)" in r for r in a.reasons)


def test_a_step_already_taken_is_never_repeated() -> None:
    state = invoice(steps_done=done("pre_due", "nudge"))
    assert decide(state, P, date(2026, 11, 6)).actions == ()


def test_disputed_invoice_gets_no_customer_reminder_but_one_owner_review() -> None:
    dispute = Dispute("pricing: contract rate not applied", Decimal("200.00"),
                      date(2026, 11, 10))
    state = invoice(steps_done=done("pre_due", "nudge"), dispute=dispute)
    a = only_action(state, date(2026, 11, 12))
    assert (a.step, a.kind) == ("dispute_review:2026-11-10", Kind.OWNER_TASK)
    reviewed = replace(state, steps_done=state.steps_done | {a.step})
    d = decide(reviewed, P, date(2026, 11, 20))
    assert d.actions == ()
    assert [h.reason for h in d.holds] == [HoldReason.DISPUTED]
    assert next_action_on(reviewed, P) is None


def test_promise_to_pay_holds_until_promised_date_plus_grace_then_breaks() -> None:
    # Promised Wed 11-25; grace 2 business days: Thu 11-26 is Thanksgiving, so the
    # check falls on Mon 11-30 and the broken promise surfaces on Tue 12-01.
    promise = Promise(date(2026, 11, 25), Decimal("1200.00"), logged_on=date(2026, 11, 17))
    state = invoice(steps_done=done("pre_due", "nudge", "follow_up", "owner_loop_in"),
                    promise=promise)
    held = decide(state, P, date(2026, 11, 30))
    assert held.actions == () and held.holds[0].reason is HoldReason.PROMISE_TO_PAY
    assert next_action_on(state, P) == date(2026, 12, 1)
    broken = decide(state, P, date(2026, 12, 1))
    assert broken.promise_broken
    assert broken.actions[0].step == "broken_promise:2026-11-25"
    assert broken.actions[0].kind is Kind.OWNER_TASK
    # Once recorded as broken, routine reminders resume with the step due now only.
    after = replace(state, promise=replace(promise, status=PromiseStatus.BROKEN),
                    steps_done=state.steps_done | {"broken_promise:2026-11-25"})
    assert only_action(after, date(2026, 12, 2)).step == "firm_notice"


def test_snooze_holds_every_card_until_its_date() -> None:
    state = invoice(steps_done=done("pre_due"), snoozed_until=date(2026, 11, 9))
    d = decide(state, P, date(2026, 11, 5))
    assert d.actions == () and d.holds[0].reason is HoldReason.SNOOZED
    assert next_action_on(state, P) == date(2026, 11, 9)
    assert only_action(state, date(2026, 11, 9)).step == "nudge"


def test_closed_invoices_get_nothing() -> None:
    for status in (InvoiceStatus.PAID, InvoiceStatus.VOID, InvoiceStatus.UNCOLLECTIBLE):
        state = invoice(status=status)
        assert decide(state, P, date(2026, 11, 20)) == decide(state, P, date(2026, 12, 30))
        assert decide(state, P, date(2026, 11, 20)).actions == ()
        assert next_action_on(state, P) is None


def test_chronic_late_payer_gets_a_firmer_tone_than_a_first_time_late_one() -> None:
    day = date(2026, 11, 5)
    first = only_action(invoice(steps_done=done("pre_due")), day)
    chronic = only_action(invoice(steps_done=done("pre_due"), history=CHRONIC), day)
    assert (first.tone, chronic.tone) == (Tone.FRIENDLY, Tone.FIRM)
    assert any("chronic" in r for r in chronic.reasons)


def test_sensitive_account_never_gets_an_automatic_message() -> None:
    lowered = policy_from_mapping({"steps": {"nudge": {"approval": "none"}}})
    plain = decide(invoice(steps_done=done("pre_due")), lowered, date(2026, 11, 5)).actions[0]
    assert plain.approval is Approval.NONE
    strategic = replace(US, strategic=True)
    a = decide(invoice(customer=strategic, steps_done=done("pre_due")), lowered,
               date(2026, 11, 5)).actions[0]
    assert a.approval is Approval.OWNER
    assert any("strategic" in r for r in a.reasons)


def test_do_not_contact_holds_messages_but_owner_steps_still_run() -> None:
    dnc = replace(US, do_not_contact=True)
    d = decide(invoice(customer=dnc, steps_done=done("pre_due")), P, date(2026, 11, 5))
    assert d.actions == () and d.holds[0].reason is HoldReason.DO_NOT_CONTACT
    a = only_action(invoice(customer=dnc, steps_done=done("pre_due")), date(2026, 11, 16))
    assert a.step == "owner_loop_in"


def test_below_minimum_amount_is_held() -> None:
    policy = policy_from_mapping({"minimum_amount": "25.00"})
    d = decide(invoice(amount=Decimal("20.00"), steps_done=done("pre_due")), policy,
               date(2026, 11, 5))
    assert d.actions == () and d.holds[0].reason is HoldReason.BELOW_MINIMUM


def test_overdue_step_is_held_on_the_customers_weekend() -> None:
    d = decide(invoice(steps_done=done("pre_due")), P, date(2026, 11, 7))  # Saturday
    assert d.actions == () and d.holds[0].reason is HoldReason.NOT_BUSINESS_DAY
    assert d.holds[0].until == date(2026, 11, 9)


def test_autopay_customer_gets_no_pre_due_and_a_failed_charge_enters_early_lane() -> None:
    autopay = replace(US, autopay=True)
    state = invoice(customer=autopay, due_date=date(2026, 11, 2),
                    payment_failed_on=date(2026, 11, 2))
    assert "pre_due" not in {s.step.key for s in schedule(state, P)}
    a = only_action(state, date(2026, 11, 2))
    assert (a.step, a.lane) == ("nudge", Lane.EARLY)
    assert any("automatic payment failed on 2026-11-02" in r for r in a.reasons)


def test_german_customer_follows_german_holidays() -> None:
    de = replace(US, country="DE", timezone="Europe/Berlin", currency="EUR")
    # Due Thu 12-24; grace: Fri 12-25 and Sat 12-26 are holidays/weekend -> Mon 12-28 (1),
    # Tue 12-29 (2); nudge on Wed 12-30.
    state = invoice(customer=de, currency="EUR", due_date=date(2026, 12, 24),
                    issue_date=date(2026, 11, 24), steps_done=done("pre_due"))
    assert {s.step.key: s.on for s in schedule(state, P)}["nudge"] == date(2026, 12, 30)


# ---------------------------------------------------------------------------------------
# Properties: invariants over generated invoices and days.

countries = st.sampled_from(["US", "DE", "GB", "FR", "AU", "JP", "CA"])
histories = st.builds(
    PaymentHistory,
    invoices_paid=st.integers(0, 30), paid_late=st.integers(0, 30),
    days_late_total=st.integers(0, 900), broken_promises=st.integers(0, 4),
).filter(lambda h: h.paid_late <= h.invoices_paid)


@st.composite
def states(draw: st.DrawFn) -> InvoiceState:
    issue = draw(st.dates(date(2026, 1, 1), date(2027, 6, 30)))
    terms = draw(st.integers(0, 60))
    customer = replace(US, country=draw(countries), autopay=draw(st.booleans()),
                       strategic=draw(st.booleans()), do_not_contact=draw(st.booleans()),
                       health=draw(st.one_of(st.none(), st.integers(0, 100))))
    return invoice(customer=customer, issue_date=issue, due_date=issue + timedelta(days=terms),
                   history=draw(histories),
                   amount=Decimal(draw(st.integers(1, 10**7))) / 100)


@settings(max_examples=150, deadline=None)
@given(states(), st.integers(0, 140))
def test_walking_day_by_day_takes_each_step_at_most_once_in_order(
        state: InvoiceState, horizon: int) -> None:
    first_seen = state.issue_date + timedelta(days=horizon // 3)
    taken: list[str] = []
    for offset in range(horizon):
        today = first_seen + timedelta(days=offset)
        d = decide(state, P, today)
        assert len(d.actions) <= 1
        for a in d.actions:
            if a.kind is Kind.CUSTOMER_MESSAGE:
                assert is_business_day(today, state.customer.country)
                assert not state.customer.do_not_contact
                assert a.approval is not None
                if state.customer.strategic:
                    assert a.approval is not Approval.NONE
            taken.append(a.step)
            state = replace(state, steps_done=state.steps_done | {a.step})
    indexes = [P.index_of(k) for k in taken]
    assert indexes == sorted(set(indexes)), taken


@settings(max_examples=150, deadline=None)
@given(states(), st.integers(-30, 140))
def test_nothing_happens_before_next_action_on(state: InvoiceState, offset: int) -> None:
    today = state.due_date + timedelta(days=offset)
    nxt = next_action_on(state, P)
    if nxt is None or today < nxt:
        assert decide(state, P, today).actions == ()


@settings(max_examples=100, deadline=None)
@given(states(), st.integers(-5, 120), st.sampled_from(list(InvoiceStatus)))
def test_closed_disputed_or_promised_invoices_get_no_customer_message(
        state: InvoiceState, offset: int, status: InvoiceStatus) -> None:
    today = state.due_date + timedelta(days=offset)
    variants = [
        replace(state, status=status) if status is not InvoiceStatus.OPEN else None,
        replace(state, dispute=Dispute("quality", None, today - timedelta(days=1))),
        replace(state, promise=Promise(today + timedelta(days=3))),
        replace(state, snoozed_until=today + timedelta(days=1)),
    ]
    for v in variants:
        if v is None:
            continue
        for a in decide(v, P, today).actions:
            assert a.kind is not Kind.CUSTOMER_MESSAGE


@settings(max_examples=150, deadline=None)
@given(states(), st.integers(-5, 120))
def test_chronic_payer_tone_is_never_softer_and_strictly_firmer_below_final(
        state: InvoiceState, offset: int) -> None:
    today = state.due_date + timedelta(days=offset)
    first = decide(replace(state, history=PUNCTUAL), P, today).actions
    chronic = decide(replace(state, history=CHRONIC), P, today).actions
    assert [a.step for a in first] == [a.step for a in chronic]
    for f, c in zip(first, chronic, strict=True):
        if f.tone is None:
            continue
        assert c.tone is not None and c.tone.rank >= f.tone.rank
        if f.tone is not Tone.FINAL:
            assert c.tone.rank > f.tone.rank


@settings(max_examples=100, deadline=None)
@given(states())
def test_customer_messages_are_scheduled_on_customer_business_days(state: InvoiceState) -> None:
    for s in schedule(state, P):
        assert is_business_day(s.on, state.customer.country)
        if s.step.day <= 0:
            assert state.issue_date < s.on <= state.due_date
