"""SQLModel tables: the durable record the shell reads and writes around the pure core.

Rules every table follows:
- money is integer minor units (`BigInteger`) next to a 3-letter currency, never Float/Numeric;
- timestamps are timezone-aware UTC (`UTCDateTime`, a `DateTime(timezone=True)` that refuses
  naive values and always returns UTC, also on SQLite); calendar dates are `Date`;
- JSON payloads are stored as text the code (de)serializes itself, identical on every backend;
- state columns are plain strings (the allowed values are the StrEnums below or in
  `dunning.model`), so adding a state never needs an ALTER TYPE.

The tables live in their own `MetaData` with a naming convention, so every index and
constraint has a stable name Alembic can find again (SQLite batch migrations need names).
Import `metadata` from here; `SQLModel.metadata` does not hold these tables.
"""

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Index, MetaData, Text, UniqueConstraint
from sqlalchemy.orm import registry
from sqlmodel import Field, SQLModel
from sqlmodel.sql.sqltypes import UTCDateTime

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

_registry = registry(metadata=MetaData(naming_convention=NAMING_CONVENTION))


class StoreModel(SQLModel, registry=_registry):
    """Base of every table here: binds them to this package's own MetaData."""


metadata: MetaData = StoreModel.metadata


class EscalationState(StrEnum):
    """Life of an escalation card, from the plan to its end."""

    PROPOSED = "proposed"  # created by the plan, not yet posted
    POSTING = "posting"  # claimed for posting; reconciled from Slack's history after a crash
    POSTED = "posted"  # card is in the owner's channel
    APPROVED = "approved"
    REJECTED = "rejected"
    SENT = "sent"  # the customer message left through the outbox
    DONE = "done"  # an owner task or finance decision was handled
    SKIPPED = "skipped"
    CLOSED = "closed"  # the invoice was paid/voided while the card was open
    CANCELLED = "cancelled"


class DraftSource(StrEnum):
    TEMPLATE = "template"
    LLM = "llm"


class DisputeStatus(StrEnum):
    OPEN = "open"
    RESOLVED = "resolved"


class SnoozeScope(StrEnum):
    CUSTOMER = "customer"  # target is a customer id
    OWNER = "owner"  # target is the owner's email


class OutboxStatus(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED = "failed"  # will be retried at available_at
    NEEDS_HUMAN = "needs_human"  # gave up retrying; someone must look


def utcnow() -> datetime:
    """The default for created/updated columns: aware UTC, never naive."""
    return datetime.now(UTC)


def _money(*, nullable: bool = False, default: Any = ...) -> Any:
    """Integer minor units in a BIGINT: exact, and large enough for any invoice."""
    if default is ...:
        return Field(sa_type=BigInteger, nullable=nullable)
    return Field(default=default, sa_type=BigInteger, nullable=nullable)


def _created() -> Any:
    return Field(default_factory=utcnow, sa_type=UTCDateTime())


def _updated() -> Any:
    return Field(
        default_factory=utcnow, sa_type=UTCDateTime(), sa_column_kwargs={"onupdate": utcnow}
    )


def _timestamp(*, nullable: bool = False) -> Any:
    if nullable:
        return Field(default=None, sa_type=UTCDateTime(), nullable=True)
    return Field(sa_type=UTCDateTime())


def _text(default: Any = ..., *, nullable: bool = False) -> Any:
    """Unbounded text: JSON payloads, message bodies, notes."""
    if default is ...:
        return Field(sa_type=Text, nullable=nullable)
    return Field(default=default, sa_type=Text, nullable=nullable)


class Customer(StoreModel, table=True):
    """A billed account with its CRM context: who to write to, who owns it, how sensitive."""

    __tablename__ = "customer"

    id: str = Field(primary_key=True)  # the customer_id of the billing system
    name: str
    name_normalized: str = Field(index=True)  # lower-cased name for `/dunning status <name>`
    country: str = Field(default="US", max_length=2)  # ISO 3166-1 alpha-2: holiday calendar
    timezone: str = "UTC"  # IANA name
    currency: str = Field(default="USD", max_length=3)
    arr_minor: int | None = _money(nullable=True, default=None)
    health: int | None = None  # 0-100, lower is worse
    owner_email: str | None = Field(default=None, index=True)
    csm_email: str | None = None
    ap_contact_name: str | None = None
    ap_contact_email: str | None = None
    strategic: bool = False
    autopay: bool = False
    do_not_contact: bool = False
    domain: str | None = None
    language: str | None = None  # ISO 639-1 for customer messages; None: from the country
    source: str = "csv"
    external_ids: str = _text("{}")  # JSON object: {"stripe": "cus_...", "hubspot": "123"}
    created_at: datetime = _created()
    updated_at: datetime = _updated()


class Invoice(StoreModel, table=True):
    """An invoice and where it stands; `next_action_on` is when the plan must look at it again."""

    __tablename__ = "invoice"
    # Leading customer_id: serves the FK, a customer's invoices and its open ones.
    __table_args__ = (Index("ix_invoice_customer_status", "customer_id", "status"),)

    id: str = Field(primary_key=True)  # the invoice_id of the billing system
    number: str
    customer_id: str = Field(foreign_key="customer.id")
    issue_date: date
    due_date: date
    currency: str = Field(max_length=3)
    amount_minor: int = _money()
    amount_paid_minor: int = _money(default=0)
    status: str = "open"  # dunning.model.InvoiceStatus
    paid_date: date | None = None
    payment_link: str | None = None
    payment_failed_on: date | None = None  # an autopay charge failed on this date
    # The daily plan reads only `next_action_on <= today`: its index keeps the plan's cost
    # proportional to the work due, not to the size of the ledger.
    next_action_on: date | None = Field(default=None, index=True)
    source: str = "csv"
    created_at: datetime = _created()
    updated_at: datetime = _updated()


class Payment(StoreModel, table=True):
    """Money received against an invoice (webhook, sync or manual), for days-to-pay and audit."""

    __tablename__ = "payment"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True)
    amount_minor: int = _money()
    currency: str = Field(max_length=3)
    paid_on: date
    reference: str | None = None
    source: str = "csv"
    created_at: datetime = _created()


