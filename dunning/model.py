"""Plain, frozen data the rules work on: no I/O, no clock, no ORM.

Money is `Decimal` in the domain (integer minor units in the store); dates are `date`
objects already expressed in the customer's own time zone.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from enum import StrEnum


class Lane(StrEnum):
    CURRENT = "current"
    EARLY = "early"
    LATE = "late"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        return _LANE_ORDER.index(self)


_LANE_ORDER = [Lane.CURRENT, Lane.EARLY, Lane.LATE, Lane.CRITICAL]


class Kind(StrEnum):
    CUSTOMER_MESSAGE = "customer_message"
    OWNER_TASK = "owner_task"
    FINANCE_DECISION = "finance_decision"


class Tone(StrEnum):
    FRIENDLY = "friendly"
    FIRM = "firm"
    FINAL = "final"

    @property
    def rank(self) -> int:
        return _TONE_ORDER.index(self)

    def raised(self, levels: int = 1) -> Tone:
        """The next firmer tone, capped at `final`."""
        return _TONE_ORDER[min(self.rank + levels, len(_TONE_ORDER) - 1)]

    @staticmethod
    def highest(*tones: Tone) -> Tone:
        return max(tones, key=lambda t: t.rank)


_TONE_ORDER = [Tone.FRIENDLY, Tone.FIRM, Tone.FINAL]


class Approval(StrEnum):
    NONE = "none"
    OWNER = "owner"
    FINANCE = "finance"

    @property
    def rank(self) -> int:
        return _APPROVAL_ORDER.index(self)

    @staticmethod
    def highest(*approvals: Approval) -> Approval:
        return max(approvals, key=lambda a: a.rank)


_APPROVAL_ORDER = [Approval.NONE, Approval.OWNER, Approval.FINANCE]


class Channel(StrEnum):
    """How a step reaches its audience."""

    EMAIL = "email"  # our own SMTP message
    BILLING = "billing"  # the billing system's own invoice email (Stripe, QuickBooks)
    SLACK = "slack"  # internal: a card for the owner or finance


class InvoiceStatus(StrEnum):
    OPEN = "open"
    PAID = "paid"
    VOID = "void"
    UNCOLLECTIBLE = "uncollectible"  # written off


class HoldReason(StrEnum):
    DISPUTED = "disputed"
    PROMISE_TO_PAY = "promise_to_pay"
    SNOOZED = "snoozed"
    DO_NOT_CONTACT = "do_not_contact"
    BELOW_MINIMUM = "below_minimum"
    NOT_BUSINESS_DAY = "not_business_day"


class PromiseStatus(StrEnum):
    OPEN = "open"
    KEPT = "kept"
    BROKEN = "broken"
    CANCELLED = "cancelled"


# Step keys the escalation engine adds on its own, beside the policy's steps.
# One review per dispute and one check per broken promise: "dispute_review:2026-11-20".
DISPUTE_REVIEW_PREFIX = "dispute_review:"
BROKEN_PROMISE_PREFIX = "broken_promise:"


@dataclass(frozen=True)
class CustomerContext:
    """Who the customer is and how the relationship stands (billing + CRM)."""

    customer_id: str
    name: str
    country: str = "US"  # ISO 3166-1 alpha-2: the holiday calendar
    timezone: str = "UTC"  # IANA name
    currency: str = "USD"
    arr: Decimal | None = None
    health: int | None = None  # 0-100, lower is worse
    owner_email: str | None = None
    csm_email: str | None = None
    ap_contact_name: str | None = None
    ap_contact_email: str | None = None
    strategic: bool = False
    autopay: bool = False
    do_not_contact: bool = False
    language: str | None = None  # ISO 639-1 for customer messages; None: from the country


@dataclass(frozen=True)
class PaymentHistory:
    """What the customer's settled invoices, promises and disputes say about them."""

    invoices_paid: int = 0
    paid_late: int = 0
    days_late_total: int = 0  # summed over the invoices paid late
    broken_promises: int = 0
    kept_promises: int = 0
    disputes: int = 0

    @property
    def late_share(self) -> float:
        """Share of settled invoices paid after their due date (a ratio, not money)."""
        return self.paid_late / self.invoices_paid if self.invoices_paid else 0.0

    @property
    def average_days_late(self) -> float:
        return self.days_late_total / self.paid_late if self.paid_late else 0.0


@dataclass(frozen=True)
class Promise:
    promised_date: date
    amount: Decimal | None = None
    status: PromiseStatus = PromiseStatus.OPEN
    logged_on: date | None = None


