"""HubSpot as dunning's CRM: company context in, owner tasks and timeline notes out.

The real `hubspot-api-client` underneath (`HubSpot(access_token=..., host=...)`, the host from
HUBSPOT_API_HOST so a proxy or the local fake can stand in). Every vendor error becomes a
ConnectorError; retries happen only in `connectors.base.retrying`. The SDK's own urllib3
retries are switched off (`Retry(total=False)`): urllib3 would otherwise sleep on a 429's
Retry-After and retry GETs by itself, hiding rate limits from our policy and our counters.

What is read from a company (property names are HubSpot internal names):

    name, domain, lifecyclestage   as they are
    hubspot_owner_id               the AE: an owner id, turned into the owner's email
                                   through the Owners API (listed once per run, cached)
    csm_owner_id                   the CSM (custom; name configurable): an owner id like
                                   hubspot_owner_id, or an email address typed in as is
    arr                            annual recurring revenue (custom); else `annualrevenue`.
                                   Decimal from HubSpot's string, never a float
    health_score                   0-100 (custom); anything else is ignored
    country                        free text ("Germany", "DE", "DEU", "United Kingdom")
                                   mapped to ISO 3166-1 alpha-2; unknown -> None
    hs_timezone / timezone         used when it names an IANA zone; HubSpot's own encoding
                                   ("america_slash_new_york") is understood. No zone -> None
                                   (the sync falls back to the country's zone)
    strategic                      a single checkbox (custom; name configurable): "true"
    stripe_customer_id, ...        the billing ids (`id_properties`) -> CrmCompany.billing_ids

The accounts-payable contact is the associated contact whose `dunning_role` property is
"ap" (or "accounts_payable", "billing"); failing that, one whose association label or job
title says Accounts Payable, AP, A/P or Billing. It must have an email; among equals the
oldest contact (lowest id) wins, so the choice is stable between runs.

Reading pages (`pages`): a full run lists companies with the basic API (`after` paging).
Before listing it asks the search API for the newest `hs_lastmodifieddate`, so the cursor
the full run ends with makes the next incremental run pick up whatever changed meanwhile.
An incremental run searches `hs_lastmodifieddate >= cursor time - 5 minutes`, ascending:
HubSpot's search index shows a change seconds after it is made, so a change made just
before the newest one read may not have been searchable yet; the overlap finds it on the
next run. Every page restarts the search (instead of paging with `after`), which keeps
clear of the search API's 10,000-result window and of rows that move to the end of the order
when they are modified mid-run; changes already returned (company id and modification time,
remembered for the overlap window) are skipped. The cursor is JSON: {"v": 2, "ts": epoch
ms of the newest change read, "recent": [[id, ms], ...], "after": list paging of a full run
in progress or null, "floor": epoch ms below which it never searches}; a v1 cursor
({"seen": [ids at ts]}) still reads. A crash between pages resumes from the last stored
cursor with no duplicate and no gap.

Each page costs: 1 companies call, 1 associations batch read per 1,000 companies, 1 contacts
batch read per 100 associated contacts, plus the owner listing once per run.

Writes: a task is assigned to the owner whose email is given (no such owner: the task is
created unassigned and a warning logged) and associated with the company (HubSpot-defined
type 192); a note is associated with type 190. Due dates and note dates are sent as 12:00
UTC on that day, which is the same calendar day in every time zone from UTC-11 to UTC+11.
A write whose answer was lost (read timeout, dropped connection) is not retried at once,
since HubSpot may have created it: UnavailableError says so.
"""

from __future__ import annotations

import functools
import json
import logging
import re
import unicodedata
import zoneinfo
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any, TypeVar

