"""QuickBooks Online as a billing source: open invoices and their customers, then changes.

The real SDKs do the talking: python-quickbooks builds the v3 requests (queries are POSTed
SQL text, change data capture is `GET /cdc`, `Invoice.send`), intuit-oauth refreshes the
OAuth 2 tokens. Two seams make both run against any compatible endpoint without network
surprises:

- the v3 base URL is an instance override of `api_url_v3` / `sandbox_api_url_v3`;
- intuit-oauth fetches Intuit's discovery document when an `AuthClient` is built; ours is
  built from a local copy of that document (token endpoint overridable), so construction
  never touches the network.

Requests go through our own `requests.Session` (bearer token, timeout, call count, the last
response kept for error translation) instead of requests-oauthlib's, which refuses plain
HTTP and never times out.

Sync model (see `connectors.base`): a full backfill pages `select * from Invoice where
Balance > '0'` with 1-based STARTPOSITION/MAXRESULTS and reads the customers of each page
by id, so every page is self-contained; then, the same way, the paid history
(`Balance = '0' and TxnDate >= <lookback start>`, paid dates from the linked Payments'
TxnDate). Its cursor resumes after the last stored page; the last page's cursor switches
to change data capture from the time the backfill *started*, so nothing changed during
the backfill is lost. Incremental runs ask CDC for Invoice, Customer and Payment changes
since the cursor. When CDC would truncate (1,000 objects per
entity) the run falls back to paging invoices by `MetaData.LastUpdatedTime`; when the
cursor is older than CDC's 30-day window, to a full backfill.

Not thread-safe: one instance per sync run (the token store is the shared state).
"""

from __future__ import annotations

import json
import logging
import re
import unicodedata
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

import requests
from intuitlib.client import AuthClient  # type: ignore[import-untyped]
from intuitlib.exceptions import AuthClientError  # type: ignore[import-untyped]
from quickbooks.client import QuickBooks  # type: ignore[import-untyped]
from quickbooks.exceptions import QuickbooksException  # type: ignore[import-untyped]

from connectors.base import BillingPage, retrying, timezone_for
from connectors.errors import (
    AuthError,
    ConnectorError,
    DataError,
    RateLimitedError,
    UnavailableError,
)
from dunning.calendar import is_supported_country, local_date
from dunning.model import CustomerContext, InvoiceRecord, InvoiceStatus

T = TypeVar("T")
log = logging.getLogger(__name__)

SYSTEM = "quickbooks"
ID_PREFIX = "qbo-"
MAX_PAGE_SIZE = 1000  # QuickBooks' MAXRESULTS ceiling, and CDC's per-entity ceiling
MINOR_VERSION = 75  # the oldest minor version Intuit still serves
CDC_ENTITIES = "Invoice,Customer,Payment"
CDC_WINDOW = timedelta(days=30)  # CDC refuses older changedSince values
# Our clock and QuickBooks' can disagree by a little; asking from slightly earlier only
# re-delivers a few changes, which the sync upserts idempotently.
DEFAULT_CDC_OVERLAP = timedelta(minutes=5)
# A full backfill also reads the invoices paid this many days back (`Balance = '0'`, by
# TxnDate): the risk score needs each customer's settled history.
PAID_LOOKBACK_DAYS = 365
# Refresh a little before the access token expires rather than eat a 401 mid-sync.
EXPIRY_MARGIN = timedelta(seconds=60)
RECONNECT = "reconnect QuickBooks (authorize the app again and set QUICKBOOKS_REFRESH_TOKEN)"

# intuit-oauth's discovery documents (developer.intuit.com/.well-known/openid_configuration
# and openid_sandbox_configuration), kept here so building a client needs no network.
INTUIT_TOKEN_URL = "https://oauth.platform.intuit.com/oauth2/v1/tokens/bearer"
INTUIT_DISCOVERY: dict[str, dict[str, str]] = {
    "production": {
        "issuer": "https://oauth.platform.intuit.com/op/v1",
        "authorization_endpoint": "https://appcenter.intuit.com/connect/oauth2",
        "token_endpoint": INTUIT_TOKEN_URL,
        "userinfo_endpoint": "https://accounts.platform.intuit.com/v1/openid_connect/userinfo",
        "revocation_endpoint": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
        "jwks_uri": "https://oauth.platform.intuit.com/op/v1/jwks",
    },
    "sandbox": {
        "issuer": "https://oauth.platform.intuit.com/op/v1",
        "authorization_endpoint": "https://appcenter.intuit.com/connect/oauth2",
        "token_endpoint": INTUIT_TOKEN_URL,
        "userinfo_endpoint":
            "https://sandbox-accounts.platform.intuit.com/v1/openid_connect/userinfo",
        "revocation_endpoint": "https://developer.api.intuit.com/v2/oauth2/tokens/revoke",
        "jwks_uri": "https://oauth.platform.intuit.com/op/v1/jwks",
    },
}

