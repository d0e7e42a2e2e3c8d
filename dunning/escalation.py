"""Which step each invoice gets today, and why; and when it next needs a look.

`decide(state, policy, today)` is the whole rule book for one invoice on one day (the
customer's own date). `next_action_on(state, policy)` is the first date on which `decide`
can return something, stored and indexed so the daily plan reads only the invoices due.

Rules (DESIGN.md "Default policy"):
- steps before the due date count from the contractual due date; steps after it count
  from the effective due date (next business day + grace business days);
- every step falls on the customer's business day: a pre-due reminder moves back (it must
  arrive before the due date, and expires with it), later steps move forward;
- an invoice first seen late gets only the latest step due, never a burst of missed ones;
- a dispute stops routine steps and routes the invoice to its owner once per dispute;
- a promise to pay holds the invoice until the promised date + grace business days, then
  an unpaid invoice gets one broken-promise task and routine steps resume;
- a snooze holds the invoice until its date; do-not-contact holds every customer message;
- sensitive accounts never get a message without the owner's approval;
- chronic late payers get a firmer tone than first-time-late customers in the same lane.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from dunning import risk
from dunning.aging import days_past_due, lane_for
from dunning.calendar import (
    add_business_days,
    effective_due_date,
    is_business_day,
    next_business_day,
    previous_business_day,
)
from dunning.model import (
    BROKEN_PROMISE_PREFIX,
    DISPUTE_REVIEW_PREFIX,
    Action,
    Approval,
    Channel,
    Decision,
    Hold,
    HoldReason,
    InvoiceState,
    Kind,
    Lane,
    PromiseStatus,
)
from dunning.money import format_money
from dunning.policy import Policy, Step


@dataclass(frozen=True)
class ScheduledStep:
    step: Step
    index: int  # position in the policy
    on: date  # when it falls due, already moved to a business day where that applies


def schedule(state: InvoiceState, policy: Policy) -> list[ScheduledStep]:
    """The date each of the policy's steps falls due for this invoice, in policy order."""
    country = state.customer.country
    effective = effective_due_date(state.due_date, country, policy.grace_business_days)
    failed_first = (
        next_business_day(state.payment_failed_on, country)
        if state.payment_failed_on is not None else None
    )
    out: list[ScheduledStep] = []
    first_after_due = True
    for index, step in enumerate(policy.steps):
        if step.skip_autopay and state.customer.autopay:
            continue
        message = step.kind is Kind.CUSTOMER_MESSAGE
        if step.day <= 0:
            on = state.due_date + timedelta(days=step.day)
            if message:  # a pre-due reminder must arrive before the due date: move it back
                on = previous_business_day(on, country)
            if on <= state.issue_date:
                continue  # a reminder on (or before) the day the invoice was issued is noise
        else:
            on = next_business_day(effective + timedelta(days=step.day), country)
            # A failed automatic charge enters the early lane at once: the first step after
            # the due date falls due on the failure date instead of waiting for the grace.
            if first_after_due and failed_first is not None:
                on = min(on, failed_first)
            first_after_due = False
        out.append(ScheduledStep(step, index, on))
    return out


def _last_done_index(state: InvoiceState, policy: Policy) -> int:
    done = [policy.index_of(k) for k in state.steps_done]
    return max(done, default=-1)


def _promise_check_date(state: InvoiceState, policy: Policy) -> date | None:
    p = state.promise
    if p is None or p.status is not PromiseStatus.OPEN:
        return None
    return add_business_days(p.promised_date, policy.promise_grace_business_days,
                             state.customer.country)


def _broken_key(state: InvoiceState) -> str:
    assert state.promise is not None
    return f"{BROKEN_PROMISE_PREFIX}{state.promise.promised_date.isoformat()}"


def _review_key(state: InvoiceState) -> str:
    assert state.dispute is not None
    opened = state.dispute.opened_on or state.due_date
    return f"{DISPUTE_REVIEW_PREFIX}{opened.isoformat()}"


def next_action_on(state: InvoiceState, policy: Policy) -> date | None:
    """The first date `decide` can return an action or a hold; None when nothing is left."""
    if not state.is_open or state.amount_due <= 0:
        return None
    return _after_snooze(state, _next_date(state, policy))