class Escalation(StoreModel, table=True):
    """One planned step for one invoice; unique per (invoice, step) so re-runs add nothing."""

    __tablename__ = "escalation"
    # The unique index leads with invoice_id, so it also serves lookups by invoice. The
    # message index finds the cards sharing a Slack message (every card update reads it).
    __table_args__ = (
        UniqueConstraint("invoice_id", "step", name="uq_escalation_invoice_step"),
        Index("ix_escalation_slack_message", "slack_channel", "slack_ts"),
    )

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id")
    step: str
    kind: str  # dunning.model.Kind
    tone: str | None = None
    approval: str | None = None
    channel: str
    lane: str
    days_past_due: int
    scheduled_on: date
    reasons: str = _text("[]")  # JSON list of the human-readable reasons
    owner: str | None = None
    state: str = Field(default=EscalationState.PROPOSED.value, index=True)
    plan_date: date  # the run date that created it
    created_at: datetime = _created()
    handled_by: str | None = None
    handled_at: datetime | None = _timestamp(nullable=True)
    slack_channel: str | None = None
    slack_ts: str | None = None  # with slack_channel: lets the card be updated in place
    note: str | None = _text(None, nullable=True)  # a rejection reason, a finance decision


class Draft(StoreModel, table=True):
    """The customer message drafted for an escalation (LLM or template), with its cost."""

    __tablename__ = "draft"

    id: int | None = Field(default=None, primary_key=True)
    escalation_id: int = Field(foreign_key="escalation.id", unique=True)
    subject: str
    body: str = _text()
    source: str = DraftSource.TEMPLATE.value
    cache_key: str = Field(index=True)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = _money(default=0)  # millionths of a USD spent on the model call
    note: str | None = _text(None, nullable=True)  # why a fallback happened
    created_at: datetime = _created()


class Promise(StoreModel, table=True):
    """A promise to pay logged by a person: pauses reminders until its date (plus grace)."""

    __tablename__ = "promise"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True)
    promised_date: date
    amount_minor: int | None = _money(nullable=True, default=None)
    currency: str = Field(max_length=3)
    status: str = "open"  # dunning.model.PromiseStatus
    note: str = _text("")
    created_by: str
    created_at: datetime = _created()
    resolved_at: datetime | None = _timestamp(nullable=True)


class Dispute(StoreModel, table=True):
    """A disputed invoice: stops routine reminders and routes the invoice to its owner."""

    __tablename__ = "dispute"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True)
    reason: str
    amount_minor: int | None = _money(nullable=True, default=None)
    currency: str = Field(max_length=3)
    note: str = _text("")
    status: str = DisputeStatus.OPEN.value
    opened_on: date
    resolved_on: date | None = None
    created_by: str
    created_at: datetime = _created()


class Snooze(StoreModel, table=True):
    """A pause of a customer's or an owner's cards until a date (quarter-end, PTO)."""

    __tablename__ = "snooze"
    __table_args__ = (Index("ix_snooze_scope_target", "scope", "target"),)

    id: int | None = Field(default=None, primary_key=True)
    scope: str  # SnoozeScope
    target: str  # a customer id, or an owner's email
    until: date
    reason: str = ""
    created_by: str
    created_at: datetime = _created()
    cancelled: bool = False


