"""Stripe as a billing source: open invoices and their customers, then changes via events.

A full sync lists every open invoice (`status=open`: both `send_invoice` and
`charge_automatically`), `page_size` at a time with `starting_after`, with each page's
customers expanded inline (one API call per page). Before the first page it notes the
newest event, and once the last page is stored the cursor becomes that event position, so
whatever changed while the backfill ran is replayed by the next incremental sync.

The full sync then lists the invoices paid in the last `paid_lookback_days` (default 365;
`status=paid`, `created[gte]`), their paid date from `status_transitions.paid_at`: the
customers' settled history, which the risk score reads. Only after that last part does the
cursor hand over to the event position.

An incremental sync reads the Events API (`/v1/events`, invoice and customer types) from
the cursor's `created[gte]`, skipping the event ids it already applied at that boundary;
its cost follows the number of changes, not the size of the ledger. Events are applied
oldest first, and each page's cursor resumes right after that page.

Cursor (opaque to everyone else, JSON):
    {"v": 1, "phase": "backfill", "part": "open" | "paid", "after": "in_...",
     "paid_since": T0, "events": {"since": T, "seen": [...]}}
    {"v": 1, "phase": "events", "since": T, "seen": ["evt_...", ...]}

The mapping functions (`invoice_record`, `customer_context`, `customer_from_invoice`) are
shared with the webhook path (services/billing_events.py).

Every SDK call goes through `retrying("stripe", ...)`; the SDK's own retries are off
(`max_network_retries=0`) so backoff and Retry-After handling live in one place.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, TypeVar

import stripe

from connectors.base import BillingPage, retrying, timezone_for
from connectors.errors import (
    AuthError,
    ConnectorError,
    DataError,
    RateLimitedError,
    UnavailableError,
)
from dunning.calendar import is_supported_country, is_valid_timezone, local_date
from dunning.model import CustomerContext, InvoiceRecord, InvoiceStatus
from dunning.money import from_minor

SYSTEM = "stripe"
T = TypeVar("T")
Obj = Mapping[str, Any]

# The event types that can change what the ledger holds about an invoice or a customer.
EVENT_TYPES: tuple[str, ...] = (
    "invoice.finalized", "invoice.updated", "invoice.paid", "invoice.payment_succeeded",
    "invoice.payment_failed", "invoice.voided", "invoice.marked_uncollectible",
    "customer.created", "customer.updated",
)
# Events can become visible in the list a little after their `created` second: each
# incremental read starts this many seconds before the newest event applied, and skips
# the ids it applied already (kept for that window only).
OVERLAP_SECONDS = 300
# Stripe keeps events for 30 days; an older cursor cannot be replayed: start over.
EVENT_RETENTION_SECONDS = 29 * 24 * 3600
# A full backfill also reads the invoices paid this many days back: the risk score needs
# each customer's settled history (paid late or on time), or every customer would look like
# a first-time payer.
PAID_LOOKBACK_DAYS = 365

_STATUSES = {
    "open": InvoiceStatus.OPEN, "paid": InvoiceStatus.PAID, "void": InvoiceStatus.VOID,
    "uncollectible": InvoiceStatus.UNCOLLECTIBLE,
}


# --- mapping (pure) -----------------------------------------------------------------------

def _get(obj: Obj | None, *path: str) -> Any:
    cur: Any = obj
    for key in path:
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(key)
    return cur


def _date(ts: Any, timezone: str) -> date | None:
    """A Unix timestamp as the calendar date in the customer's zone (Stripe's are UTC)."""
    if ts is None or isinstance(ts, bool):
        return None
    return local_date(datetime.fromtimestamp(int(ts), UTC), timezone)


def _country(raw: Any, default: str) -> str:
    code = str(raw or "").upper()
    return code if is_supported_country(code) else default


def customer_id_of(invoice: Obj) -> str:
    """The invoice's customer id, whether `customer` is an id or an expanded object."""
    cust = invoice.get("customer")
    if isinstance(cust, Mapping):
        return str(cust.get("id"))
    return str(cust)