# Country names as people type them into a QuickBooks address -> ISO 3166-1 alpha-2.
_COUNTRY_NAMES: dict[str, str] = {
    "usa": "US", "us": "US", "united states": "US", "united states of america": "US",
    "america": "US", "canada": "CA", "united kingdom": "GB", "uk": "GB", "gbr": "GB",
    "great britain": "GB", "england": "GB", "scotland": "GB", "wales": "GB",
    "northern ireland": "GB", "ireland": "IE", "eire": "IE", "irl": "IE",
    "germany": "DE", "deutschland": "DE", "deu": "DE", "austria": "AT", "osterreich": "AT",
    "switzerland": "CH", "schweiz": "CH", "suisse": "CH", "svizzera": "CH",
    "france": "FR", "fra": "FR", "belgium": "BE", "belgie": "BE", "belgique": "BE",
    "netherlands": "NL", "the netherlands": "NL", "nederland": "NL", "holland": "NL",
    "luxembourg": "LU", "spain": "ES", "espana": "ES", "portugal": "PT", "italy": "IT",
    "italia": "IT", "sweden": "SE", "sverige": "SE", "norway": "NO", "norge": "NO",
    "denmark": "DK", "danmark": "DK", "finland": "FI", "suomi": "FI", "poland": "PL",
    "polska": "PL", "czech republic": "CZ", "czechia": "CZ", "australia": "AU", "aus": "AU",
    "new zealand": "NZ", "japan": "JP", "singapore": "SG", "india": "IN", "brazil": "BR",
    "brasil": "BR", "mexico": "MX", "argentina": "AR", "south africa": "ZA", "israel": "IL",
    "united arab emirates": "AE", "uae": "AE", "hong kong": "HK", "south korea": "KR",
    "korea": "KR", "china": "CN", "can": "CA", "mex": "MX", "jpn": "JP", "nzl": "NZ",
}
_FREE_MAIL = frozenset({
    "gmail.com", "googlemail.com", "outlook.com", "hotmail.com", "live.com", "yahoo.com",
    "icloud.com", "me.com", "aol.com", "gmx.de", "gmx.net", "web.de", "proton.me",
    "protonmail.com",
})


class TokenStore(Protocol):
    """Where rotating OAuth tokens live between runs (and between processes)."""

    def load(self) -> dict[str, Any] | None:
        ...

    def save(self, tokens: dict[str, Any]) -> None:
        ...


class MemoryTokenStore:
    """A TokenStore for one process (the CLI's `connectors check` without a database)."""

    def __init__(self, tokens: dict[str, Any] | None = None) -> None:
        self.tokens = dict(tokens) if tokens else None

    def load(self) -> dict[str, Any] | None:
        return dict(self.tokens) if self.tokens else None

    def save(self, tokens: dict[str, Any]) -> None:
        self.tokens = dict(tokens)


# --- transport -------------------------------------------------------------------------


class _BearerSession(requests.Session):
    """The session python-quickbooks calls: it reads `access_token` and calls `request`.

    Adds the timeout the SDK never passes, counts calls, and keeps the last response so a
    failure can be translated by HTTP status and Fault type (the SDK keeps only the code).
    """

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self.timeout = timeout
        self.access_token = ""
        self.calls = 0
        self.last_response: requests.Response | None = None

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        self.calls += 1
        self.last_response = None
        response = super().request(method, url, *args, **kwargs)
        self.last_response = response
        return response


class _LocalAuthClient(AuthClient):  # type: ignore[misc]
    """intuit-oauth's AuthClient built from a local discovery document, with a timeout.

    `AuthClient.__init__` would GET the discovery document; this sets the same attributes
    from `INTUIT_DISCOVERY` instead. Token calls (`refresh`) are intuit-oauth's own.
    """

    def __init__(self, *, client_id: str, client_secret: str, environment: str,
                 token_url: str | None, timeout: float) -> None:
        requests.Session.__init__(self)
        doc = INTUIT_DISCOVERY["sandbox" if environment == "sandbox" else "production"]
        self.client_id = client_id
        self.client_secret = client_secret
        self.redirect_uri = ""
        self.environment = environment
        self.state_token = None
        self.auth_endpoint = doc["authorization_endpoint"]
        self.token_endpoint = token_url or doc["token_endpoint"]
        self.revoke_endpoint = doc["revocation_endpoint"]
        self.issuer_uri = doc["issuer"]
        self.jwks_uri = doc["jwks_uri"]
        self.user_info_url = doc["userinfo_endpoint"]
        self.realm_id = None
        self.access_token: str | None = None
        self.expires_in: int | None = None
        self.refresh_token: str | None = None
        self.x_refresh_token_expires_in: int | None = None
        self.id_token = None
        self.timeout = timeout

    def request(self, method: str | bytes, url: str | bytes,
                *args: Any, **kwargs: Any) -> requests.Response:
        kwargs.setdefault("timeout", self.timeout)
        response: requests.Response = super().request(method, url, *args, **kwargs)
        return response