class Touch(StoreModel, table=True):
    """Every contact made with the customer about an invoice, for the card and the CRM."""

    __tablename__ = "touch"

    id: int | None = Field(default=None, primary_key=True)
    invoice_id: str = Field(foreign_key="invoice.id", index=True)
    customer_id: str = Field(foreign_key="customer.id", index=True)
    channel: str
    step: str | None = None
    occurred_at: datetime = _timestamp()
    summary: str = _text("")
    actor: str


class AuditEvent(StoreModel, table=True):
    """Append-only, hash-chained record of every write: who changed what, when, from what."""

    __tablename__ = "audit_event"
    __table_args__ = (
        Index("ix_audit_event_entity", "entity_type", "entity_id"),
        # Never reuse the id of a deleted last row on SQLite (ids order the chain).
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = _timestamp()
    actor: str
    action: str
    entity_type: str
    entity_id: str
    before: str | None = _text(None, nullable=True)  # canonical JSON
    after: str | None = _text(None, nullable=True)  # canonical JSON
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class Outbox(StoreModel, table=True):
    """Customer-facing effects waiting to be delivered exactly once per idempotency key."""

    __tablename__ = "outbox"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(unique=True)  # idempotency key
    kind: str
    payload: str = _text()  # JSON
    status: str = Field(default=OutboxStatus.PENDING.value, index=True)
    attempts: int = 0
    available_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime())
    created_at: datetime = _created()
    sent_at: datetime | None = _timestamp(nullable=True)
    last_error: str | None = _text(None, nullable=True)


class SyncCursor(StoreModel, table=True):
    """How far each connector has read, so a sync asks only for what changed since."""

    __tablename__ = "sync_cursor"

    source: str = Field(primary_key=True)
    cursor: str = _text()
    updated_at: datetime = _updated()


class ConnectorCredential(StoreModel, table=True):
    """Credentials a connector refreshes itself (QuickBooks OAuth tokens), as JSON.

    Only rotating tokens live here; the long-lived client secret stays in settings.
    """

    __tablename__ = "connector_credential"

    system: str = Field(primary_key=True)
    value: str = _text()  # JSON: {"access_token", "refresh_token", "expires_at", ...}
    updated_at: datetime = _updated()


class WebhookEvent(StoreModel, table=True):
    """Every vendor webhook event processed once, by its event id (duplicates are dropped)."""

    __tablename__ = "webhook_event"

    id: str = Field(primary_key=True)  # "<system>:<event id>"
    system: str
    type: str
    object_id: str | None = None  # the invoice or customer the event is about
    outcome: str = ""  # what it changed, for the audit trail and debugging
    received_at: datetime = _created()


class ReplyStatus(StrEnum):
    PROPOSED = "proposed"  # understood; a person has not decided yet
    CONFIRMED = "confirmed"  # a person applied the proposal
    DISMISSED = "dismissed"  # a person dismissed it
    UNMATCHED = "unmatched"  # no invoice or customer found; finance must look


class CustomerReply(StoreModel, table=True):
    """A customer's reply (IMAP or pasted on a card) and what the bot understood of it.

    Nothing changes state because of a reply until a person confirms the proposal.
    """

    __tablename__ = "customer_reply"

    id: int | None = Field(default=None, primary_key=True)
    source: str  # imap | card
    message_id: str | None = Field(default=None, unique=True)  # RFC 5322 Message-ID (IMAP)
    in_reply_to: str | None = None
    sender: str | None = None
    subject: str = ""
    body: str = _text()
    received_at: datetime = _timestamp()
    customer_id: str | None = Field(default=None, foreign_key="customer.id", index=True)
    invoice_id: str | None = Field(default=None, foreign_key="invoice.id", index=True)
    escalation_id: int | None = Field(default=None, foreign_key="escalation.id")
    matched_by: str | None = None  # in-reply-to | references | invoice-number | domain | card
    intent: str = "other"
    proposal: str = _text("{}")  # JSON: promise_date, amount, reference, reason, return_date
    confidence: float = 0.0
    evidence: str = _text("")
    injection_suspected: bool = False
    classifier: str = "rules"  # rules | llm
    status: str = ReplyStatus.PROPOSED.value
    handled_by: str | None = None
    handled_at: datetime | None = _timestamp(nullable=True)
    created_by: str = "system"
    created_at: datetime = _created()


class LlmCall(StoreModel, table=True):
    """Every model call: what it was for, tokens, cost and outcome (the daily budget)."""

    __tablename__ = "llm_call"

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime(), index=True)
    purpose: str  # draft | classify | screen
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_micros: int = _money(default=0)  # millionths of a USD
    outcome: str = "ok"  # ok | malformed | fact-mismatch | timeout | rate-limited | error
    subject_id: str | None = None  # the escalation or reply it was for


class Meta(StoreModel, table=True):
    """Small named values the store keeps for itself: policy fingerprint, audit chain head."""

    __tablename__ = "meta"

    key: str = Field(primary_key=True)
    value: str = _text()