def customer_timezone(obj: Obj, *, company_timezone: str, company_country: str) -> str:
    """`metadata.timezone` when it is a real IANA zone, else the country's usual zone."""
    tz = _get(obj, "metadata", "timezone")
    if isinstance(tz, str) and tz and is_valid_timezone(tz):
        return tz
    country = _country(_get(obj, "address", "country"), company_country)
    return timezone_for(country, company_timezone)


def has_default_payment_method(customer: Obj) -> bool:
    return bool(_get(customer, "invoice_settings", "default_payment_method")
                or customer.get("default_source"))


def customer_domain(customer: Obj) -> str | None:
    email = customer.get("email") or customer.get("customer_email")
    if isinstance(email, str) and "@" in email:
        return email.rsplit("@", 1)[1].strip().lower() or None
    return None


def customer_context(obj: Obj, *, company_timezone: str, company_country: str,
                     currency: str | None = None, autopay: bool | None = None
                     ) -> CustomerContext:
    """A Stripe customer as the billing side of a CustomerContext.

    `autopay` is None when the caller does not know how the customer's invoices are
    collected; it then counts as autopay only with a default payment method on file.
    `currency` is the currency of the customer's invoices when the caller knows it: it
    wins over the customer's own field (unset on a new Stripe customer).
    """
    country = _country(_get(obj, "address", "country"), company_country)
    cur = str(currency or obj.get("currency") or "USD").upper()
    has_pm = has_default_payment_method(obj)
    email = obj.get("email")
    name = obj.get("name") or obj.get("description") or email or str(obj.get("id"))
    return CustomerContext(
        customer_id=str(obj["id"]), name=str(name), country=country,
        timezone=customer_timezone(obj, company_timezone=company_timezone,
                                   company_country=company_country),
        currency=cur,
        ap_contact_name=_get(obj, "metadata", "ap_contact_name") or None,
        ap_contact_email=str(email) if email else None,
        autopay=has_pm if autopay is None else (autopay and has_pm),
    )


def customer_from_invoice(invoice: Obj, *, company_timezone: str, company_country: str
                          ) -> CustomerContext:
    """The customer as an invoice snapshot describes it (`customer_name`, `customer_email`,
    `customer_address`): for a webhook about a customer the ledger has not seen yet."""
    country = _country(_get(invoice, "customer_address", "country"), company_country)
    email = invoice.get("customer_email")
    cid = customer_id_of(invoice)
    return CustomerContext(
        customer_id=cid, name=str(invoice.get("customer_name") or email or cid),
        country=country, timezone=timezone_for(country, company_timezone),
        currency=str(invoice.get("currency") or "USD").upper(),
        ap_contact_email=str(email) if email else None,
        autopay=False,
    )


def invoice_record(obj: Obj, *, timezone: str) -> InvoiceRecord | None:
    """A Stripe invoice as an InvoiceRecord, dates in the customer's `timezone`.

    None for what is not (or no longer) a receivable: drafts and deleted invoices.
    Amounts are minor units in the invoice currency (`amount_due` is what the customer
    owes in total, `amount_paid` what came in). A charge_automatically invoice has no
    `due_date`: it is due when finalized. A failed automatic charge (open, attempted,
    attempt_count > 0) sets `payment_failed_on` to the finalization date, when Stripe makes
    the first attempt: the same date from a sync and from any webhook, so it never moves.
    """
    status = _STATUSES.get(str(obj.get("status")))
    if status is None or obj.get("deleted"):
        return None
    currency = str(obj["currency"]).upper()
    created = _date(obj.get("created"), timezone)
    assert created is not None, "a Stripe invoice always has `created`"
    finalized = _date(_get(obj, "status_transitions", "finalized_at"), timezone)
    issue = finalized or created
    due = _date(obj.get("due_date"), timezone) or issue
    failed_on = None
    if (status is InvoiceStatus.OPEN and obj.get("collection_method") == "charge_automatically"
            and int(obj.get("attempt_count") or 0) > 0):
        failed_on = issue
    paid_on = _date(_get(obj, "status_transitions", "paid_at"), timezone)
    return InvoiceRecord(
        invoice_id=str(obj["id"]), number=str(obj.get("number") or obj["id"]),
        customer_id=customer_id_of(obj), issue_date=issue, due_date=due, currency=currency,
        amount=from_minor(int(obj.get("amount_due") or 0), currency),
        amount_paid=from_minor(int(obj.get("amount_paid") or 0), currency),
        status=status, paid_date=paid_on if status is InvoiceStatus.PAID else None,
        payment_link=obj.get("hosted_invoice_url") or None, payment_failed_on=failed_on,
    )