def _next_date(state: InvoiceState, policy: Policy) -> date | None:
    if state.dispute is not None:
        if _review_key(state) not in state.steps_done:
            return state.dispute.opened_on or state.due_date
        return None  # held until the dispute is resolved; resolving recomputes this date
    check = _promise_check_date(state, policy)
    if check is not None and _broken_key(state) not in state.steps_done:
        return check + timedelta(days=1)
    last = _last_done_index(state, policy)
    upcoming = [s.on for s in schedule(state, policy) if s.index > last]
    return upcoming[0] if upcoming else None


def _after_snooze(state: InvoiceState, when: date | None) -> date | None:
    if when is not None and state.snoozed_until is not None and state.snoozed_until > when:
        return state.snoozed_until
    return when


def decide(state: InvoiceState, policy: Policy, today: date) -> Decision:
    """The actions (with reasons) and holds for one invoice on `today`."""
    decision = _decide(state, policy, today)
    snoozed = state.snoozed_until
    if decision.actions and snoozed is not None and today < snoozed:
        # A snooze pauses every card of the customer (or of its owner) until its date.
        first = decision.actions[0]
        return Decision(holds=(Hold(state.invoice_id, HoldReason.SNOOZED, first.step, snoozed,
                                    f"snoozed until {snoozed.isoformat()}"),))
    return decision