import urllib3
from hubspot import HubSpot  # type: ignore[import-untyped]
from hubspot.crm.associations.v4 import (  # type: ignore[import-untyped]
    ApiException as _AssociationsApiException,
)
from hubspot.crm.associations.v4 import (
    BatchInputPublicFetchAssociationsBatchRequest,
    PublicFetchAssociationsBatchRequest,
)
from hubspot.crm.companies import (  # type: ignore[import-untyped]
    ApiException as _CompaniesApiException,
)
from hubspot.crm.companies import Filter, FilterGroup, PublicObjectSearchRequest
from hubspot.crm.contacts import (  # type: ignore[import-untyped]
    ApiException as _ContactsApiException,
)
from hubspot.crm.contacts import BatchReadInputSimplePublicObjectId, SimplePublicObjectId
from hubspot.crm.objects.notes import (  # type: ignore[import-untyped]
    ApiException as _NotesApiException,
)
from hubspot.crm.objects.tasks import (  # type: ignore[import-untyped]
    ApiException as _TasksApiException,
)
from hubspot.crm.objects.tasks import (
    AssociationSpec,
    PublicAssociationsForObject,
    PublicObjectId,
    SimplePublicObjectInputForCreate,
)
from hubspot.crm.owners import ApiException as _OwnersApiException  # type: ignore[import-untyped]
from urllib3.util.retry import Retry

from connectors.base import CrmCompany, CrmPage, retrying
from connectors.errors import (
    AuthError,
    ConnectorError,
    DataError,
    RateLimitedError,
    UnavailableError,
)

log = logging.getLogger(__name__)
T = TypeVar("T")
SYSTEM = "hubspot"
DEFAULT_HOST = "https://api.hubapi.com"
DEFAULT_ID_PROPERTIES: dict[str, str] = {"stripe": "stripe_customer_id",
                                         "quickbooks": "quickbooks_customer_id"}
TASK_TO_COMPANY = 192  # HubSpot-defined association type ids
NOTE_TO_COMPANY = 190
SEARCH_WINDOW = 10_000
# HubSpot's search index shows a change seconds after it is made (more under load): each
# incremental search starts this far before the newest change already read.
OVERLAP_MS = 5 * 60 * 1000
RECENT_MAX = 2_000  # changes remembered in the cursor for the overlap (~60 KB of JSON)
ASSOCIATION_BATCH = 1_000
CONTACT_BATCH = 100
OWNER_PAGE = 500
SCOPES = "crm.objects.companies.read, crm.objects.contacts.read, crm.objects.owners.read"
_API_ERRORS: tuple[type[Exception], ...] = (
    _CompaniesApiException, _ContactsApiException, _OwnersApiException,
    _AssociationsApiException, _TasksApiException, _NotesApiException,
)
_CONTACT_PROPERTIES = ["firstname", "lastname", "email", "jobtitle", "dunning_role"]
_AP_ROLES = {"ap", "accounts_payable", "accounts payable", "billing"}
_AP_WORDS = re.compile(r"\b(accounts?[\s_-]+payable|a/p|ap|billing)\b", re.IGNORECASE)