class _Unauthorized(AuthError):
    """HTTP 401: the access token expired or was revoked; refresh once and retry."""


@dataclass(frozen=True)
class _Fault:
    type: str
    code: str
    message: str
    detail: str

    def text(self) -> str:
        parts = [self.message or "QuickBooks refused the request"]
        if self.detail and self.detail != self.message:
            parts.append(self.detail)
        code = f" (code {self.code})" if self.code else ""
        return ": ".join(parts) + code


def _fault_of(response: requests.Response | None) -> _Fault | None:
    """The Fault of a QuickBooks error body (keys are `Fault` or, on 401s, `fault`)."""
    if response is None:
        return None
    try:
        body = json.loads(response.text, parse_float=Decimal)
    except ValueError:
        return None
    if not isinstance(body, dict):
        return None
    fault = body.get("Fault") or body.get("fault")
    if not isinstance(fault, dict):
        return None
    errors = fault.get("Error") or fault.get("error") or [{}]
    first = errors[0] if isinstance(errors, list) and errors else {}
    return _Fault(
        type=str(fault.get("type") or ""),
        code=str(first.get("code") or ""),
        message=str(first.get("Message") or first.get("message") or ""),
        detail=str(first.get("Detail") or first.get("detail") or ""),
    )


def _retry_after(response: requests.Response | None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date)."""
    value = response.headers.get("Retry-After") if response is not None else None
    if not value:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max((when - datetime.now(UTC)).total_seconds(), 0.0)


def translate(exc: BaseException, response: requests.Response | None) -> ConnectorError:
    """One QuickBooks failure (transport, HTTP status, Fault) as our error hierarchy.

    The HTTP status wins over the Fault's code: QuickBooks' throttle answers 429 with a
    code (3001) that python-quickbooks would call a validation error.
    """
    if isinstance(exc, ConnectorError):
        return exc
    if isinstance(exc, requests.Timeout):
        return UnavailableError(SYSTEM, f"QuickBooks did not answer in time ({exc})")
    if isinstance(exc, requests.RequestException):
        return UnavailableError(SYSTEM, f"could not reach QuickBooks ({type(exc).__name__})")
    status = response.status_code if response is not None else None
    fault = _fault_of(response)
    ftype = fault.type.lower() if fault else ""
    detail = fault.text() if fault else (str(getattr(exc, "message", "")) or str(exc))
    if status == 429 or "throttl" in ftype or "throttleexceeded" in detail.lower():
        return RateLimitedError(SYSTEM, f"rate limited: {detail}", _retry_after(response))
    if status is not None and status >= 500:
        return UnavailableError(SYSTEM, f"HTTP {status}: {detail}")
    if status == 401:
        return _Unauthorized(SYSTEM, f"access token rejected: {detail}")
    if status == 403 or ftype in ("authorizationfault", "authorization"):
        return AuthError(SYSTEM, f"not allowed: {detail}; {RECONNECT} with accounting scope")
    if ftype in ("authenticationfault", "authentication"):
        return _Unauthorized(SYSTEM, f"authentication failed: {detail}")
    if ftype in ("systemfault", "service"):
        return UnavailableError(SYSTEM, detail)
    if fault is not None or (status is not None and 400 <= status < 500):
        return DataError(SYSTEM, detail)
    if isinstance(exc, QuickbooksException) and status == 200:
        # A 200 whose body is not JSON: a proxy page or a cut-off body; try again.
        return UnavailableError(SYSTEM, f"unreadable answer: {str(exc.message)[:200]}")
    return DataError(SYSTEM, detail)


# --- cursor ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Cursor:
    """Where a run stands, as JSON text in the sync's cursor column.

    `cdc`: ask for changes since `since`. `full` / `paid` / `updated`: a paged query (open
    invoices; paid ones issued since `since`; invoices updated since `since`) resumes at
    `start`; when it ends, CDC takes over from `handover`, the time the run began, so
    changes made while it ran are not lost (`full` is followed by `paid` first).
    """

    mode: str
    since: datetime
    start: int = 1
    handover: datetime | None = None

    def dump(self) -> str:
        raw: dict[str, Any] = {"v": 1, "mode": self.mode, "since": self.since.isoformat()}
        if self.mode != "cdc":
            raw["start"] = self.start
            raw["handover"] = (self.handover or self.since).isoformat()
        return json.dumps(raw, sort_keys=True)

    @staticmethod
    def load(text: str) -> _Cursor:
        try:
            raw = json.loads(text)
            mode = str(raw["mode"])
            since = datetime.fromisoformat(raw["since"])
            handover = datetime.fromisoformat(raw.get("handover") or raw["since"])
            start = int(raw.get("start", 1))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(SYSTEM, f"unreadable sync cursor {text[:80]!r}") from exc
        if (mode not in ("full", "paid", "updated", "cdc") or since.tzinfo is None
                or handover.tzinfo is None or start < 1):
            raise DataError(SYSTEM, f"unreadable sync cursor {text[:80]!r}")
        return _Cursor(mode, since, start, handover)


# --- mapping (pure) --------------------------------------------------------------------


@dataclass(frozen=True)
class Company:
    """The company's own defaults, for fields a customer or invoice leaves empty."""

    country: str = "US"
    timezone: str = "UTC"
    currency: str = "USD"


