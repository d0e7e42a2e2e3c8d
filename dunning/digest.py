"""The manager digest as data: what the day's summary says, before any layout.

Gathered by services.digest, rendered by blocks.digest.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from dunning.model import Kind, Lane


@dataclass(frozen=True)
class WaitingDecision:
    """An invoice whose next step is a finance decision nobody has taken yet."""

    customer: str
    invoice_number: str
    amount: Decimal
    currency: str
    days_past_due: int


@dataclass(frozen=True)
class PromiseItem:
    customer: str
    invoice_number: str
    amount: Decimal | None  # None: the promise named no amount
    currency: str
    promised_date: date


@dataclass(frozen=True)
class DisputeItem:
    customer: str
    invoice_number: str
    amount: Decimal | None
    currency: str
    reason: str


@dataclass(frozen=True)
class StaleCard:
    """A card nobody acted on for 2+ business days."""

    customer: str
    step: str
    owner_label: str  # "<@U123>" or an email
    age_business_days: int
    kind: Kind | None = None  # with it, the step reads in words


@dataclass(frozen=True)
class AtRisk:
    name: str
    score: int
    totals: dict[str, Decimal]  # open amount due per currency


@dataclass(frozen=True)
class DigestView:
    day: date
    open_by_lane: dict[Lane, dict[str, Decimal]]
    dso: Decimal | None
    dso_30_days_ago: Decimal | None
    finance_waiting: Sequence[WaitingDecision] = ()
    promises_due_today: Sequence[PromiseItem] = ()
    broken_promises: Sequence[PromiseItem] = ()
    new_disputes: Sequence[DisputeItem] = ()
    stale_cards: Sequence[StaleCard] = ()
    top_at_risk: Sequence[AtRisk] = ()
    chart_file_id: str | None = None  # Slack file id of the uploaded DSO chart