@dataclass(frozen=True)
class _Cursor:
    """Where the next run starts: the newest modification seen, and what was returned
    lately (so the overlap re-reads of the search index return nothing twice)."""

    ts: int
    # (company id, modified ms) returned with a modification at or after ts - OVERLAP_MS.
    recent: tuple[tuple[str, int], ...] = ()
    # Set while a full listing is under way: the list API's `after` ("" = from the start).
    after: str | None = None
    # Never search below this: where a full run started (its listing read everything
    # older), or the oldest modification still remembered when `recent` was cut.
    floor: int = 0

    def encode(self) -> str:
        return json.dumps({"v": 2, "ts": self.ts, "recent": [list(p) for p in self.recent],
                           "after": self.after, "floor": self.floor}, separators=(",", ":"))

    @staticmethod
    def decode(text: str) -> _Cursor | None:
        try:
            raw = json.loads(text)
            after = raw.get("after")
            ts = int(raw["ts"])
            if raw.get("v", 1) == 1:  # ids seen at ts only: no overlap below ts
                recent = tuple((str(i), ts) for i in raw.get("seen", []))
                floor = ts
            else:
                recent = tuple((str(i), int(m)) for i, m in raw.get("recent", []))
                floor = int(raw.get("floor", 0))
            return _Cursor(ts, recent, None if after is None else str(after), floor)
        except (ValueError, TypeError, KeyError, AttributeError):
            log.warning("hubspot: unreadable cursor, starting a full sync")
            return None

    @property
    def since(self) -> int:
        """Where the next search starts: OVERLAP_MS before the newest change seen, for the
        changes HubSpot's search index had not shown yet when that one was read."""
        return max(self.ts - OVERLAP_MS, self.floor)

    def known(self, company_id: str, modified: int) -> bool:
        return (company_id, modified) in self.recent

    def advanced(self, returned: Sequence[tuple[str, int]]) -> _Cursor:
        ts = max([self.ts, *(m for _, m in returned)])
        pairs = {p for p in self.recent if p[1] >= ts - OVERLAP_MS} | set(returned)
        ordered = sorted(pairs, key=lambda p: (p[1], _id_order(p[0])))
        floor = self.floor
        if len(ordered) > RECENT_MAX:  # a burst of changes: remember the newest only
            ordered = ordered[-RECENT_MAX:]
            floor = max(floor, ordered[0][1])
        return replace(self, ts=ts, recent=tuple(ordered), floor=floor)


class _AmbiguousWriteError(Exception):
    """A write whose answer was lost: HubSpot may have stored it (never retried at once)."""


@dataclass
class _Owners:
    """Owner id <-> email for one run; listed once, archived owners looked up on a miss."""

    emails: dict[str, str | None] = field(default_factory=dict)
    ids: dict[str, str | None] = field(default_factory=dict)
    listed: bool = False


