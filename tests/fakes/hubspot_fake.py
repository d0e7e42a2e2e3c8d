"""A loopback stand-in for the HubSpot CRM API, speaking HubSpot's documented JSON shapes.

The real `hubspot-api-client` is pointed at it with `HubSpot(access_token=..., host=fake.url)`.
It serves only what the dunning connector uses:

    GET  /crm/v3/objects/companies                      list, `after` paging by object id
    POST /crm/v3/objects/companies/search               filterGroups / sorts / after offset,
                                                        with the 10,000-result window
    GET  /crm/v3/owners/ and /crm/v3/owners/{id}        owners (email filter, archived)
    POST /crm/v4/associations/companies/contacts/batch/read
    POST /crm/v3/objects/contacts/batch/read
    POST /crm/v3/objects/tasks and /crm/v3/objects/notes (with associations)

State is kept so tests can assert on it: companies can be changed with `modify_company`,
which moves `hs_lastmodifieddate` forward on the fake's own clock (one second per change, so
runs are deterministic); created tasks and notes are kept in `tasks` / `notes`. Every request
is logged in `requests`.

Faults are injected per request with `fail(...)`: an HTTP status with HubSpot's error body
(401, 403, 429 with `Retry-After: 0`, 500...), a slow answer (`delay`), or a connection
dropped after half of the body was sent (`drop`).
"""

from __future__ import annotations

import functools
import json
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, urlsplit

TOKEN = "pat-na1-test-token"
BASE_TIME = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
SEARCH_WINDOW = 10_000  # HubSpot's search API refuses after + limit beyond this
COMPANY_TO_CONTACT = 280  # HubSpot-defined company -> contact association type
NOTE_TO_COMPANY = 190
TASK_TO_COMPANY = 192
DEFAULT_COMPANY_PROPERTIES = ("hs_object_id", "createdate", "hs_lastmodifieddate")
ALL_SCOPES = frozenset({
    "crm.objects.companies.read", "crm.objects.contacts.read", "crm.objects.owners.read",
    "crm.objects.companies.write", "crm.objects.contacts.write",
})