def country_code(name: str | None, default: str) -> str:
    """"USA", "United States", "Deutschland", "de" -> ISO-2; anything unknown -> default."""
    if not name or not name.strip():
        return default
    text = name.strip()
    named = _COUNTRY_NAMES.get(_fold(text))
    if named:
        return named
    if len(text) == 2 and text.isalpha() and is_supported_country(text.upper()):
        return text.upper()
    return default


def _fold(text: str) -> str:
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    return re.sub(r"[^a-z ]+", "", plain.casefold().replace(".", "")).strip()


def decimal_of(value: Any) -> Decimal:
    """A JSON number parsed with parse_float=Decimal (ints arrive as int); never a float."""
    if isinstance(value, bool | float):
        raise DataError(SYSTEM, f"amount {value!r} was not parsed exactly")
    if isinstance(value, Decimal | int):
        return Decimal(value)
    if isinstance(value, str):
        return Decimal(value)
    raise DataError(SYSTEM, f"missing or invalid amount {value!r}")


def qbo_id(prefixed: str) -> str:
    """Our id ("qbo-123") -> QuickBooks' Id ("123")."""
    if not prefixed.startswith(ID_PREFIX) or not prefixed[len(ID_PREFIX):].isdigit():
        raise DataError(SYSTEM, f"{prefixed!r} is not a QuickBooks id (qbo-<digits>)")
    return prefixed[len(ID_PREFIX):]


def _ref(obj: Mapping[str, Any], key: str) -> str | None:
    ref = obj.get(key)
    if isinstance(ref, dict) and ref.get("value"):
        return str(ref["value"])
    return None


def _email(customer: Mapping[str, Any]) -> str | None:
    addr = customer.get("PrimaryEmailAddr")
    raw = addr.get("Address") if isinstance(addr, dict) else None
    if not raw:
        return None
    # QuickBooks allows several addresses in the field, separated by commas.
    first = re.split(r"[,;\s]+", str(raw).strip())[0]
    return first or None


def _domain(email_addr: str | None, web: Any) -> str | None:
    if email_addr and "@" in email_addr:
        domain = email_addr.rsplit("@", 1)[1].lower()
        if domain not in _FREE_MAIL:
            return domain
    uri = web.get("URI") if isinstance(web, dict) else None
    if uri:
        text = str(uri).strip()
        host = urlsplit(text if "//" in text else f"//{text}").hostname
        if host:
            return host.lower().removeprefix("www.")
    return None


def map_customer(raw: Mapping[str, Any], company: Company) -> tuple[CustomerContext, str | None]:
    """A QuickBooks Customer as our CustomerContext, and its web domain when one is known."""
    qid = str(raw["Id"])
    addr = raw.get("BillAddr") if isinstance(raw.get("BillAddr"), dict) else {}
    country = country_code((addr or {}).get("Country"), company.country)
    email_addr = _email(raw)
    given = str(raw.get("GivenName") or "").strip()
    family = str(raw.get("FamilyName") or "").strip()
    contact = " ".join(x for x in (given, family) if x) or None
    name = (raw.get("DisplayName") or raw.get("CompanyName")
            or raw.get("FullyQualifiedName") or f"QuickBooks customer {qid}")
    customer = CustomerContext(
        customer_id=f"{ID_PREFIX}{qid}",
        name=str(name),
        country=country,
        timezone=timezone_for(country, company.timezone),
        currency=_ref(raw, "CurrencyRef") or company.currency,
        ap_contact_name=contact,
        ap_contact_email=email_addr,
    )
    return customer, _domain(email_addr, raw.get("WebAddr"))


def _updated_at(raw: Mapping[str, Any]) -> datetime | None:
    meta = raw.get("MetaData")
    text = meta.get("LastUpdatedTime") if isinstance(meta, dict) else None
    if not text:
        return None
    try:
        moment = datetime.fromisoformat(str(text))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def linked_payment_ids(invoice: Mapping[str, Any]) -> list[str]:
    return [str(link["TxnId"]) for link in invoice.get("LinkedTxn") or []
            if isinstance(link, dict) and link.get("TxnType") == "Payment" and link.get("TxnId")]


def payment_dates(payments: Iterable[Mapping[str, Any]]) -> dict[str, date]:
    """Payment Id -> its TxnDate (the day the customer paid, as booked)."""
    out: dict[str, date] = {}
    for payment in payments:
        if payment.get("status") == "Deleted" or not payment.get("TxnDate"):
            continue
        out[str(payment["Id"])] = date.fromisoformat(str(payment["TxnDate"]))
    return out