class HubSpotCrm:
    """`CrmSource` for HubSpot (system "hubspot")."""

    system = SYSTEM

    def __init__(self, access_token: str, host: str | None = None, *,
                 id_properties: Mapping[str, str] | None = None, page_size: int = 100,
                 sleep: Callable[[float], None] | None = None, attempts: int = 5,
                 timeout: float = 30.0, csm_property: str = "csm_owner_id",
                 strategic_property: str = "strategic") -> None:
        self.host = (host or DEFAULT_HOST).rstrip("/")
        self.id_properties = dict(DEFAULT_ID_PROPERTIES if id_properties is None
                                  else id_properties)
        self.page_size = max(1, min(page_size, 100))  # list API max 100, search API max 200
        self.sleep = sleep
        self.attempts = attempts
        self.timeout = timeout
        self.csm_property = csm_property
        self.strategic_property = strategic_property
        self.api_calls = 0  # every HTTP attempt since construction, retries included
        client = HubSpot(access_token=access_token, host=self.host,
                         retry=Retry(total=False, respect_retry_after_header=False))
        # Built once: each discovery property access makes a new ApiClient and pool.
        self._companies = client.crm.companies.basic_api
        self._search = client.crm.companies.search_api
        self._contacts = client.crm.contacts.batch_api
        self._owners_api = client.crm.owners.owners_api
        self._associations = client.crm.associations.v4.batch_api
        self._tasks = client.crm.objects.tasks.basic_api
        self._notes = client.crm.objects.notes.basic_api
        self._owners = _Owners()

    @property
    def company_properties(self) -> list[str]:
        names = ["name", "domain", "hubspot_owner_id", self.csm_property, "arr",
                 "annualrevenue", "health_score", "lifecyclestage", "country", "hs_timezone",
                 "timezone", self.strategic_property, "hs_lastmodifieddate",
                 *self.id_properties.values()]
        return list(dict.fromkeys(names))

    # -- calls -----------------------------------------------------------------------------
    def _call(self, what: str, fn: Callable[[], T], *, write: bool = False) -> T:
        """One SDK call, translated, with the shared retry policy."""

        def attempt() -> T:
            self.api_calls += 1
            try:
                return fn()
            except _API_ERRORS as exc:
                raise _translate(exc, what) from exc
            except (urllib3.exceptions.ReadTimeoutError,
                    urllib3.exceptions.ProtocolError) as exc:
                if write:
                    raise _AmbiguousWriteError(what) from exc
                raise UnavailableError(SYSTEM, f"{what}: {type(exc).__name__}") from exc
            except (urllib3.exceptions.HTTPError, OSError) as exc:
                raise UnavailableError(SYSTEM, f"{what}: {type(exc).__name__} reaching "
                                       f"{self.host}") from exc
            except (ValueError, TypeError) as exc:
                raise DataError(SYSTEM, f"{what}: unexpected response: {exc}") from exc

        try:
            return retrying(SYSTEM, attempt, attempts=self.attempts, sleep=self.sleep)
        except _AmbiguousWriteError as exc:
            raise UnavailableError(
                SYSTEM, f"{what}: the answer was lost; HubSpot may have created it, check "
                "the company timeline before trying again") from exc.__cause__

    def check(self) -> str:
        """Authenticate and reach the API with two small reads; one line, or raise."""
        self._call("check companies", lambda: self._companies.get_page(
            limit=1, properties=["name"], archived=False, _request_timeout=self.timeout))
        self._call("check owners", lambda: self._owners_api.get_page(
            limit=1, archived=False, _request_timeout=self.timeout))
        return f"hubspot: token accepted by {self.host}; companies and owners readable"

    # -- pages -----------------------------------------------------------------------------
    def pages(self, cursor: str | None, *, full: bool) -> Iterator[CrmPage]:
        """Companies changed since `cursor` (all when `full` or no cursor), page by page.

        A cursor from a full run that stopped part-way resumes that listing.
        """
        self._owners = _Owners()  # owner emails are cached per run
        mark = self.api_calls
        state = _Cursor.decode(cursor) if cursor else None
        if state is None or (full and state.after is None):
            state = replace(self._newest(), after="")
        pages = self._full(state) if state.after is not None else self._incremental(state)
        for companies, next_cursor in pages:
            calls, mark = self.api_calls - mark, self.api_calls
            yield CrmPage(companies, next_cursor.encode(), calls)

    def _newest(self) -> _Cursor:
        """The newest modification HubSpot knows of: where the run after a full one starts."""
        request = PublicObjectSearchRequest(
            filter_groups=[], properties=["hs_lastmodifieddate"], limit=1,
            sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "DESCENDING"}])
        found = self._call("search newest company", lambda: self._search.do_search(
            public_object_search_request=request, _request_timeout=self.timeout))
        if not found.results:
            return _Cursor(0)
        top = found.results[0]
        newest = _modified_ms(top)
        return _Cursor(newest, ((str(top.id), newest),), floor=newest)

    def _full(self, state: _Cursor) -> Iterator[tuple[list[CrmCompany], _Cursor]]:
        after = state.after or None
        properties = self.company_properties
        while True:
            page = self._call("list companies", functools.partial(
                self._companies.get_page, limit=self.page_size, after=after,
                properties=properties, archived=False, _request_timeout=self.timeout))
            after = _next_after(page)
            yield self._enrich(page.results), replace(state, after=after)
            if after is None:
                return

    def _incremental(self, state: _Cursor) -> Iterator[tuple[list[CrmCompany], _Cursor]]:
        yielded, overlap = False, True
        while True:
            # The overlap is read once per run: later pages start at the newest change read.
            fresh, more = self._search_since(state, overlap=overlap)
            overlap = False
            if not fresh:
                if not yielded:
                    yield [], state
                return
            state = state.advanced([(str(obj.id), _modified_ms(obj)) for obj in fresh])
            yield self._enrich(fresh), state
            yielded = True
            if not more:
                return

    def _search_since(self, state: _Cursor, *, overlap: bool) -> tuple[list[Any], bool]:
        """Companies modified since the cursor's overlap start that it has not returned.

        Returns them and whether HubSpot holds more beyond this page. Only when a whole page
        is already known (the overlap, or many companies sharing one timestamp) does it page
        on with `after`; if that would leave the search window, the overlap is dropped for
        this run before giving up.
        """
        since, offset = (state.since if overlap else state.ts), 0
        while True:
            if offset + self.page_size > SEARCH_WINDOW:
                if since < state.ts:
                    log.warning("hubspot: more than %d companies changed in the overlap "
                                "window; searching from the newest change only", SEARCH_WINDOW)
                    since, offset = state.ts, 0
                    continue
                raise DataError(SYSTEM, f"more than {SEARCH_WINDOW} companies share the "
                                f"modification time {state.ts}: run a full sync")
            request = PublicObjectSearchRequest(
                filter_groups=[FilterGroup(filters=[Filter(
                    property_name="hs_lastmodifieddate", operator="GTE", value=str(since))])],
                sorts=[{"propertyName": "hs_lastmodifieddate", "direction": "ASCENDING"}],
                properties=self.company_properties, limit=self.page_size,
                after=str(offset) if offset else None)
            found = self._call("search companies", functools.partial(
                self._search.do_search, public_object_search_request=request,
                _request_timeout=self.timeout))
            fresh = [obj for obj in found.results
                     if not state.known(str(obj.id), _modified_ms(obj))]
            more = _next_after(found) is not None
            if fresh or not more:
                return fresh, more
            offset += len(found.results)

    # -- enrichment ------------------------------------------------------------------------
    def _enrich(self, objects: Sequence[Any]) -> list[CrmCompany]:
        if not objects:
            return []
        links = self._contact_links([str(o.id) for o in objects])
        contact_ids = sorted({c for found in links.values() for c, _ in found}, key=_id_order)
        contacts = self._read_contacts(contact_ids)
        return [self._company(str(o.id), o.properties or {}, links.get(str(o.id), []),
                              contacts) for o in objects]

    def _contact_links(self, company_ids: list[str]) -> dict[str, list[tuple[str, str]]]:
        """Company id -> [(contact id, association labels joined)] through associations v4."""
        links: dict[str, list[tuple[str, str]]] = {}
        pending: list[tuple[str, str | None]] = [(cid, None) for cid in company_ids]
        while pending:
            batch, pending = pending[:ASSOCIATION_BATCH], pending[ASSOCIATION_BATCH:]
            body = BatchInputPublicFetchAssociationsBatchRequest(inputs=[
                PublicFetchAssociationsBatchRequest(id=cid, after=after) for cid, after in batch])
            found = self._call("read company contacts", functools.partial(
                self._associations.get_page, from_object_type="companies",
                to_object_type="contacts",
                batch_input_public_fetch_associations_batch_request=body,
                _request_timeout=self.timeout))
            for result in found.results or []:
                source = str(result._from.id)
                for target in result.to or []:
                    labels = " ".join(t.label for t in target.association_types or [] if t.label)
                    links.setdefault(source, []).append((str(target.to_object_id), labels))
                after = _next_after(result)
                if after is not None:
                    pending.append((source, after))
        return links

    def _read_contacts(self, contact_ids: list[str]) -> dict[str, dict[str, str | None]]:
        contacts: dict[str, dict[str, str | None]] = {}
        for start in range(0, len(contact_ids), CONTACT_BATCH):
            body = BatchReadInputSimplePublicObjectId(
                inputs=[SimplePublicObjectId(id=c)
                        for c in contact_ids[start:start + CONTACT_BATCH]],
                properties=_CONTACT_PROPERTIES, properties_with_history=[])
            found = self._call("read contacts", functools.partial(
                self._contacts.read, batch_read_input_simple_public_object_id=body,
                archived=False, _request_timeout=self.timeout))
            for obj in found.results or []:
                contacts[str(obj.id)] = dict(obj.properties or {})
        return contacts

    def _company(self, company_id: str, props: Mapping[str, str | None],
                 links: list[tuple[str, str]],
                 contacts: Mapping[str, Mapping[str, str | None]]) -> CrmCompany:
        ap = _ap_contact(links, contacts)
        billing_ids = {system: value.strip() for system, name in self.id_properties.items()
                       if (value := props.get(name)) and value.strip()}
        owner = _text(props.get("hubspot_owner_id"))
        return CrmCompany(
            external_id=company_id,
            name=_text(props.get("name")) or _text(props.get("domain"))
            or f"HubSpot company {company_id}",
            domain=(_text(props.get("domain")) or "").lower() or None,
            owner_email=self.owner_email(owner) if owner else None,
            csm_email=self._csm_email(_text(props.get(self.csm_property))),
            arr=_decimal(props.get("arr")) or _decimal(props.get("annualrevenue")),
            health=_health(props.get("health_score")),
            lifecycle=_text(props.get("lifecyclestage")),
            country=country_code(props.get("country")),
            timezone=iana_zone(props.get("hs_timezone")) or iana_zone(props.get("timezone")),
            ap_contact_name=ap[0] if ap else None,
            ap_contact_email=ap[1] if ap else None,
            strategic=(_text(props.get(self.strategic_property)) or "").lower()
            in ("true", "yes", "1"),
            billing_ids=billing_ids,
        )

    def _csm_email(self, value: str | None) -> str | None:
        if not value:
            return None
        if "@" in value:
            return value.lower()
        return self.owner_email(value)

    # -- owners ----------------------------------------------------------------------------
    def _list_owners(self) -> None:
        after: str | None = None
        while True:
            page = self._call("list owners", functools.partial(
                self._owners_api.get_page, limit=OWNER_PAGE, after=after, archived=False,
                _request_timeout=self.timeout))
            for owner in page.results or []:
                self._remember_owner(owner)
            after = _next_after(page)
            if after is None:
                break
        self._owners.listed = True

    def _remember_owner(self, owner: Any) -> None:
        email = (owner.email or "").lower() or None
        self._owners.emails[str(owner.id)] = email
        if email:
            self._owners.ids[email] = str(owner.id)

    def owner_email(self, owner_id: str) -> str | None:
        """The email of a HubSpot owner id (active owners listed once; others looked up)."""
        if not self._owners.listed:
            self._list_owners()
        if owner_id not in self._owners.emails:
            try:  # a deactivated user still owns companies: archived owners are not listed
                found = self._call("read owner", lambda: self._owners_api.get_by_id(
                    owner_id, id_property="id", archived=True, _request_timeout=self.timeout))
                self._remember_owner(found)
            except DataError:
                log.warning("hubspot: owner %s not found", owner_id)
                self._owners.emails[owner_id] = None
        return self._owners.emails.get(owner_id)

    def owner_id(self, email: str) -> str | None:
        key = email.strip().lower()
        if key not in self._owners.ids:
            found = self._call("find owner", lambda: self._owners_api.get_page(
                email=key, limit=1, archived=False, _request_timeout=self.timeout))
            for owner in found.results or []:
                self._remember_owner(owner)
            self._owners.ids.setdefault(key, None)
        return self._owners.ids[key]

    # -- writes ----------------------------------------------------------------------------
    def create_task(self, company_id: str, *, owner_email: str | None, subject: str,
                    body: str, due: date) -> str:
        """A to-do for the owner on the company, due on `due`; returns the task id."""
        properties = {"hs_task_subject": subject, "hs_task_body": body,
                      "hs_timestamp": _midday(due), "hs_task_status": "NOT_STARTED",
                      "hs_task_type": "TODO"}
        owner = self.owner_id(owner_email) if owner_email else None
        if owner:
            properties["hubspot_owner_id"] = owner
        elif owner_email:
            log.warning("hubspot: no owner with the email of the task's owner; the task on "
                        "company %s is unassigned", company_id)
        request = SimplePublicObjectInputForCreate(
            properties=properties, associations=[_association(company_id, TASK_TO_COMPANY)])
        created = self._call("create task", lambda: self._tasks.create(
            simple_public_object_input_for_create=request, _request_timeout=self.timeout),
            write=True)
        return str(created.id)

    def log_note(self, company_id: str, *, body: str, when: date) -> str:
        """A note on the company timeline dated `when`; returns the note id."""
        request = SimplePublicObjectInputForCreate(
            properties={"hs_note_body": body, "hs_timestamp": _midday(when)},
            associations=[_association(company_id, NOTE_TO_COMPANY)])
        created = self._call("log note", lambda: self._notes.create(
            simple_public_object_input_for_create=request, _request_timeout=self.timeout),
            write=True)
        return str(created.id)