# --- errors -------------------------------------------------------------------------------

def _retry_after(exc: stripe.StripeError) -> float | None:
    headers: Any = exc.headers or {}
    raw = headers.get("Retry-After") or headers.get("retry-after")
    try:
        return float(raw) if raw is not None else None
    except ValueError:
        return None


def translate(exc: stripe.StripeError) -> ConnectorError:
    """One Stripe SDK error as the project's hierarchy (messages never hold the key)."""
    message = exc.user_message or type(exc).__name__
    if isinstance(exc, stripe.AuthenticationError):
        return AuthError(SYSTEM, f"the API key was refused ({message}); check STRIPE_API_KEY")
    if isinstance(exc, stripe.PermissionError):
        return AuthError(SYSTEM, f"the API key may not do this ({message}); a restricted key "
                                 "needs read access to invoices, customers and events")
    if isinstance(exc, stripe.RateLimitError):
        return RateLimitedError(SYSTEM, f"rate limited: {message}", _retry_after(exc))
    if isinstance(exc, stripe.APIConnectionError):
        return UnavailableError(SYSTEM, "cannot reach the Stripe API (network error or "
                                        "timeout)")
    status = exc.http_status
    if isinstance(exc, stripe.APIError) and (status is None or status >= 500):
        return UnavailableError(SYSTEM, f"Stripe answered {status or 'an error'}: {message}")
    return DataError(SYSTEM, f"request refused ({status}): {message}")


# --- cursor -------------------------------------------------------------------------------