def _is_void(raw: Mapping[str, Any], total: Decimal, balance: Decimal) -> bool:
    # QuickBooks keeps a voided invoice with its amounts zeroed and "Voided" in the memo.
    note = str(raw.get("PrivateNote") or "")
    return str(raw.get("status") or "").lower() == "voided" or (
        total == 0 and balance == 0 and "voided" in note.lower())


def map_invoice(raw: Mapping[str, Any], company: Company,
                paid_on: Mapping[str, date]) -> InvoiceRecord:
    """A QuickBooks Invoice as our InvoiceRecord; Balance 0 -> paid (or void)."""
    qid = str(raw["Id"])
    customer = _ref(raw, "CustomerRef")
    if customer is None:
        raise DataError(SYSTEM, f"invoice {qid} has no CustomerRef")
    try:
        issued = date.fromisoformat(str(raw["TxnDate"]))
        due = date.fromisoformat(str(raw.get("DueDate") or raw["TxnDate"]))
    except (KeyError, ValueError) as exc:
        raise DataError(SYSTEM, f"invoice {qid} has no valid TxnDate/DueDate") from exc
    total = decimal_of(raw.get("TotalAmt"))
    balance = decimal_of(raw.get("Balance", total))
    status = InvoiceStatus.OPEN
    paid_date: date | None = None
    if balance <= 0:
        if _is_void(raw, total, balance):
            status = InvoiceStatus.VOID
        else:
            status = InvoiceStatus.PAID
            dates = [paid_on[p] for p in linked_payment_ids(raw) if p in paid_on]
            updated = _updated_at(raw)
            if dates:
                paid_date = max(dates)
            elif updated is not None:
                paid_date = local_date(updated, company.timezone)
    link = raw.get("InvoiceLink")
    paid = Decimal(0) if status is InvoiceStatus.VOID else total - max(balance, Decimal(0))
    return InvoiceRecord(
        invoice_id=f"{ID_PREFIX}{qid}",
        number=str(raw.get("DocNumber") or qid),
        customer_id=f"{ID_PREFIX}{customer}",
        issue_date=issued,
        due_date=due,
        currency=_ref(raw, "CurrencyRef") or company.currency,
        amount=total,
        amount_paid=paid,
        status=status,
        paid_date=paid_date,
        payment_link=str(link) if link else None,
    )


def deleted_invoice(raw: Mapping[str, Any], company: Company) -> InvoiceRecord:
    """A deleted invoice: QuickBooks keeps only its Id, so this is a tombstone.

    Status VOID with an empty `customer_id` and zero amounts: the sync closes the stored
    invoice of that id and must not create one it never had.
    """
    qid = str(raw["Id"])
    updated = _updated_at(raw)
    day = local_date(updated, company.timezone) if updated else date(1970, 1, 1)
    return InvoiceRecord(invoice_id=f"{ID_PREFIX}{qid}", number=qid, customer_id="",
                         issue_date=day, due_date=day, currency=company.currency,
                         amount=Decimal(0), status=InvoiceStatus.VOID)


def _sql_ids(ids: Iterable[str]) -> str:
    clean = sorted({i for i in ids if i.isdigit()}, key=int)
    return ", ".join(f"'{i}'" for i in clean)


# --- the connector ---------------------------------------------------------------------


def _utcnow() -> datetime:
    return datetime.now(UTC)