# -- translation ---------------------------------------------------------------------------
def _translate(exc: Exception, what: str) -> ConnectorError:
    """A HubSpot ApiException as the project's error, by HTTP status."""
    status = int(getattr(exc, "status", 0) or 0)
    headers = getattr(exc, "headers", None) or {}
    message, category, policy = _error_details(getattr(exc, "body", None))
    detail = f" ({category}: {message})" if message else ""
    if status == 401:
        return AuthError(SYSTEM, f"{what}: the HubSpot private app token was refused (401); "
                         "it is invalid, expired or revoked: set HUBSPOT_ACCESS_TOKEN to a "
                         f"private app token with the {SCOPES} scopes{detail}")
    if status == 403:
        return AuthError(SYSTEM, f"{what}: the HubSpot private app lacks a scope this call "
                         f"needs (403); grant {SCOPES} (and write access to tasks and notes)"
                         f"{detail}")
    if status == 429:
        return RateLimitedError(SYSTEM, f"{what}: rate limited"
                                f"{f' ({policy})' if policy else ''}",
                                _retry_after(headers.get("Retry-After")))
    if status == 0 or status >= 500:
        return UnavailableError(SYSTEM, f"{what}: HubSpot answered {status or 'nothing'}"
                                f"{detail}")
    return DataError(SYSTEM, f"{what}: HubSpot refused the request ({status}){detail}")


