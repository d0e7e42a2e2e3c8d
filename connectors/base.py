"""What every billing and CRM connector returns, and the one retry policy they all share.

A billing connector (Stripe, QuickBooks) yields `BillingPage`s: the customers and invoices
of one vendor page plus the cursor to resume from once that page is stored. The sync
service stores each page and its cursor in one transaction, so a crash mid-sync resumes at
the last stored page: no duplicate rows, no lost updates.

A CRM connector (HubSpot) yields `CrmPage`s of `CrmCompany` and writes tasks and notes.

Retries live here and nowhere else: `retrying(system, call)` retries RateLimitedError and
UnavailableError with exponential backoff that honours a vendor's Retry-After, and lets
AuthError and DataError through at once (a person must act).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Protocol, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_attempt
from tenacity.wait import wait_base, wait_exponential

from connectors.errors import ConnectorError, RateLimitedError, UnavailableError
from dunning.model import CustomerContext, InvoiceRecord

T = TypeVar("T")
log = logging.getLogger(__name__)

# Default timezone per country when the billing system knows only the country (the
# customer's business-day calendar needs both); the company's own zone is the fallback.
COUNTRY_TIMEZONES: dict[str, str] = {
    "US": "America/New_York", "CA": "America/Toronto", "GB": "Europe/London",
    "IE": "Europe/Dublin", "DE": "Europe/Berlin", "AT": "Europe/Vienna",
    "CH": "Europe/Zurich", "FR": "Europe/Paris", "BE": "Europe/Brussels",
    "NL": "Europe/Amsterdam", "LU": "Europe/Luxembourg", "ES": "Europe/Madrid",
    "PT": "Europe/Lisbon", "IT": "Europe/Rome", "SE": "Europe/Stockholm",
    "NO": "Europe/Oslo", "DK": "Europe/Copenhagen", "FI": "Europe/Helsinki",
    "PL": "Europe/Warsaw", "CZ": "Europe/Prague", "AU": "Australia/Sydney",
    "NZ": "Pacific/Auckland", "JP": "Asia/Tokyo", "SG": "Asia/Singapore",
    "IN": "Asia/Kolkata", "BR": "America/Sao_Paulo", "MX": "America/Mexico_City",
    "AR": "America/Argentina/Buenos_Aires", "ZA": "Africa/Johannesburg",
    "IL": "Asia/Jerusalem", "AE": "Asia/Dubai", "HK": "Asia/Hong_Kong",
    "KR": "Asia/Seoul", "CN": "Asia/Shanghai",
}


def timezone_for(country: str | None, default: str) -> str:
    return COUNTRY_TIMEZONES.get((country or "").upper(), default)


@dataclass(frozen=True)
class BillingPage:
    """One vendor page: store `customers` and `invoices`, then save `cursor`.

    `customers` are the billing system's view (name, country, currency, AP contact from
    the billing email); the CRM later adds owner, ARR and health. `cursor` is opaque to
    everything but the connector that made it; None means "start over".
    """

    customers: list[CustomerContext]
    invoices: list[InvoiceRecord]
    cursor: str | None
    # Billing-side extras the sync keeps on the customer row: {"domain": ..., ...}
    customer_domains: dict[str, str] = field(default_factory=dict)
    api_calls: int = 0


class BillingSource(Protocol):
    system: str  # "stripe" | "quickbooks"

    def pages(self, cursor: str | None, *, full: bool) -> Iterator[BillingPage]:
        """Pages changed since `cursor` (everything open when `full` or no cursor)."""
        ...

    def check(self) -> str:
        """Authenticate and reach the API; a one-line description, or raise ConnectorError."""
        ...

    def refresh(self, invoice_ids: Sequence[str]) -> BillingPage:
        """These invoices as they stand now, read by id (cursor None); an id the system no
        longer has comes back void with an empty customer_id."""
        ...


@dataclass(frozen=True)
class CrmCompany:
    """A CRM company with what dunning needs of it."""

    external_id: str
    name: str
    domain: str | None = None
    owner_email: str | None = None
    csm_email: str | None = None
    arr: Decimal | None = None
    health: int | None = None  # 0-100
    lifecycle: str | None = None
    country: str | None = None
    timezone: str | None = None
    ap_contact_name: str | None = None
    ap_contact_email: str | None = None
    strategic: bool = False
    # Billing ids held on the company, e.g. {"stripe": "cus_123", "quickbooks": "58"}
    billing_ids: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class CrmPage:
    companies: list[CrmCompany]
    cursor: str | None
    api_calls: int = 0


class CrmSource(Protocol):
    system: str  # "hubspot"

    def pages(self, cursor: str | None, *, full: bool) -> Iterator[CrmPage]:
        ...

    def check(self) -> str:
        ...

    def create_task(self, company_id: str, *, owner_email: str | None, subject: str,
                    body: str, due: date) -> str:
        """Create a task for the owner on the company; returns the task id."""
        ...

    def log_note(self, company_id: str, *, body: str, when: date) -> str:
        """Log a note on the company timeline; returns the note id."""
        ...


@dataclass
class RetryStats:
    """Retries per system since start, for /metrics and the sync report (thread-safe)."""

    counts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, system: str) -> None:
        with self.lock:
            self.counts[system] = self.counts.get(system, 0) + 1


RETRIES = RetryStats()


class _WaitRetryAfter(wait_base):
    """Exponential backoff, or the vendor's Retry-After when it gave one (capped)."""

    def __init__(self, initial: float, maximum: float) -> None:
        self.exp = wait_exponential(multiplier=initial, max=maximum)
        self.maximum = maximum

    def __call__(self, retry_state: RetryCallState) -> float:
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimitedError) and exc.retry_after is not None:
            return min(max(exc.retry_after, 0.0), self.maximum)
        return float(self.exp(retry_state))


def retrying(system: str, call: Callable[[], T], *, attempts: int = 5,
             initial_wait: float = 0.5, max_wait: float = 30.0,
             sleep: Callable[[float], None] | None = None) -> T:
    """Run `call`; retry rate limits and outages with backoff; raise the last error.

    `call` must already translate vendor errors into the ConnectorError hierarchy.
    """

    def before_sleep(state: RetryCallState) -> None:
        RETRIES.add(system)
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning("%s: retrying after %s (attempt %d)", system,
                    type(exc).__name__, state.attempt_number)

    kwargs: dict[str, object] = {}
    if sleep is not None:
        kwargs["sleep"] = sleep
    retryer = Retrying(
        retry=retry_if_exception_type((RateLimitedError, UnavailableError)),
        stop=stop_after_attempt(max(1, attempts)),
        wait=_WaitRetryAfter(initial_wait, max_wait),
        before_sleep=before_sleep,
        reraise=True,
        **kwargs,  # type: ignore[arg-type]
    )
    return retryer(call)


__all__ = [
    "RETRIES", "BillingPage", "BillingSource", "ConnectorError", "CrmCompany", "CrmPage",
    "CrmSource", "retrying", "timezone_for",
]