class QuickBooksBilling:
    """QuickBooks Online invoices and customers as `BillingPage`s (a `BillingSource`)."""

    system = SYSTEM

    def __init__(self, *, client_id: str, client_secret: str, realm_id: str,
                 refresh_token: str | None, token_store: TokenStore,
                 environment: str = "production", api_url: str | None = None,
                 token_url: str | None = None, company_timezone: str = "UTC",
                 company_country: str = "US", company_currency: str = "USD",
                 page_size: int = MAX_PAGE_SIZE, timeout: float = 30.0,
                 sleep: Callable[[float], None] | None = None, attempts: int = 5,
                 clock: Callable[[], datetime] = _utcnow,
                 cdc_overlap: timedelta = DEFAULT_CDC_OVERLAP,
                 paid_lookback_days: int = PAID_LOOKBACK_DAYS) -> None:
        if not 1 <= page_size <= MAX_PAGE_SIZE:
            raise ValueError(f"page_size must be 1..{MAX_PAGE_SIZE}, not {page_size}")
        if environment not in ("production", "sandbox"):
            raise ValueError(f"environment must be production or sandbox, not {environment!r}")
        if not realm_id.strip():
            raise ValueError("QuickBooks realm id is empty")
        self.realm_id = realm_id.strip()
        self.company = Company(country=company_country.upper(), timezone=company_timezone,
                               currency=company_currency.upper())
        self.page_size = page_size
        self.attempts = attempts
        self.sleep = sleep
        self.clock = clock
        self.cdc_overlap = cdc_overlap
        self.paid_lookback_days = max(0, paid_lookback_days)
        self._seed = refresh_token or None
        self._store = token_store
        self._expires_at: datetime | None = None
        self._refresh_token: str | None = None
        self._auth = _LocalAuthClient(client_id=client_id, client_secret=client_secret,
                                      environment=environment, token_url=token_url,
                                      timeout=timeout)
        self._session = _BearerSession(timeout)
        qb = QuickBooks(company_id=self.realm_id, minorversion=MINOR_VERSION, use_decimal=True)
        qb.sandbox = environment == "sandbox"
        if api_url:
            base = api_url.rstrip("/")
            qb.api_url_v3 = base
            qb.sandbox_api_url_v3 = base
        qb.session = self._session
        self._qb = qb

    # -- BillingSource ------------------------------------------------------------------

    def pages(self, cursor: str | None, *, full: bool) -> Iterator[BillingPage]:
        """Open invoices (full, or no cursor), else what changed since the cursor."""
        started = self.clock()
        if full or cursor is None:
            yield from self._query_pages(_Cursor("full", started))
            return
        state = _Cursor.load(cursor)
        if state.mode != "cdc":
            yield from self._query_pages(state)  # resume an interrupted run
            return
        if started - state.since >= CDC_WINDOW - timedelta(hours=1):
            log.warning("quickbooks: cursor %s is past the 30-day CDC window; full backfill",
                        state.since.isoformat())
            yield from self._query_pages(_Cursor("full", started))
            return
        yield from self._cdc(state.since, started)

    def check(self) -> str:
        """Authenticate and read CompanyInfo: "QuickBooks: <name> (realm <id>)"."""
        body = self._call(lambda: self._qb.get_single_object("CompanyInfo", self.realm_id))
        info = body.get("CompanyInfo") if isinstance(body, dict) else None
        name = (info or {}).get("CompanyName") or (info or {}).get("LegalName") or "?"
        return f"QuickBooks: {name} (realm {self.realm_id})"

    def send_invoice(self, invoice_id: str, email: str, *,
                     request_id: str | None = None) -> None:
        """Have QuickBooks email the invoice (`Invoice.send`) to `email`.

        One `requestid` for every retry of this call (or the outbox's key), so QuickBooks
        answers a repeated request once instead of sending the email twice.
        """
        if "@" not in email:
            raise DataError(SYSTEM, f"{email!r} is not an email address")
        qid = qbo_id(invoice_id)
        rid = request_id or uuid.uuid4().hex
        url = f"{self._qb.api_url}/company/{self.realm_id}/invoice/{qid}/send"
        self._call(lambda: self._qb.post(url, None, "application/octet-stream",
                                         params={"sendTo": email}, request_id=rid))

    # -- paging -------------------------------------------------------------------------

    def _where(self, state: _Cursor) -> str:
        if state.mode == "full":
            return "Balance > '0'"
        if state.mode == "paid":
            return f"Balance = '0' and TxnDate >= '{state.since.date().isoformat()}'"
        return f"MetaData.LastUpdatedTime >= '{state.since.isoformat()}'"

    def _query_pages(self, state: _Cursor) -> Iterator[BillingPage]:
        """Page a query from `state.start`; the last page hands over to CDC.

        CDC continues from `state.handover`, when the run began, so nothing changed while
        it ran falls between the last page and the next incremental run.

        Offsets move under a filter on Balance: an invoice paid between two page reads
        leaves the result set and shifts every later invoice one place up, so plain
        offset paging would skip an open invoice nobody changed (and CDC would never bring
        it). Each page therefore starts `overlap` rows before the previous one ended; rows
        already delivered in this run are dropped, and the sync's upsert absorbs the few
        repeated after a resume.
        """
        handover = state.handover or state.since
        overlap = self.page_size // 20
        start = state.start
        seen: set[str] = set()
        while True:
            before = self._session.calls
            sql = (f"select * from Invoice where {self._where(state)} "
                   f"STARTPOSITION {start} MAXRESULTS {self.page_size}")
            raw = self._entities(self._query(sql), "Invoice")
            last = len(raw) < self.page_size
            fresh = [i for i in raw if str(i.get("Id")) not in seen]
            seen.update(str(i.get("Id")) for i in fresh)
            paid_on = self._payments_for(fresh, {})
            customers, invoices, domains = self._page(fresh, [], paid_on)
            following = start + len(raw) - overlap
            history = state.mode == "full" and self.paid_lookback_days > 0
            if not last:
                nxt = _Cursor(state.mode, state.since, following, handover)
            elif history:  # open invoices done: the paid history of the lookback next
                nxt = _Cursor("paid", self._lookback_start(handover), 1, handover)
            else:
                nxt = _Cursor("cdc", handover - self.cdc_overlap)
            yield BillingPage(customers=customers, invoices=invoices, cursor=nxt.dump(),
                              customer_domains=domains,
                              api_calls=self._session.calls - before)
            if last:
                if not history:
                    return
                state, start, seen = nxt, 1, set()
                continue
            start = following

    def _lookback_start(self, moment: datetime) -> datetime:
        """Midnight of the first day of the paid-history lookback, in the company's zone's
        calendar (TxnDate is a plain date as the company books it)."""
        day = local_date(moment, self.company.timezone) - timedelta(days=self.paid_lookback_days)
        return datetime(day.year, day.month, day.day, tzinfo=UTC)

    def refresh(self, invoice_ids: Sequence[str]) -> BillingPage:
        """The current state of given ledger invoices (ids "qbo-<Id>"), read by id: after a
        full backfill, the ledger-open invoices it did not list (paid or voided while no
        cursor covered them). An id QuickBooks no longer has comes back as deleted."""
        before = self._session.calls
        wanted = [qbo_id(i) for i in invoice_ids]
        raw: list[dict[str, Any]] = []
        for start in range(0, len(wanted), MAX_PAGE_SIZE):
            batch = wanted[start:start + MAX_PAGE_SIZE]
            sql = (f"select * from Invoice where Id IN ({_sql_ids(batch)}) "
                   f"MAXRESULTS {MAX_PAGE_SIZE}")
            raw += self._entities(self._query(sql), "Invoice")
        found = {str(i.get("Id")) for i in raw}
        paid_on = self._payments_for(raw, {})
        customers, invoices, domains = self._page(raw, [], paid_on)
        invoices += [deleted_invoice({"Id": i}, self.company) for i in wanted if i not in found]
        return BillingPage(customers=customers, invoices=invoices, cursor=None,
                           customer_domains=domains, api_calls=self._session.calls - before)

    def _cdc(self, since: datetime, started: datetime) -> Iterator[BillingPage]:
        before = self._session.calls
        body = self._call(lambda: self._qb.change_data_capture(CDC_ENTITIES, since.isoformat()))
        found: dict[str, list[dict[str, Any]]] = {"Invoice": [], "Customer": [], "Payment": []}
        for block in (body.get("CDCResponse") or [{}]):
            for response in block.get("QueryResponse") or []:
                for entity, items in found.items():
                    items.extend(response.get(entity) or [])
        if any(len(items) >= MAX_PAGE_SIZE for items in found.values()):
            log.warning("quickbooks: CDC hit its 1,000-object limit; paging invoices updated "
                        "since %s instead", since.isoformat())
            yield from self._query_pages(_Cursor("updated", since, 1, started))
            return
        deleted = [i for i in found["Invoice"] if i.get("status") == "Deleted"]
        live = [i for i in found["Invoice"] if i.get("status") != "Deleted"]
        paid_on = self._payments_for(live, payment_dates(found["Payment"]))
        customers = [c for c in found["Customer"] if c.get("status") != "Deleted"]
        contexts, invoices, domains = self._page(live, customers, paid_on)
        invoices += [deleted_invoice(i, self.company) for i in deleted]
        yield BillingPage(customers=contexts, invoices=invoices,
                          cursor=_Cursor("cdc", started - self.cdc_overlap).dump(),
                          customer_domains=domains, api_calls=self._session.calls - before)

    def _page(self, invoices: list[dict[str, Any]], customers: list[dict[str, Any]],
              paid_on: Mapping[str, date],
              ) -> tuple[list[CustomerContext], list[InvoiceRecord], dict[str, str]]:
        """Map invoices and their customers, reading customers the page lacks by id."""
        have = {str(c["Id"]) for c in customers}
        wanted = {ref for i in invoices if (ref := _ref(i, "CustomerRef")) and ref not in have}
        if wanted:
            sql = (f"select * from Customer where Active IN (true, false) and Id IN "
                   f"({_sql_ids(wanted)}) MAXRESULTS {MAX_PAGE_SIZE}")
            customers = customers + self._entities(self._query(sql), "Customer")
        contexts: list[CustomerContext] = []
        domains: dict[str, str] = {}
        for raw in customers:
            context, domain = map_customer(raw, self.company)
            contexts.append(context)
            if domain:
                domains[context.customer_id] = domain
        records = [map_invoice(raw, self.company, paid_on) for raw in invoices]
        return contexts, records, domains

    def _payments_for(self, invoices: list[dict[str, Any]],
                      known: dict[str, date]) -> dict[str, date]:
        """Payment dates for the paid invoices among `invoices`, reading missing ones."""
        missing = {p for i in invoices if decimal_of(i.get("Balance", 1)) <= 0
                   for p in linked_payment_ids(i) if p not in known}
        if not missing:
            return known
        sql = (f"select * from Payment where Id IN ({_sql_ids(missing)}) "
               f"MAXRESULTS {MAX_PAGE_SIZE}")
        return {**known, **payment_dates(self._entities(self._query(sql), "Payment"))}

    def _query(self, sql: str) -> dict[str, Any]:
        # InvoiceLink (the customer's pay-online link) is returned only when asked for.
        return self._call(lambda: self._qb.query(sql, params={"include": "invoiceLink"}))

    @staticmethod
    def _entities(body: dict[str, Any], entity: str) -> list[dict[str, Any]]:
        response = body.get("QueryResponse")
        if not isinstance(response, dict):
            raise DataError(SYSTEM, "query answer without QueryResponse")
        items = response.get(entity) or []
        return [i for i in items if isinstance(i, dict)]

    # -- calls, tokens, errors ----------------------------------------------------------

    def _call(self, call: Callable[[], T]) -> T:
        """One API call: token ready, one refresh on 401, errors translated, retried."""

        def attempt() -> T:
            self._ensure_token()
            try:
                return self._invoke(call)
            except _Unauthorized:
                self._refresh(rejected=self._session.access_token)
            try:
                return self._invoke(call)
            except _Unauthorized as exc:
                raise AuthError(SYSTEM, f"QuickBooks rejected a freshly refreshed token; "
                                        f"{RECONNECT}") from exc

        return retrying(SYSTEM, attempt, attempts=self.attempts, sleep=self.sleep)

    def _invoke(self, call: Callable[[], T]) -> T:
        try:
            return call()
        except (QuickbooksException, requests.RequestException) as exc:
            raise translate(exc, self._session.last_response) from exc

    def _ensure_token(self) -> None:
        now = self.clock()
        if (self._session.access_token and self._expires_at is not None
                and self._expires_at - EXPIRY_MARGIN > now):
            return
        stored = self._store.load() or {}
        expires = _parse_time(stored.get("expires_at"))
        if stored.get("access_token") and expires is not None and expires - EXPIRY_MARGIN > now:
            self._use(stored)
            return
        self._refresh(rejected=None)

    def _use(self, tokens: Mapping[str, Any]) -> None:
        self._session.access_token = str(tokens["access_token"])
        self._refresh_token = str(tokens.get("refresh_token") or "") or None
        self._expires_at = _parse_time(tokens.get("expires_at"))

    def _refresh(self, *, rejected: str | None) -> None:
        """Trade the refresh token for new tokens and persist them before using them.

        Another process may have rotated the tokens already: when the store holds a fresh
        access token other than the one QuickBooks just rejected, use it as it is. The seed
        from settings is tried last, so reconnecting means setting a new seed.
        """
        stored = self._store.load() or {}
        expires = _parse_time(stored.get("expires_at"))
        if (stored.get("access_token") and stored["access_token"] != rejected
                and rejected is not None and expires is not None
                and expires - EXPIRY_MARGIN > self.clock()):
            self._use(stored)
            return
        candidates = [t for t in (stored.get("refresh_token"), self._refresh_token, self._seed)
                      if t]
        tried: list[str] = []
        last: ConnectorError | None = None
        for token in dict.fromkeys(str(t) for t in candidates):
            tried.append(token)
            try:
                self._auth.refresh(refresh_token=token)
            except AuthClientError as exc:
                last = self._token_error(exc)
                if not isinstance(last, AuthError):
                    raise last from exc
                continue
            except requests.RequestException as exc:
                raise translate(exc, None) from exc
            now = self.clock()
            tokens = {
                "access_token": self._auth.access_token,
                "refresh_token": self._auth.refresh_token or token,
                "expires_at": (now + timedelta(seconds=int(self._auth.expires_in or 3600))
                               ).isoformat(),
                "realm_id": self.realm_id,
                "refreshed_at": now.isoformat(),
            }
            if self._auth.x_refresh_token_expires_in:
                tokens["refresh_expires_at"] = (
                    now + timedelta(seconds=int(self._auth.x_refresh_token_expires_in))
                ).isoformat()
            self._store.save(tokens)
            self._use(tokens)
            return
        if not tried:
            raise AuthError(SYSTEM, f"no refresh token stored or configured; {RECONNECT}")
        reason = f" ({last})" if last else ""
        raise AuthError(SYSTEM, f"QuickBooks refused the refresh token{reason}; {RECONNECT}")

    @staticmethod
    def _token_error(exc: Any) -> ConnectorError:
        status = int(getattr(exc, "status_code", 0) or 0)
        response = getattr(exc, "response", None)
        if status == 429:
            return RateLimitedError(SYSTEM, "token endpoint rate limited",
                                    _retry_after(response))
        if status >= 500:
            return UnavailableError(SYSTEM, f"token endpoint answered HTTP {status}")
        error = ""
        try:
            error = str(json.loads(getattr(exc, "content", b"") or b"{}").get("error") or "")
        except (ValueError, AttributeError):
            error = ""
        return AuthError(SYSTEM, f"HTTP {status} {error}".strip())


def _parse_time(value: Any) -> datetime | None:
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


__all__ = [
    "Company", "MemoryTokenStore", "QuickBooksBilling", "TokenStore", "country_code",
    "map_customer", "map_invoice", "translate",
]