def _decide(state: InvoiceState, policy: Policy, today: date) -> Decision:
    if not state.is_open or state.amount_due <= 0:
        return Decision()
    customer = state.customer
    dpd = days_past_due(state.due_date, today)
    lane = lane_for(dpd, policy.lanes)
    failed = state.payment_failed_on is not None and state.payment_failed_on <= today
    if failed and lane is Lane.CURRENT:
        lane = Lane.EARLY
    assessment = risk.assess(customer, state.history, amount_due=state.amount_due,
                             days_past_due=dpd, policy=policy)
    facts = _fact_reasons(state, policy, dpd, today)

    def action(step: str, kind: Kind, on: date, reasons: list[str]) -> Action:
        return Action(
            invoice_id=state.invoice_id, step=step, kind=kind, tone=None, approval=None,
            channel=Channel.SLACK, lane=lane, days_past_due=dpd, scheduled_on=on,
            reasons=tuple(reasons), owner=customer.owner_email,
        )

    def hold(reason: HoldReason, step: str | None, until: date | None, detail: str) -> Decision:
        return Decision(holds=(Hold(state.invoice_id, reason, step, until, detail),))

    # Steps before the due date expire with it: no "due in 3 days" after the due date.
    due = [s for s in schedule(state, policy)
           if s.on <= today and (s.step.day > 0 or today <= state.due_date)]
    last = _last_done_index(state, policy)
    pending = due[-1] if due and due[-1].index > last else None

    # A dispute stops routine reminders: the owner gets one review task per dispute.
    if state.dispute is not None:
        d = state.dispute
        key = _review_key(state)
        if key not in state.steps_done:
            amount = f" of {format_money(d.amount, state.currency)}" if d.amount else ""
            return Decision(actions=(action(key, Kind.OWNER_TASK, d.opened_on or today, [
                f"customer disputes this invoice{amount}: {d.reason}",
                "routine reminders are stopped until the dispute is resolved",
                "owner: review the dispute with the customer and record the outcome",
                *facts,
            ]),))
        if pending is not None:
            return hold(HoldReason.DISPUTED, pending.step.key, None,
                        f"disputed: {d.reason}")
        return Decision()

    # A promise to pay holds everything until the promised date + grace; then we check.
    check = _promise_check_date(state, policy)
    if check is not None and _broken_key(state) not in state.steps_done:
        assert state.promise is not None
        p = state.promise
        promised = f"{format_money(p.amount, state.currency)} " if p.amount else ""
        if today <= check:
            if pending is not None:
                return hold(HoldReason.PROMISE_TO_PAY, pending.step.key,
                            check + timedelta(days=1),
                            f"promised to pay {promised}by {p.promised_date.isoformat()}")
            return Decision()
        return Decision(
            actions=(action(_broken_key(state), Kind.OWNER_TASK, check + timedelta(days=1), [
                f"promise broken: the customer promised to pay {promised}by "
                f"{p.promised_date.isoformat()} and "
                f"{format_money(state.amount_due, state.currency)} is still due after "
                f"{policy.promise_grace_business_days} grace business days",
                "owner: call the customer; routine reminders resume from the step due now",
                *facts,
            ]),),
            promise_broken=True,
        )

    if pending is None:
        return Decision()
    step = pending.step

    minimum = max(policy.minimum_amount, step.min_amount)
    if state.amount_due < minimum:
        return hold(HoldReason.BELOW_MINIMUM, step.key, None,
                    f"{format_money(state.amount_due, state.currency)} due is below the "
                    f"minimum of {minimum} for {step.key}")

    reasons = [*facts, _step_reason(pending, due, last, policy)]
    if failed:
        assert state.payment_failed_on is not None
        reasons.append(f"automatic payment failed on {state.payment_failed_on.isoformat()}")
    reasons.append(f"risk {assessment.score}/100" + (
        f": {'; '.join(assessment.reasons[:2])}" if assessment.reasons else ""))

    if step.kind is not Kind.CUSTOMER_MESSAGE:
        if step.ask_owner_to_call:
            reasons.append("owner: please call the customer")
        if step.kind is Kind.FINANCE_DECISION:
            reasons.append("finance decides: service pause, payment plan, write-off or "
                           "collections")
        return Decision(actions=(action(step.key, step.kind, pending.on, reasons),))

    if customer.do_not_contact:
        return hold(HoldReason.DO_NOT_CONTACT, step.key, None,
                    "do-not-contact: no message is ever sent; owner steps still run")
    if not is_business_day(today, customer.country):
        nxt = next_business_day(today, customer.country)
        return hold(HoldReason.NOT_BUSINESS_DAY, step.key, nxt,
                    f"{today.isoformat()} is not a business day in {customer.country}")

    assert step.tone is not None and step.approval is not None
    tone = risk.tone_for(step.tone, assessment)
    if tone is not step.tone:
        reasons.append(f"tone raised from {step.tone.value} to {tone.value}: chronic late payer")
    elif assessment.first_time_late:
        reasons.append(f"{tone.value} tone: no late payment on record")
    approval = step.approval
    if assessment.sensitive:
        approval = Approval.highest(approval, Approval.OWNER)
        reasons.append("sensitive account (" + "; ".join(assessment.sensitivity_reasons)
                       + "): nothing is sent without the owner's approval")
    if step.ask_owner_to_call:
        reasons.append("owner: please call the customer as well")
    if step.cc_customer_cfo:
        reasons.append("the customer's CFO is copied")
    return Decision(actions=(Action(
        invoice_id=state.invoice_id, step=step.key, kind=step.kind, tone=tone,
        approval=approval, channel=step.channel, lane=lane, days_past_due=dpd,
        scheduled_on=pending.on, reasons=tuple(reasons), owner=customer.owner_email,
    ),))


def _fact_reasons(state: InvoiceState, policy: Policy, dpd: int, today: date) -> list[str]:
    due = state.due_date.isoformat()
    if dpd < 0:
        return [f"due in {-dpd} days (on {due})"]
    if dpd == 0:
        return [f"due today ({due})"]
    effective = effective_due_date(state.due_date, state.customer.country,
                                   policy.grace_business_days)
    return [f"{dpd} days past due (due {due}; effective due date {effective.isoformat()} "
            f"after {policy.grace_business_days} grace business days in "
            f"{state.customer.country})"]


def _step_reason(pending: ScheduledStep, due: list[ScheduledStep], last: int,
                 policy: Policy) -> str:
    step = pending.step
    origin = "the due date" if step.day <= 0 else "the effective due date"
    text = f"step {step.key}: day {step.day:+d} from {origin}, due {pending.on.isoformat()}"
    skipped = [s.step.key for s in due if last < s.index < pending.index]
    if skipped:
        text += f"; earlier steps not sent and skipped ({', '.join(skipped)}): only the " \
                "step due now is taken"
    return text