@dataclass(frozen=True)
class EventPosition:
    """Read events with `created >= since`, skipping `seen` (event id -> created)."""

    since: int = 0
    seen: tuple[tuple[str, int], ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {"since": self.since, "seen": dict(self.seen)}

    @staticmethod
    def of(data: Mapping[str, Any]) -> EventPosition:
        seen = data.get("seen") or {}
        pairs = seen.items() if isinstance(seen, Mapping) else ()
        return EventPosition(int(data.get("since") or 0),
                             tuple((str(k), int(v)) for k, v in pairs))

    def after(self, applied: Sequence[Obj]) -> EventPosition:
        """The position once `applied` are stored: `OVERLAP_SECONDS` before the newest event
        applied (late-visible events are still found), with the ids inside that window."""
        if not applied:
            return self
        newest = max(int(e["created"]) for e in applied)
        since = max(self.since, newest - OVERLAP_SECONDS)
        seen = dict(self.seen)
        seen.update({str(e["id"]): int(e["created"]) for e in applied})
        return EventPosition(since, tuple(sorted((k, v) for k, v in seen.items()
                                                 if v >= since)))


def _events_cursor(pos: EventPosition) -> str:
    return json.dumps({"v": 1, "phase": "events", **pos.as_json()}, sort_keys=True)


def _backfill_cursor(after: str, pos: EventPosition, *, part: str = "open",
                     paid_since: int | None = None) -> str:
    data: dict[str, Any] = {"v": 1, "phase": "backfill", "after": after,
                            "events": pos.as_json(), "part": part}
    if paid_since is not None:
        data["paid_since"] = paid_since
    return json.dumps(data, sort_keys=True)


def _parse_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        data = json.loads(cursor)
    except ValueError:
        return None
    if not isinstance(data, dict) or data.get("v") != 1:
        return None
    return data


# --- the source ---------------------------------------------------------------------------

@dataclass
class _Counter:
    calls: int = 0


class StripeBilling:
    """`BillingSource` over the Stripe API (or any server speaking it, via `api_base`)."""

    system = SYSTEM

    def __init__(self, api_key: str, api_base: str | None, company_timezone: str,
                 company_country: str, page_size: int = 100,
                 sleep: Callable[[float], None] | None = None, attempts: int = 5, *,
                 timeout: float = 30.0, company_currency: str = "USD",
                 clock: Callable[[], float] = time.time,
                 paid_lookback_days: int = PAID_LOOKBACK_DAYS) -> None:
        addresses: dict[str, str] = {"api": api_base.rstrip("/")} if api_base else {}
        self._client = stripe.StripeClient(
            api_key, base_addresses=addresses,  # type: ignore[arg-type]
            max_network_retries=0, http_client=stripe.RequestsClient(timeout=timeout))
        self._key_mode = "test" if "_test_" in api_key else "live"
        self._base = api_base or "https://api.stripe.com"
        self.company_timezone = company_timezone
        self.company_country = company_country
        self.company_currency = company_currency
        self.page_size = max(1, min(100, page_size))
        self._sleep = sleep
        self._attempts = attempts
        self._clock = clock
        self.paid_lookback_days = max(0, paid_lookback_days)
        # Customers seen with an automatically charged invoice: autopay stays on for them
        # across the pages of a run, whatever order their invoices come in.
        self._charged_automatically: set[str] = set()

    # -- plumbing

    def _call(self, counter: _Counter, fn: Callable[[], T]) -> T:
        def once() -> T:
            counter.calls += 1
            try:
                return fn()
            except stripe.StripeError as exc:
                raise translate(exc) from exc

        return retrying(SYSTEM, once, attempts=self._attempts, sleep=self._sleep)

    def _list(self, counter: _Counter, what: str, params: dict[str, Any]
              ) -> tuple[list[dict[str, Any]], bool]:
        service = getattr(self._client.v1, what)
        result = self._call(counter, lambda: service.list(params=params))
        return [o.to_dict() for o in result.data], bool(result.has_more)

    def _customer(self, counter: _Counter, customer_id: str) -> dict[str, Any]:
        obj = self._call(counter, lambda: self._client.v1.customers.retrieve(customer_id))
        out: dict[str, Any] = obj.to_dict()
        return out

    def _page(self, customers: Mapping[str, Obj], invoices: Sequence[Obj], cursor: str,
              counter: _Counter, hints: Mapping[str, Sequence[Obj]] | None = None) -> BillingPage:
        """Map one vendor page. A customer's autopay and fallback currency come from its
        invoices on the page, or from `hints` (its latest invoice) when it has none here."""
        by_customer: dict[str, list[Obj]] = {cid: list((hints or {}).get(cid, []))
                                             for cid in customers}
        for inv in invoices:
            by_customer.setdefault(customer_id_of(inv), []).append(inv)
        contexts: dict[str, CustomerContext] = {}
        domains: dict[str, str] = {}
        for cid, cust in customers.items():
            if cust.get("deleted"):
                continue
            own = by_customer.get(cid, [])
            if any(i.get("collection_method") == "charge_automatically" for i in own):
                self._charged_automatically.add(cid)
            currency = next((str(i["currency"]) for i in own if i.get("currency")),
                            None if cust.get("currency") else self.company_currency)
            contexts[cid] = customer_context(
                cust, company_timezone=self.company_timezone,
                company_country=self.company_country, currency=currency,
                autopay=cid in self._charged_automatically)
            domain = customer_domain(cust)
            if domain:
                domains[cid] = domain
        records: list[InvoiceRecord] = []
        for inv in invoices:
            cid = customer_id_of(inv)
            if cid not in contexts:  # a deleted customer: the invoice still names it
                contexts[cid] = customer_from_invoice(
                    inv, company_timezone=self.company_timezone,
                    company_country=self.company_country)
            rec = invoice_record(inv, timezone=contexts[cid].timezone)
            if rec is not None:
                records.append(rec)
        page = BillingPage(customers=list(contexts.values()), invoices=records, cursor=cursor,
                           customer_domains=domains, api_calls=counter.calls)
        counter.calls = 0
        return page

    # -- BillingSource

    def check(self) -> str:
        """One call each to invoices and events: the key works and may read both."""
        counter = _Counter()
        self._list(counter, "invoices", {"limit": 1})
        self._list(counter, "events", {"limit": 1, "types": list(EVENT_TYPES)})
        return (f"stripe: OK ({self._key_mode} mode key, {self._base}; invoices and events "
                "readable)")

    def pages(self, cursor: str | None, *, full: bool) -> Iterator[BillingPage]:
        state = None if full else _parse_cursor(cursor)
        counter = _Counter()
        if state is not None and state.get("phase") == "backfill":
            since = state.get("paid_since")
            yield from self._backfill(counter, EventPosition.of(state.get("events") or {}),
                                      after=str(state.get("after") or "") or None,
                                      part=str(state.get("part") or "open"),
                                      paid_since=int(since) if since is not None else None)
            return
        if state is not None and state.get("phase") == "events":
            pos = EventPosition.of(state)
            if pos.since == 0 or self._clock() - pos.since <= EVENT_RETENTION_SECONDS:
                yield from self._events(counter, pos)
                return
        yield from self._backfill(counter, self._event_position(counter), after=None)

    def refresh(self, invoice_ids: Sequence[str]) -> BillingPage:
        """The current state of given ledger invoices, read one by one: after a full
        backfill, the ledger-open invoices it did not list (paid, voided or written off
        while no event cursor covered them). An id Stripe no longer has (a deleted draft)
        comes back as void with no customer, which the sync applies to the stored row."""
        counter = _Counter()
        customers: dict[str, Obj] = {}
        invoices: list[Obj] = []
        gone: list[InvoiceRecord] = []
        for iid in invoice_ids:
            def retrieve(iid: str = iid) -> Any:
                return self._client.v1.invoices.retrieve(iid, params={"expand": ["customer"]})

            try:
                obj = self._call(counter, retrieve)
            except DataError:
                gone.append(InvoiceRecord(
                    invoice_id=iid, number=iid, customer_id="", issue_date=date.min,
                    due_date=date.min, currency=self.company_currency, amount=Decimal(0),
                    status=InvoiceStatus.VOID))
                continue
            data: dict[str, Any] = obj.to_dict()
            cust = data.get("customer")
            if isinstance(cust, Mapping):
                customers[str(cust["id"])] = cust
            invoices.append(data)
        page = self._page(customers, invoices, "", counter)
        return replace(page, invoices=page.invoices + gone, cursor=None)

    def _event_position(self, counter: _Counter) -> EventPosition:
        """Where the event stream stands before the backfill reads anything: the newest
        second with events, and every event of that second (a burst of invoices shares
        one), so only what happens after it is replayed once the backfill is stored."""
        params: dict[str, Any] = {"limit": 100, "types": list(EVENT_TYPES)}
        data, has_more = self._list(counter, "events", params)
        if not data:
            return EventPosition(0, ())
        newest = int(data[0]["created"])
        seen = [(str(e["id"]), newest) for e in data if int(e["created"]) == newest]
        while has_more and int(data[-1]["created"]) == newest:
            params = {"limit": 100, "types": list(EVENT_TYPES), "created": newest,
                      "starting_after": str(data[-1]["id"])}
            data, has_more = self._list(counter, "events", params)
            seen += [(str(e["id"]), newest) for e in data]
        return EventPosition(newest, tuple(sorted(seen)))

    def _backfill(self, counter: _Counter, pos: EventPosition, *, after: str | None,
                  part: str = "open", paid_since: int | None = None
                  ) -> Iterator[BillingPage]:
        """Open invoices, then (part "paid") those paid within the lookback, created since
        `paid_since`: fixed when the backfill starts, so a resumed run lists the same set.
        Only the very last page hands over to the event cursor noted before the first."""
        if paid_since is None:
            paid_since = int(self._clock()) - self.paid_lookback_days * 86400
        while True:
            params: dict[str, Any] = {"status": part, "limit": self.page_size,
                                      "expand": ["data.customer"]}
            if part == "paid":
                params["created"] = {"gte": paid_since}
            if after:
                params["starting_after"] = after
            data, has_more = self._list(counter, "invoices", params)
            customers: dict[str, Obj] = {}
            for inv in data:
                cust = inv.get("customer")
                if isinstance(cust, Mapping):
                    customers[str(cust["id"])] = cust
            if data:
                after = str(data[-1]["id"])
            more = has_more and bool(data)
            history = part == "open" and self.paid_lookback_days > 0
            if more:
                cursor = _backfill_cursor(after or "", pos, part=part, paid_since=paid_since)
            elif history:  # the open part is done: the paid history comes next
                cursor = _backfill_cursor("", pos, part="paid", paid_since=paid_since)
            else:
                cursor = _events_cursor(pos)
            yield self._page(customers, data, cursor, counter)
            if not more:
                if not history:
                    return
                part, after = "paid", None

    def _events(self, counter: _Counter, pos: EventPosition) -> Iterator[BillingPage]:
        seen = {k for k, _ in pos.seen}
        fresh: list[dict[str, Any]] = []
        after: str | None = None
        while True:  # newest first, everything since the position: proportional to changes
            params: dict[str, Any] = {"limit": 100, "types": list(EVENT_TYPES),
                                      "created": {"gte": pos.since}}
            if after:
                params["starting_after"] = after
            data, has_more = self._list(counter, "events", params)
            fresh += [e for e in data if str(e["id"]) not in seen]
            if not has_more or not data:
                break
            after = str(data[-1]["id"])
        fresh.reverse()  # oldest first (stable within a second)
        fresh.sort(key=lambda e: int(e["created"]))
        if not fresh:
            yield self._page({}, [], _events_cursor(pos), counter)
            return
        for start in range(0, len(fresh), self.page_size):
            batch = fresh[start:start + self.page_size]
            invoices: dict[str, Obj] = {}
            customers: dict[str, Obj] = {}
            for event in batch:  # a later snapshot of the same object replaces an earlier one
                obj = _get(event, "data", "object")
                if not isinstance(obj, Mapping):
                    continue
                if obj.get("object") == "invoice":
                    invoices[str(obj["id"])] = obj
                elif obj.get("object") == "customer":
                    customers[str(obj["id"])] = obj
            pos = pos.after(batch)
            yield self._events_page(counter, customers, list(invoices.values()),
                                    _events_cursor(pos))

    def _events_page(self, counter: _Counter, customers: dict[str, Obj], invoices: list[Obj],
                     cursor: str) -> BillingPage:
        invoices = [i for i in invoices if i.get("status") in _STATUSES]
        for inv in invoices:  # every invoice comes with its customer, as Stripe has it now
            cid = customer_id_of(inv)
            if cid not in customers:
                customers[cid] = self._customer(counter, cid)
        invoiced = {customer_id_of(i) for i in invoices}
        hints: dict[str, list[Obj]] = {}
        for cid in customers:
            if cid not in invoiced and not customers[cid].get("deleted"):
                # A customer change alone: how its latest invoice is collected says autopay.
                data, _ = self._list(counter, "invoices", {"customer": cid, "limit": 1})
                hints[cid] = list(data)
        return self._page(customers, invoices, cursor, counter, hints)


__all__ = [
    "EVENT_TYPES", "StripeBilling", "customer_context", "customer_domain",
    "customer_from_invoice", "customer_id_of", "customer_timezone",
    "has_default_payment_method", "invoice_record", "translate",
]