@dataclass(frozen=True)
class Dispute:
    reason: str
    amount: Decimal | None = None
    opened_on: date | None = None


@dataclass(frozen=True)
class InvoiceState:
    """One invoice as the rules see it on a given day."""

    invoice_id: str
    number: str
    customer: CustomerContext
    issue_date: date
    due_date: date
    currency: str
    amount: Decimal
    amount_paid: Decimal = Decimal("0")
    status: InvoiceStatus = InvoiceStatus.OPEN
    # An automatic charge failed on this date (autopay customers): enters the early lane.
    payment_failed_on: date | None = None
    # Step keys already escalated for this invoice (unique per invoice and step).
    steps_done: frozenset[str] = field(default_factory=frozenset)
    promise: Promise | None = None  # the latest promise to pay, any status
    dispute: Dispute | None = None  # an open dispute, if any
    snoozed_until: date | None = None  # customer or owner snooze; cards resume on this date
    history: PaymentHistory = field(default_factory=PaymentHistory)
    payment_link: str | None = None

    @property
    def amount_due(self) -> Decimal:
        return self.amount - self.amount_paid

    @property
    def is_open(self) -> bool:
        return self.status is InvoiceStatus.OPEN


@dataclass(frozen=True)
class Action:
    """One escalation step the bot proposes for an invoice today, with its reasons."""

    invoice_id: str
    step: str
    kind: Kind
    tone: Tone | None  # None for owner tasks and finance decisions
    approval: Approval | None  # None where nothing reaches the customer
    channel: Channel
    lane: Lane
    days_past_due: int
    scheduled_on: date  # the date the step fell due (rolled to a business day)
    reasons: tuple[str, ...]
    owner: str | None = None


@dataclass(frozen=True)
class Hold:
    """Why an invoice with a step due gets nothing today."""

    invoice_id: str
    reason: HoldReason
    step: str | None = None  # the step that would otherwise be due
    until: date | None = None  # when the hold is expected to end, when known
    detail: str = ""


@dataclass(frozen=True)
class Decision:
    actions: tuple[Action, ...] = ()
    holds: tuple[Hold, ...] = ()
    # Side effects the shell must record with the actions (e.g. a promise found broken).
    promise_broken: bool = False


@dataclass(frozen=True)
class InvoiceRecord:
    """An invoice as a billing source reports it (CSV, Stripe, QuickBooks), before storage."""

    invoice_id: str
    number: str
    customer_id: str
    issue_date: date
    due_date: date
    currency: str
    amount: Decimal
    amount_paid: Decimal = Decimal("0")
    status: InvoiceStatus = InvoiceStatus.OPEN
    paid_date: date | None = None
    payment_link: str | None = None
    payment_failed_on: date | None = None


class EscalationState(StrEnum):
    """Where one escalation card stands; a handled card never goes back to proposed."""

    PROPOSED = "proposed"  # created by the cycle, not yet posted
    # Claimed for posting (committed before chat.postMessage): after a crash the worker
    # looks for the card in the channel's history before posting it again.
    POSTING = "posting"
    POSTED = "posted"  # on Slack, waiting for a person
    APPROVED = "approved"  # draft approved: the message is in the outbox
    REJECTED = "rejected"  # draft rejected with a reason: nothing is sent
    SENT = "sent"  # the customer message went out
    DONE = "done"  # an owner task or finance decision was handled
    SKIPPED = "skipped"
    CLOSED = "closed"  # the invoice was paid, voided or written off
    CANCELLED = "cancelled"

    @property
    def is_open(self) -> bool:
        return self in (EscalationState.PROPOSED, EscalationState.POSTING,
                        EscalationState.POSTED)


@dataclass(frozen=True)
class Escalation:
    """One step taken for one invoice, as a card shows it."""

    id: int
    invoice_id: str
    step: str
    kind: Kind
    tone: Tone | None
    approval: Approval | None
    channel: Channel
    lane: Lane
    days_past_due: int
    scheduled_on: date
    reasons: tuple[str, ...]
    owner: str | None
    state: EscalationState
    plan_date: date
    handled_by: str | None = None
    handled_at: datetime | None = None
    note: str | None = None  # why it was rejected, what finance decided


@dataclass(frozen=True)
class Draft:
    """A customer message waiting for approval; `note` says why a fallback was used."""

    subject: str
    body: str
    to: tuple[str, ...]
    cc: tuple[str, ...] = ()
    source: str = "template"  # template | llm
    note: str | None = None


@dataclass(frozen=True)
class Touch:
    at: datetime
    channel: str
    summary: str
    actor: str