def _error_details(body: object) -> tuple[str, str, str]:
    """HubSpot's error body: {"status": "error", "message", "category", "policyName"}."""
    if isinstance(body, bytes):
        body = body.decode("utf-8", "replace")
    try:
        data = json.loads(body) if isinstance(body, str) and body else {}
    except ValueError:
        return (str(body)[:200], "", "")
    if not isinstance(data, dict):
        return ("", "", "")
    return (str(data.get("message") or "")[:500], str(data.get("category") or ""),
            str(data.get("policyName") or ""))


def _retry_after(value: object) -> float | None:
    try:
        return float(str(value)) if value is not None else None
    except ValueError:
        return None


# -- mapping helpers -----------------------------------------------------------------------
def _text(value: object) -> str | None:
    text = str(value).strip() if value is not None else ""
    return text or None


def _id_order(value: str) -> tuple[int, str]:
    return (int(value), "") if value.isdigit() else (1 << 62, value)


def _next_after(page: Any) -> str | None:
    paging = getattr(page, "paging", None)
    nxt = getattr(paging, "next", None) if paging is not None else None
    after = getattr(nxt, "after", None) if nxt is not None else None
    return str(after) if after else None


def _modified_ms(obj: Any) -> int:
    """Epoch milliseconds of a company's last change (the property, else `updatedAt`)."""
    raw = (obj.properties or {}).get("hs_lastmodifieddate")
    if raw:
        text = str(raw).strip()
        if text.isdigit():
            return int(text)
        try:
            moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        except ValueError:
            moment = None
        if moment is not None:
            return _ms(moment)
    updated = getattr(obj, "updated_at", None)
    return _ms(updated) if isinstance(updated, datetime) else 0