def iso(moment: datetime) -> str:
    """HubSpot's timestamp format: UTC with milliseconds and a Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{moment.microsecond // 1000:03d}Z"


def to_ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


@dataclass
class Fault:
    """One injected misbehaviour for requests whose "METHOD /path" contains `match`."""

    kind: str  # "status" | "delay" | "drop"
    match: str = ""
    times: int = 1
    status: int = 500
    retry_after: str | None = "0"
    delay: float = 0.0
    body: dict[str, Any] | None = None


@dataclass
class Recorded:
    method: str
    path: str
    query: dict[str, list[str]]
    body: Any


@dataclass
class _Company:
    id: int
    properties: dict[str, str | None]
    created: datetime
    modified: datetime
    archived: bool = False
    # When the search API starts showing this version (None: at once). HubSpot's search
    # index lags writes by seconds; the list and read APIs do not.
    searchable: datetime | None = None


@dataclass
class _State:
    companies: dict[int, _Company] = field(default_factory=dict)
    contacts: dict[int, dict[str, str | None]] = field(default_factory=dict)
    # company id -> [(contact id, association label or None)]
    associations: dict[int, list[tuple[int, str | None]]] = field(default_factory=dict)
    owners: dict[int, dict[str, Any]] = field(default_factory=dict)
    tasks: list[dict[str, Any]] = field(default_factory=list)
    notes: list[dict[str, Any]] = field(default_factory=list)


class HubSpotFake:
    """Start with `with HubSpotFake() as fake:`; `fake.url` is the host for the SDK."""

    def __init__(self, *, token: str = TOKEN, scopes: frozenset[str] = ALL_SCOPES,
                 search_window: int = SEARCH_WINDOW) -> None:
        self.token = token
        self.scopes = set(scopes)
        self.search_window = search_window
        self.state = _State()
        self.requests: list[Recorded] = []
        self.faults: list[Fault] = []
        self._lock = threading.RLock()
        self._clock = BASE_TIME
        self._next_id = 1000
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> HubSpotFake:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.02}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> HubSpotFake:
        return self.start()

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the HubSpot fake is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    # -- test data -------------------------------------------------------------------------
    def _new_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _tick(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def add_owner(self, email: str, *, first: str = "", last: str = "",
                  archived: bool = False) -> str:
        with self._lock:
            oid = self._new_id()
            stamp = iso(self._tick())
            self.state.owners[oid] = {
                "id": str(oid), "email": email, "firstName": first, "lastName": last,
                "userId": oid + 5000, "userIdIncludingInactive": oid + 5000, "type": "PERSON",
                "createdAt": stamp, "updatedAt": stamp, "archived": archived, "teams": [],
            }
            return str(oid)

    def add_contact(self, **properties: str | None) -> str:
        with self._lock:
            cid = self._new_id()
            self.state.contacts[cid] = dict(properties)
            return str(cid)

    def add_company(self, *, contacts: list[tuple[str, str | None]] | None = None,
                    modified: datetime | None = None, **properties: str | None) -> str:
        """A company; `contacts` are (contact id, association label or None)."""
        with self._lock:
            cid = self._new_id()
            moment = modified or self._tick()
            self.state.companies[cid] = _Company(cid, dict(properties), moment, moment)
            self.state.associations[cid] = [(int(c), label) for c, label in contacts or []]
            return str(cid)

    def modify_company(self, company_id: str, *, modified: datetime | None = None,
                       index_delay: timedelta | None = None, **properties: str | None) -> None:
        """Change a company; with `index_delay` the search API shows the change only that
        long after it was made (on the fake's clock: see `advance`)."""
        with self._lock:
            company = self.state.companies[int(company_id)]
            company.properties.update(properties)
            company.modified = modified or self._tick()
            company.searchable = (company.modified + index_delay if index_delay is not None
                                  else None)

    def advance(self, delta: timedelta) -> None:
        """Move the fake's clock on (what the search index has caught up with)."""
        with self._lock:
            self._clock += delta

    def fail(self, kind: str = "status", *, match: str = "", times: int = 1, status: int = 500,
             retry_after: str | None = "0", delay: float = 0.0,
             body: dict[str, Any] | None = None) -> None:
        with self._lock:
            self.faults.append(Fault(kind, match, times, status, retry_after, delay, body))

    def calls(self, contains: str = "") -> list[Recorded]:
        with self._lock:
            return [r for r in self.requests if contains in f"{r.method} {r.path}"]

    @property
    def tasks(self) -> list[dict[str, Any]]:
        return self.state.tasks

    @property
    def notes(self) -> list[dict[str, Any]]:
        return self.state.notes

    # -- serving ---------------------------------------------------------------------------
    def _take_fault(self, key: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if fault.match in key and fault.times > 0:
                    fault.times -= 1
                    return fault
        return None

    def _company_json(self, company: _Company, wanted: list[str]) -> dict[str, Any]:
        props: dict[str, str | None] = {
            "hs_object_id": str(company.id), "createdate": iso(company.created),
            "hs_lastmodifieddate": iso(company.modified),
        }
        for name in wanted:
            if name not in props:
                props[name] = company.properties.get(name)
        return {"id": str(company.id), "properties": props, "createdAt": iso(company.created),
                "updatedAt": iso(company.modified), "archived": company.archived}

    def _sort_value(self, name: str, company: _Company) -> tuple[int, float | str]:
        return _sort_key(self._value(company, name))

    def _value(self, company: _Company, name: str) -> str | int | None:
        if name == "hs_lastmodifieddate":
            return to_ms(company.modified)
        if name == "createdate":
            return to_ms(company.created)
        if name == "hs_object_id":
            return company.id
        return company.properties.get(name)

    def handle(self, method: str, path: str, query: dict[str, list[str]], body: Any,
               headers: dict[str, str]) -> tuple[int, dict[str, Any] | None]:
        if headers.get("authorization") != f"Bearer {self.token}":
            return 401, _error("Authentication credentials not found. This API supports OAuth "
                               "2.0 authentication.", "INVALID_AUTHENTICATION")
        with self._lock:
            route = _ROUTES.get((method, _shape(path)))
            if route is None:
                return 404, _error(f"No route for {method} {path}", "OBJECT_NOT_FOUND")
            scope, handler = route
            if scope not in self.scopes:
                return 403, _error(
                    "This app hasn't been granted all required scopes to make this call. "
                    f"Read more about required scopes here: https://developers.hubspot.com/"
                    f"scopes. requiredGranularScopes=[{scope}]", "MISSING_SCOPES")
            result: tuple[int, dict[str, Any] | None] = handler(self, path, query, body)
            return result

    # companies -----------------------------------------------------------------------------
    def _list_companies(self, path: str, query: dict[str, list[str]],
                        body: Any) -> tuple[int, dict[str, Any]]:
        limit = min(int(_first(query, "limit") or 10), 100)
        after = int(_first(query, "after") or 0)
        wanted = _csv(query.get("properties", []))
        rows = sorted((c for c in self.state.companies.values() if not c.archived
                       and c.id >= after), key=lambda c: c.id)
        page, rest = rows[:limit], rows[limit:]
        out: dict[str, Any] = {"results": [self._company_json(c, wanted) for c in page]}
        if rest:
            nxt = str(rest[0].id)
            out["paging"] = {"next": {"after": nxt, "link": f"{self.url}{path}?after={nxt}"}}
        return 200, out

    def _search_companies(self, path: str, query: dict[str, list[str]],
                          body: Any) -> tuple[int, dict[str, Any]]:
        limit = int(body.get("limit") or 10)
        offset = int(body.get("after") or 0)
        if limit > 200:
            return 400, _error("limit must be at most 200", "VALIDATION_ERROR")
        if offset + limit > self.search_window:
            return 400, _error(f"The search API returns at most {self.search_window} results: "
                               "narrow the filters", "VALIDATION_ERROR")
        groups = body.get("filterGroups") or []
        rows = [c for c in self.state.companies.values() if not c.archived
                and (c.searchable is None or c.searchable <= self._clock)
                and (not groups or any(all(_matches(self._value(c, f["propertyName"]), f)
                                           for f in g.get("filters", [])) for g in groups))]
        rows.sort(key=lambda c: c.id)  # HubSpot's order among equal sort keys is unspecified
        for sort in reversed(body.get("sorts") or []):
            if isinstance(sort, str):
                name, descending = sort.lstrip("-"), sort.startswith("-")
            else:
                name, descending = sort["propertyName"], sort.get("direction") == "DESCENDING"
            rows.sort(key=functools.partial(self._sort_value, name), reverse=descending)
        page = rows[offset:offset + limit]
        out: dict[str, Any] = {
            "total": len(rows),
            "results": [self._company_json(c, body.get("properties") or []) for c in page],
        }
        if offset + limit < len(rows):
            out["paging"] = {"next": {"after": str(offset + limit)}}
        return 200, out

    # owners -------------------------------------------------------------------------------
    def _list_owners(self, path: str, query: dict[str, list[str]],
                     body: Any) -> tuple[int, dict[str, Any]]:
        limit = min(int(_first(query, "limit") or 100), 500)
        after = int(_first(query, "after") or 0)
        archived = (_first(query, "archived") or "").lower() == "true"  # the SDK sends "True"
        email = _first(query, "email")
        rows = sorted((o for oid, o in self.state.owners.items() if oid >= after
                       and o["archived"] == archived
                       and (email is None or o["email"].lower() == email.lower())),
                      key=lambda o: int(o["id"]))
        out: dict[str, Any] = {"results": rows[:limit]}
        if len(rows) > limit:
            out["paging"] = {"next": {"after": rows[limit]["id"]}}
        return 200, out

    def _get_owner(self, path: str, query: dict[str, list[str]],
                   body: Any) -> tuple[int, dict[str, Any]]:
        owner = self.state.owners.get(_int(path.rstrip("/").rsplit("/", 1)[-1]))
        archived = (_first(query, "archived") or "").lower() == "true"  # the SDK sends "True"
        if owner is None or owner["archived"] != archived:
            return 404, _error("Owner not found", "OBJECT_NOT_FOUND")
        return 200, owner

    # associations and contacts -----------------------------------------------------------
    def _read_associations(self, path: str, query: dict[str, list[str]],
                           body: Any) -> tuple[int, dict[str, Any]]:
        results = []
        for item in body.get("inputs", []):
            cid = _int(str(item.get("id")))
            links = self.state.associations.get(cid)
            if not links:
                continue  # HubSpot leaves out ids without associations (and reports 207)
            results.append({"from": {"id": str(cid)}, "to": [
                {"toObjectId": contact, "associationTypes": [
                    {"category": "HUBSPOT_DEFINED", "typeId": COMPANY_TO_CONTACT,
                     "label": None}] + ([{"category": "USER_DEFINED", "typeId": 1001,
                                          "label": label}] if label else [])}
                for contact, label in links]})
        return 200, _batch(results)

    def _read_contacts(self, path: str, query: dict[str, list[str]],
                       body: Any) -> tuple[int, dict[str, Any]]:
        inputs = body.get("inputs", [])
        if len(inputs) > 100:
            return 400, _error("Too many inputs: the limit is 100", "VALIDATION_ERROR")
        wanted = body.get("properties") or []
        stamp = iso(BASE_TIME)
        results = []
        for item in inputs:
            cid = _int(str(item.get("id")))
            contact = self.state.contacts.get(cid)
            if contact is None:
                continue
            props = {"hs_object_id": str(cid), "createdate": stamp, "lastmodifieddate": stamp}
            props.update({name: contact.get(name) for name in wanted})
            results.append({"id": str(cid), "properties": props, "createdAt": stamp,
                            "updatedAt": stamp, "archived": False})
        return 200, _batch(results)

    # tasks and notes ---------------------------------------------------------------------
    def _create_engagement(self, path: str, query: dict[str, list[str]],
                           body: Any) -> tuple[int, dict[str, Any]]:
        kind = "tasks" if path.rstrip("/").endswith("tasks") else "notes"
        expected_type = TASK_TO_COMPANY if kind == "tasks" else NOTE_TO_COMPANY
        props: dict[str, Any] = body.get("properties") or {}
        if not props.get("hs_timestamp"):
            return 400, _error("Property values were not valid: hs_timestamp is required",
                               "VALIDATION_ERROR")
        owner = props.get("hubspot_owner_id")
        if owner and _int(str(owner)) not in self.state.owners:
            return 400, _error(f'Property values were not valid: [{{"isValid":false,"message":'
                               f'"{owner} is not a valid owner id","name":"hubspot_owner_id"}}]',
                               "VALIDATION_ERROR")
        for assoc in body.get("associations") or []:
            target = _int(str(assoc.get("to", {}).get("id")))
            for spec in assoc.get("types", []):
                if spec.get("associationTypeId") == expected_type and \
                        target not in self.state.companies:
                    return 400, _error(f"One or more associations are invalid: company "
                                       f"{target} does not exist", "VALIDATION_ERROR")
        oid = self._new_id()
        stamp = iso(self._tick())
        record = {"id": str(oid), "properties": dict(props),
                  "associations": body.get("associations") or []}
        (self.state.tasks if kind == "tasks" else self.state.notes).append(record)
        return 201, {"id": str(oid), "properties": {**props, "hs_object_id": str(oid),
                                                     "hs_createdate": stamp},
                     "createdAt": stamp, "updatedAt": stamp, "archived": False}


def _error(message: str, category: str) -> dict[str, Any]:
    return {"status": "error", "message": message, "correlationId":
            "3f1c2a9e-0000-4000-8000-000000000000", "category": category}


def _batch(results: list[dict[str, Any]]) -> dict[str, Any]:
    stamp = iso(BASE_TIME)
    return {"status": "COMPLETE", "results": results, "startedAt": stamp,
            "completedAt": stamp, "requestedAt": stamp}


def _first(query: dict[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    return values[0] if values else None


def _csv(values: list[str]) -> list[str]:
    return [name for value in values for name in value.split(",") if name]


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return -1


def _sort_key(value: str | int | None) -> tuple[int, float | str]:
    if value is None:
        return (1, "")
    if isinstance(value, int):
        return (0, float(value))
    try:
        return (0, float(value))
    except ValueError:
        return (0, value.lower())


def _matches(value: str | int | None, flt: dict[str, Any]) -> bool:
    op = flt.get("operator")
    if op == "HAS_PROPERTY":
        return value not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return value in (None, "")
    if value is None:
        return False
    target = flt.get("value")
    if op == "IN":
        return str(value) in [str(v) for v in flt.get("values", [])]
    left, right = _sort_key(value), _sort_key(target)
    return {"EQ": left == right, "NEQ": left != right, "GT": left > right,
            "GTE": left >= right, "LT": left < right, "LTE": left <= right}.get(str(op), False)


def _shape(path: str) -> str:
    """The route template of a path: numeric segments become {id}."""
    parts = [("{id}" if p.isdigit() else p) for p in path.rstrip("/").split("/")]
    return "/".join(parts)


_Route = tuple[str, Any]
_ROUTES: dict[tuple[str, str], _Route] = {
    ("GET", "/crm/v3/objects/companies"):
        ("crm.objects.companies.read", HubSpotFake._list_companies),
    ("POST", "/crm/v3/objects/companies/search"):
        ("crm.objects.companies.read", HubSpotFake._search_companies),
    ("GET", "/crm/v3/owners"): ("crm.objects.owners.read", HubSpotFake._list_owners),
    ("GET", "/crm/v3/owners/{id}"): ("crm.objects.owners.read", HubSpotFake._get_owner),
    ("POST", "/crm/v4/associations/companies/contacts/batch/read"):
        ("crm.objects.contacts.read", HubSpotFake._read_associations),
    ("POST", "/crm/v3/objects/contacts/batch/read"):
        ("crm.objects.contacts.read", HubSpotFake._read_contacts),
    ("POST", "/crm/v3/objects/tasks"):
        ("crm.objects.contacts.write", HubSpotFake._create_engagement),
    ("POST", "/crm/v3/objects/notes"):
        ("crm.objects.contacts.write", HubSpotFake._create_engagement),
}


class _Handler(BaseHTTPRequestHandler):
    owner: HubSpotFake
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test output is for the tests."""

    def _serve(self, method: str) -> None:
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            self._send(400, _error("Invalid JSON", "VALIDATION_ERROR"))
            return
        query = parse_qs(parts.query)
        fake = self.owner
        with fake._lock:
            fake.requests.append(Recorded(method, parts.path, query, body))
        fault = fake._take_fault(f"{method} {parts.path}")
        if fault is not None and fault.kind == "delay":
            time.sleep(fault.delay)
        elif fault is not None and fault.kind == "status":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            if fault.body is not None:
                error = fault.body
            elif fault.status == 429:
                error = _error("You have reached your secondly limit.", "RATE_LIMITS") | {
                    "errorType": "RATE_LIMIT", "policyName": "SECONDLY"}
            else:
                error = _error("internal error", "INTERNAL_ERROR")
            self._send(fault.status, error, headers)
            return
        headers_lower = {k.lower(): v for k, v in self.headers.items()}
        status, payload = fake.handle(method, parts.path, query, body or {}, headers_lower)
        if fault is not None and fault.kind == "drop":
            data = json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self._send(status, payload)

    def _send(self, status: int, payload: dict[str, Any] | None,
              headers: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode() if payload is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")