def _ms(moment: datetime) -> int:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return int(moment.timestamp() * 1000)


def _decimal(value: object) -> Decimal | None:
    """HubSpot number properties arrive as strings; "" and junk mean unknown, never 0."""
    text = (_text(value) or "").replace(",", "")
    if not text:
        return None
    try:
        number = Decimal(text)
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


def _health(value: object) -> int | None:
    number = _decimal(value)
    if number is None:
        return None
    score = int(number.to_integral_value(rounding=ROUND_HALF_UP))
    return score if 0 <= score <= 100 else None


def _midday(day: date) -> str:
    return datetime.combine(day, time(12), tzinfo=UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def _association(company_id: str, type_id: int) -> PublicAssociationsForObject:
    return PublicAssociationsForObject(
        to=PublicObjectId(id=company_id),
        types=[AssociationSpec(association_category="HUBSPOT_DEFINED",
                               association_type_id=type_id)])


def _ap_contact(links: list[tuple[str, str]],
                contacts: Mapping[str, Mapping[str, str | None]]) -> tuple[str | None, str] | None:
    """(name, email) of the accounts-payable contact among the company's contacts."""
    best: tuple[int, tuple[int, str], str | None, str] | None = None
    for contact_id, labels in links:
        props = contacts.get(contact_id)
        email = _text(props.get("email")) if props else None
        if props is None or not email:
            continue
        role = (_text(props.get("dunning_role")) or "").lower()
        if role in _AP_ROLES:
            rank = 0
        elif _AP_WORDS.search(labels):
            rank = 1
        elif _AP_WORDS.search(_text(props.get("jobtitle")) or ""):
            rank = 2
        else:
            continue
        name = " ".join(p for p in (_text(props.get("firstname")),
                                    _text(props.get("lastname"))) if p) or None
        candidate = (rank, _id_order(contact_id), name, email.lower())
        if best is None or candidate[:2] < best[:2]:
            best = candidate
    return (best[2], best[3]) if best else None


@functools.cache
def _zones() -> dict[str, str]:
    return {name.lower(): name for name in zoneinfo.available_timezones()}


def iana_zone(value: object) -> str | None:
    """An IANA zone name from HubSpot's time zone property, or None."""
    text = (_text(value) or "").replace("_slash_", "/")
    return _zones().get(text.lower()) if text else None


_COUNTRY_ALIASES = {
    "unitedstatesofamerica": "US", "us": "US", "usa": "US", "america": "US",
    "greatbritain": "GB", "england": "GB", "scotland": "GB", "wales": "GB",
    "northernireland": "GB", "uk": "GB", "deutschland": "DE", "holland": "NL",
    "thenetherlands": "NL", "czechrepublic": "CZ", "korea": "KR", "southkorea": "KR",
    "republicofkorea": "KR", "uae": "AE", "russia": "RU", "vietnam": "VN", "turkey": "TR",
    "turkiye": "TR", "hongkong": "HK", "taiwan": "TW", "ivorycoast": "CI", "schweiz": "CH",
    "suisse": "CH", "osterreich": "AT", "cotedivoire": "CI", "espana": "ES", "italia": "IT",
    "brasil": "BR",
}


def _squash(text: str) -> str:
    """Letters only, accents dropped: "Côte d'Ivoire" -> "cotedivoire"."""
    plain = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return re.sub(r"[^a-z]", "", plain.lower())


@functools.cache
def _country_index() -> dict[str, str]:
    """Normalized country names and ISO codes -> alpha-2, from the holidays registry."""
    index: dict[str, str] = {}
    try:
        from holidays.registry import COUNTRIES
    except ImportError:  # pragma: no cover - holidays is a core dependency
        COUNTRIES = {}
    for key, entry in COUNTRIES.items():
        code = str(entry[1])
        index[_squash(key)] = code
        for alias in entry[1:]:
            index.setdefault(_squash(str(alias)), code)
    index.update(_COUNTRY_ALIASES)
    return index


def country_code(value: object) -> str | None:
    """ISO 3166-1 alpha-2 for HubSpot's free-text country, or None when unknown."""
    text = _text(value)
    return _country_index().get(_squash(text)) if text else None


__all__ = ["DEFAULT_ID_PROPERTIES", "HubSpotCrm", "country_code", "iana_zone"]
