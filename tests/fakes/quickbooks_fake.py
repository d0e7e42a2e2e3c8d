"""A loopback stand-in for QuickBooks Online's v3 API and Intuit's OAuth token endpoint.

No public fake exists, so this one is built from Intuit's documented payloads: a real HTTP
server on 127.0.0.1 (free port) that python-quickbooks and intuit-oauth talk to unmodified,
pointed at it by base URL. It keeps a small company (customers, invoices, payments, with
`MetaData.LastUpdatedTime` from a settable clock) and answers:

    POST /oauth2/v1/tokens/bearer                      refresh_token grant, rotating tokens
    POST /v3/company/<realm>/query                     the SQL subset the connector emits
    GET  /v3/company/<realm>/cdc                       change data capture (CDCResponse)
    GET  /v3/company/<realm>/companyinfo/<realm>       CompanyInfo
    POST /v3/company/<realm>/invoice/<id>/send         Invoice.send (requestid de-duplicated)

Query subset: `select * from <Entity> [where <cond> [and <cond>]...] [STARTPOSITION n]
[MAXRESULTS n]` with conditions `Field op 'value'` (=, <, >, <=, >=) and `Field IN (...)`;
MAXRESULTS defaults to 100 and may not exceed 1000, customers are active-only unless the
query says otherwise, rows come in Id order. Anything else is a QueryParserError Fault.

Amounts are Decimal here and written as JSON numbers with their exact digits, as
QuickBooks does. Faults are injected per endpoint with `fail(...)`: any status and body
(Faults, 429 with Retry-After, 5xx), a slow answer, or a connection dropped mid-body.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

JSON = dict[str, Any]
MAX_RESULTS = 1000
CDC_MAX = 1000
ENTITIES = ("Customer", "Invoice", "Payment")


@dataclass
class Injected:
    """A fault served instead of (or before) the real answer, `times` times."""

    endpoint: str  # query | cdc | companyinfo | send | token | * (any)
    times: int = 1
    status: int = 500
    body: JSON | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0  # seconds before answering normally (a slow response)
    drop: bool = False  # send half of the real body, then close the connection


@dataclass(frozen=True)
class Call:
    method: str
    endpoint: str
    path: str
    query: dict[str, str]
    body: str
    status: int


def fault_body(message: str, detail: str, code: str, type_: str) -> JSON:
    """QuickBooks' error envelope."""
    return {"Fault": {"Error": [{"Message": message, "Detail": detail, "code": code,
                                 "element": ""}], "type": type_},
            "time": datetime.now(UTC).isoformat(timespec="milliseconds")}


def validation_fault(detail: str, message: str = "A business validation error has occurred "
                     "while processing your request", code: str = "6000") -> JSON:
    return fault_body(message, detail, code, "ValidationFault")


THROTTLED = fault_body("message=ThrottleExceeded; errorCode=003001; statusCode=429",
                       "The request limit was reached.", "3001", "ThrottleExceeded")


def _dumps(value: Any) -> bytes:
    """JSON with Decimal amounts as exact number literals (no float in between)."""
    marks: dict[str, str] = {}

    def default(obj: Any) -> Any:
        if isinstance(obj, Decimal):
            key = f"@@dec{len(marks)}@@"
            marks[key] = format(obj, "f")
            return key
        raise TypeError(type(obj).__name__)

    text = json.dumps(value, default=default)
    if marks:
        text = re.sub(r'"(@@dec\d+@@)"', lambda m: marks[m.group(1)], text)
    return text.encode()


class QueryError(ValueError):
    pass


_QUERY = re.compile(
    r"^\s*select\s+\*\s+from\s+(?P<entity>\w+)"
    r"(?:\s+where\s+(?P<where>.+?))?"
    r"(?:\s+startposition\s+(?P<start>\d+))?"
    r"(?:\s+maxresults\s+(?P<max>\d+))?\s*$",
    re.IGNORECASE | re.DOTALL,
)
_COND = re.compile(
    r"^\s*(?P<field>[A-Za-z][\w.]*)\s*(?P<op>>=|<=|=|>|<|\bin\b)\s*(?P<value>.+?)\s*$",
    re.IGNORECASE | re.DOTALL,
)


def _literal(text: str) -> Any:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] == "'":
        return text[1:-1]
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise QueryError(f"Encountered \"{text}\": values must be quoted")


def _split_and(where: str) -> list[str]:
    """Split on AND outside quotes and parentheses."""
    parts, depth, quoted, last = [], 0, False, 0
    i = 0
    while i < len(where):
        ch = where[i]
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif (not quoted and depth == 0 and where[i:i + 5].lower() == " and "):
            parts.append(where[last:i])
            last = i + 5
            i += 5
            continue
        i += 1
    parts.append(where[last:])
    return parts


def _field(obj: JSON, path: str) -> Any:
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _compare(actual: Any, op: str, wanted: Any, path: str) -> bool:
    if actual is None:
        return False
    if path.lower() == "id":
        actual, wanted = str(actual), wanted
    elif isinstance(actual, Decimal):
        wanted = Decimal(str(wanted))
    elif path.lower().endswith("time"):
        actual, wanted = _parse_time(str(actual)), _parse_time(str(wanted))
    ops: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: a == b, ">": lambda a, b: a > b, "<": lambda a, b: a < b,
        ">=": lambda a, b: a >= b, "<=": lambda a, b: a <= b,
    }
    return ops[op](actual, wanted)


def _parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _in_predicate(path: str, values: list[Any]) -> Callable[[JSON], bool]:
    texts = {str(v) for v in values}

    def check(obj: JSON) -> bool:
        actual = _field(obj, path)
        return actual in values or str(actual) in texts

    return check


def _op_predicate(path: str, op: str, value: Any) -> Callable[[JSON], bool]:
    return lambda obj: _compare(_field(obj, path), op, value, path)


def parse_query(sql: str) -> tuple[str, list[Callable[[JSON], bool]], int, int, bool]:
    """(entity, predicates, start position, max results, mentions Active)."""
    match = _QUERY.match(sql)
    if match is None:
        raise QueryError(f"Encountered unexpected text in \"{sql[:80]}\"")
    entity = match["entity"]
    canonical = {e.lower(): e for e in (*ENTITIES, "CompanyInfo")}
    if entity.lower() not in canonical:
        raise QueryError(f"Unknown entity {entity}")
    predicates: list[Callable[[JSON], bool]] = []
    mentions_active = False
    for cond in _split_and(match["where"] or "") if match["where"] else []:
        m = _COND.match(cond)
        if m is None:
            raise QueryError(f"Encountered \"{cond.strip()}\"")
        path, op, raw = m["field"], m["op"].lower(), m["value"]
        mentions_active = mentions_active or path.lower() == "active"
        if op == "in":
            if not (raw.startswith("(") and raw.endswith(")")):
                raise QueryError(f"IN needs a list: {raw}")
            values = [_literal(v) for v in raw[1:-1].split(",") if v.strip()]
            predicates.append(_in_predicate(path, values))
        else:
            predicates.append(_op_predicate(path, op, _literal(raw)))
    start = int(match["start"] or 1)
    maximum = int(match["max"] or 100)
    if start < 1:
        raise QueryError("STARTPOSITION must be at least 1")
    if maximum > MAX_RESULTS:
        raise QueryError(f"MAXRESULTS {maximum} is over the limit of {MAX_RESULTS}")
    return canonical[entity.lower()], predicates, start, maximum, mentions_active


class QuickBooksFake:
    """A QuickBooks Online company on a loopback port; use as a context manager."""

    def __init__(self, *, realm_id: str = "9130350000000001", company_name: str = "Acme AR Ltd",
                 client_id: str = "qbo-client", client_secret: str = "qbo-secret",
                 seed_refresh_token: str = "seed-refresh-token", access_ttl: int = 3600,
                 now: datetime | None = None) -> None:
        self.realm_id = realm_id
        self.company_name = company_name
        self.client_id = client_id
        self.client_secret = client_secret
        self.access_ttl = access_ttl
        self.now = now or datetime(2026, 3, 2, 14, 0, tzinfo=UTC)
        self.lock = threading.RLock()
        self.customers: dict[str, JSON] = {}
        self.invoices: dict[str, JSON] = {}
        self.payments: dict[str, JSON] = {}
        self.deleted: dict[str, list[JSON]] = {e: [] for e in ENTITIES}
        self.refresh_tokens: set[str] = {seed_refresh_token}
        self.access_tokens: dict[str, datetime] = {}
        self.sent: list[tuple[str, str]] = []  # (invoice Id, address)
        self.calls: list[Call] = []
        self._send_requests: dict[str, JSON] = {}
        self._faults: list[Injected] = []
        self._next_id = 1
        self._stop = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._server.fake = self  # type: ignore[attr-defined]
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/v3"

    @property
    def token_url(self) -> str:
        return f"{self.base_url}/oauth2/v1/tokens/bearer"

    def start(self) -> Self:
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.02,),
                                        name="quickbooks-fake", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- the company --------------------------------------------------------------------

    def _id(self) -> str:
        self._next_id += 1
        return str(self._next_id)

    def _meta(self, created: datetime | None = None) -> JSON:
        stamp = (created or self.now).isoformat(timespec="seconds")
        return {"CreateTime": stamp, "LastUpdatedTime": self.now.isoformat(timespec="seconds")}

    def _touch(self, obj: JSON) -> None:
        obj["SyncToken"] = str(int(obj.get("SyncToken", "0")) + 1)
        obj["MetaData"]["LastUpdatedTime"] = self.now.isoformat(timespec="seconds")

    def add_customer(self, display_name: str, *, email: str | None = None,
                     country: str | None = "USA", currency: str = "USD",
                     given_name: str | None = None, family_name: str | None = None,
                     web: str | None = None, active: bool = True) -> JSON:
        with self.lock:
            cid = self._id()
            customer: JSON = {
                "Id": cid, "SyncToken": "0", "domain": "QBO", "sparse": False,
                "DisplayName": display_name, "CompanyName": display_name,
                "FullyQualifiedName": display_name, "PrintOnCheckName": display_name,
                "Active": active, "Taxable": False, "Job": False, "BillWithParent": False,
                "Balance": Decimal("0"), "BalanceWithJobs": Decimal("0"),
                "CurrencyRef": {"value": currency, "name": currency},
                "PreferredDeliveryMethod": "Email", "MetaData": self._meta(),
            }
            if email:
                customer["PrimaryEmailAddr"] = {"Address": email}
            if given_name:
                customer["GivenName"] = given_name
            if family_name:
                customer["FamilyName"] = family_name
            if web:
                customer["WebAddr"] = {"URI": web}
            if country is not None:
                customer["BillAddr"] = {"Id": self._id(), "Line1": "1 Main Street",
                                        "City": "Springfield", "Country": country,
                                        "PostalCode": "12345"}
            self.customers[cid] = customer
            return customer

    def add_invoice(self, customer: JSON, amount: Decimal | str, *, txn_date: date,
                    due_date: date | None = None, doc_number: str | None = None,
                    balance: Decimal | str | None = None, currency: str | None = None) -> JSON:
        with self.lock:
            iid = self._id()
            total = Decimal(amount)
            invoice: JSON = {
                "Id": iid, "SyncToken": "0", "domain": "QBO", "sparse": False,
                "TxnDate": txn_date.isoformat(),
                "DueDate": (due_date or txn_date + timedelta(days=30)).isoformat(),
                "CustomerRef": {"value": customer["Id"], "name": customer["DisplayName"]},
                "CurrencyRef": {"value": currency or customer["CurrencyRef"]["value"]},
                "TotalAmt": total, "Balance": Decimal(balance) if balance is not None else total,
                "Line": [{"Id": "1", "LineNum": 1, "Amount": total,
                          "DetailType": "SalesItemLineDetail",
                          "SalesItemLineDetail": {"ItemRef": {"value": "1", "name": "Services"}}},
                         {"Amount": total, "DetailType": "SubTotalLineDetail",
                          "SubTotalLineDetail": {}}],
                "LinkedTxn": [], "EmailStatus": "NotSet", "PrintStatus": "NeedToPrint",
                "MetaData": self._meta(),
            }
            if doc_number is not None:
                invoice["DocNumber"] = doc_number
            if "PrimaryEmailAddr" in customer:
                invoice["BillEmail"] = dict(customer["PrimaryEmailAddr"])
            self.invoices[iid] = invoice
            return invoice

    def pay(self, invoice_id: str, amount: Decimal | str | None = None, *,
            on: date | None = None) -> JSON:
        """Receive a payment against an invoice (all of its balance unless `amount`)."""
        with self.lock:
            invoice = self.invoices[invoice_id]
            paid = Decimal(amount) if amount is not None else invoice["Balance"]
            pid = self._id()
            payment: JSON = {
                "Id": pid, "SyncToken": "0", "domain": "QBO", "sparse": False,
                "TxnDate": (on or self.now.date()).isoformat(), "TotalAmt": paid,
                "UnappliedAmt": Decimal("0"), "CustomerRef": dict(invoice["CustomerRef"]),
                "CurrencyRef": dict(invoice["CurrencyRef"]),
                "Line": [{"Amount": paid, "LinkedTxn": [{"TxnId": invoice_id,
                                                          "TxnType": "Invoice"}]}],
                "MetaData": self._meta(),
            }
            self.payments[pid] = payment
            invoice["Balance"] = invoice["Balance"] - paid
            invoice["LinkedTxn"].append({"TxnId": pid, "TxnType": "Payment"})
            self._touch(invoice)
            return payment

    def void(self, invoice_id: str) -> None:
        """QuickBooks keeps a voided invoice with zero amounts and "Voided" in the memo."""
        with self.lock:
            invoice = self.invoices[invoice_id]
            invoice["TotalAmt"] = Decimal("0")
            invoice["Balance"] = Decimal("0")
            invoice["PrivateNote"] = "Voided"
            self._touch(invoice)

    def delete(self, invoice_id: str) -> None:
        with self.lock:
            self.invoices.pop(invoice_id)
            self.deleted["Invoice"].append({"Id": invoice_id, "status": "Deleted", "domain":
                                            "QBO", "MetaData": {"LastUpdatedTime":
                                            self.now.isoformat(timespec="seconds")}})

    def update_invoice(self, invoice_id: str, **fields: Any) -> JSON:
        with self.lock:
            invoice = self.invoices[invoice_id]
            invoice.update(fields)
            self._touch(invoice)
            return invoice

    def update_customer(self, customer_id: str, **fields: Any) -> JSON:
        with self.lock:
            customer = self.customers[customer_id]
            customer.update(fields)
            self._touch(customer)
            return customer

    # -- tokens and faults --------------------------------------------------------------

    def expire_access_tokens(self) -> None:
        with self.lock:
            self.access_tokens.clear()

    def revoke_refresh_tokens(self) -> None:
        with self.lock:
            self.refresh_tokens.clear()

    def fail(self, endpoint: str, *, times: int = 1, status: int = 500,
             body: JSON | str | None = None, headers: dict[str, str] | None = None,
             delay: float = 0.0, drop: bool = False) -> None:
        with self.lock:
            self._faults.append(Injected(endpoint, times, status, body, dict(headers or {}),
                                         delay, drop))

    def count(self, endpoint: str | None = None) -> int:
        """Calls served to the v3 API (or one endpoint of it, or "token")."""
        with self.lock:
            if endpoint is None:
                return sum(1 for c in self.calls if c.endpoint != "token")
            return sum(1 for c in self.calls if c.endpoint == endpoint)

    def counts(self) -> Counter[str]:
        with self.lock:
            return Counter(c.endpoint for c in self.calls)

    def _take_fault(self, endpoint: str) -> Injected | None:
        with self.lock:
            for fault in self._faults:
                if fault.endpoint in (endpoint, "*") and fault.times > 0:
                    fault.times -= 1
                    return fault
            return None

    def wait(self, seconds: float) -> None:
        self._stop.wait(seconds)

    # -- answers ------------------------------------------------------------------------

    def token(self, form: dict[str, str], authorization: str) -> tuple[int, JSON]:
        expected = base64.b64encode(f"{self.client_id}:{self.client_secret}".encode()).decode()
        if authorization != f"Basic {expected}":
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "refresh_token":
            return 400, {"error": "unsupported_grant_type"}
        with self.lock:
            old = form.get("refresh_token", "")
            if old not in self.refresh_tokens:
                return 400, {"error": "invalid_grant"}
            self.refresh_tokens.discard(old)
            refresh = f"rt-{secrets.token_hex(8)}"
            access = f"at-{secrets.token_hex(8)}"
            self.refresh_tokens.add(refresh)
            self.access_tokens[access] = self.now + timedelta(seconds=self.access_ttl)
        return 200, {"token_type": "bearer", "expires_in": self.access_ttl,
                     "refresh_token": refresh, "x_refresh_token_expires_in": 8726400,
                     "access_token": access}

    def authorized(self, header: str) -> bool:
        token = header.removeprefix("Bearer ").strip()
        with self.lock:
            expires = self.access_tokens.get(token)
            return expires is not None and expires > self.now

    def _rows(self, entity: str) -> list[JSON]:
        table = {"Customer": self.customers, "Invoice": self.invoices,
                 "Payment": self.payments}[entity]
        return [table[k] for k in sorted(table, key=int)]

    def query(self, sql: str, include: str) -> tuple[int, JSON]:
        try:
            entity, predicates, start, maximum, mentions_active = parse_query(sql)
        except QueryError as exc:
            return 400, fault_body("Error parsing query", f"QueryParserError: {exc}", "4000",
                                   "ValidationFault")
        with self.lock:
            rows = [r for r in self._rows(entity) if all(p(r) for p in predicates)]
            if entity == "Customer" and not mentions_active:
                rows = [r for r in rows if r.get("Active", True)]
            chosen = [self._out(entity, r, include) for r in rows[start - 1:start - 1 + maximum]]
        response: JSON = {}
        if chosen:
            response = {entity: chosen, "startPosition": start, "maxResults": len(chosen)}
        return 200, {"QueryResponse": response, "time": self._time()}

    def _out(self, entity: str, row: JSON, include: str) -> JSON:
        out: JSON = json.loads(_dumps(row), parse_float=Decimal)
        if entity == "Invoice" and "invoicelink" in include.lower():
            out["InvoiceLink"] = (f"https://connect.intuit.com/portal/app/CommerceNetwork/"
                                  f"view/scs-v1-{self.realm_id}-{row['Id']}")
        return out

    def cdc(self, entities: str, changed_since: str) -> tuple[int, JSON]:
        try:
            since = _parse_time(changed_since)
        except ValueError:
            return 400, validation_fault(f"Invalid changedSince {changed_since}")
        if since < self.now - timedelta(days=30):
            return 400, validation_fault("changedSince must be within the last 30 days",
                                         code="2010")
        blocks: list[JSON] = []
        with self.lock:
            for entity in [e.strip() for e in entities.split(",") if e.strip()]:
                if entity not in ENTITIES:
                    return 400, validation_fault(f"Unsupported entity {entity}")
                changed = [self._out(entity, r, "") for r in self._rows(entity)
                           if _parse_time(r["MetaData"]["LastUpdatedTime"]) >= since]
                changed += [dict(d) for d in self.deleted[entity]
                            if _parse_time(d["MetaData"]["LastUpdatedTime"]) >= since]
                changed = changed[:CDC_MAX]
                block: JSON = {"startPosition": 1, "maxResults": len(changed),
                               "totalCount": len(changed)}
                if changed:
                    block[entity] = changed
                blocks.append(block)
        return 200, {"CDCResponse": [{"QueryResponse": blocks}], "time": self._time()}

    def company_info(self) -> tuple[int, JSON]:
        return 200, {"CompanyInfo": {"Id": self.realm_id, "CompanyName": self.company_name,
                                     "LegalName": f"{self.company_name} Inc.", "Country": "US",
                                     "SyncToken": "3", "domain": "QBO"},
                     "time": self._time()}

    def send(self, invoice_id: str, send_to: str, request_id: str) -> tuple[int, JSON]:
        with self.lock:
            if request_id and request_id in self._send_requests:
                return 200, self._send_requests[request_id]
            invoice = self.invoices.get(invoice_id)
            if invoice is None:
                return 400, fault_body("Object Not Found", "Object Not Found : Something "
                                       "you're trying to use has been made inactive or "
                                       "deleted", "610", "ValidationFault")
            if not send_to and "BillEmail" not in invoice:
                return 400, validation_fault("Invalid email: a billing email is required",
                                             code="6000")
            address = send_to or invoice["BillEmail"]["Address"]
            self.sent.append((invoice_id, address))
            invoice["EmailStatus"] = "EmailSent"
            invoice["BillEmail"] = {"Address": address}
            invoice["DeliveryInfo"] = {"DeliveryType": "Email",
                                       "DeliveryTime": self.now.isoformat(timespec="seconds")}
            self._touch(invoice)
            answer = {"Invoice": self._out("Invoice", invoice, ""), "time": self._time()}
            if request_id:
                self._send_requests[request_id] = answer
            return 200, answer

    def _time(self) -> str:
        return self.now.isoformat(timespec="milliseconds")


_API = re.compile(r"^/v3/company/(?P<realm>[^/]+)/(?P<rest>.+)$")


class _Handler(BaseHTTPRequestHandler):
    server: ThreadingHTTPServer

    @property
    def fake(self) -> QuickBooksFake:
        return self.server.fake  # type: ignore[attr-defined, no-any-return]

    def log_message(self, format: str, *args: Any) -> None:
        return

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def _handle(self, method: str) -> None:
        parts = urlsplit(self.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode() if length else ""
        endpoint, answer = self._route(method, parts.path, query, body)
        fault = self.fake._take_fault(endpoint)
        headers: dict[str, str] = {}
        drop = fault is not None and fault.drop
        if fault is not None and fault.delay:
            self.fake.wait(fault.delay)
        if fault is not None and not (fault.delay or fault.drop):
            # A refused request takes no effect; a slow or dropped one did its work.
            status, payload, headers = fault.status, fault.body or {}, fault.headers
        else:
            status, payload = answer()
        with self.fake.lock:
            self.fake.calls.append(Call(method, endpoint, parts.path, query, body, status))
        data = _dumps(payload) if isinstance(payload, dict) else str(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json;charset=UTF-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("intuit_tid", secrets.token_hex(8))
            for name, value in headers.items():
                self.send_header(name, value)
            if status == 401:
                self.send_header("WWW-Authenticate", 'Bearer realm="Intuit"')
            self.end_headers()
            self.wfile.write(data[: len(data) // 2] if drop else data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        if drop:
            self.close_connection = True

    def _route(self, method: str, path: str, query: dict[str, str], body: str,
               ) -> tuple[str, Callable[[], tuple[int, JSON]]]:
        fake = self.fake
        if method == "POST" and path == "/oauth2/v1/tokens/bearer":
            form = {k: v[-1] for k, v in parse_qs(body).items()}
            auth = self.headers.get("Authorization", "")
            return "token", lambda: fake.token(form, auth)
        match = _API.match(path)
        if match is None:
            return "unknown", lambda: (404, {"error": f"no route {method} {path}"})
        if not fake.authorized(self.headers.get("Authorization", "")):
            return _endpoint(match["rest"]), lambda: (401, {"fault": {"error": [{
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired or invalid", "code": "3200"}],
                "type": "AUTHENTICATION"}, "requestId": secrets.token_hex(8)})
        if match["realm"] != fake.realm_id:
            return _endpoint(match["rest"]), lambda: (403, fault_body(
                "ApplicationAuthorizationFailed", "The realm is not authorized", "003100",
                "AuthorizationFault"))
        rest = match["rest"]
        if method == "POST" and rest == "query":
            return "query", lambda: fake.query(body, query.get("include", ""))
        if method == "GET" and rest == "cdc":
            return "cdc", lambda: fake.cdc(query.get("entities", ""),
                                           query.get("changedSince", ""))
        if method == "GET" and rest == f"companyinfo/{fake.realm_id}":
            return "companyinfo", fake.company_info
        send = re.fullmatch(r"invoice/(\d+)/send", rest)
        if method == "POST" and send:
            return "send", lambda: fake.send(send[1], query.get("sendTo", ""),
                                             query.get("requestid", ""))
        return "unknown", lambda: (400, validation_fault(f"Unsupported operation {rest}"))


def _endpoint(rest: str) -> str:
    if rest.startswith("query"):
        return "query"
    if rest.startswith("cdc"):
        return "cdc"
    if rest.startswith("companyinfo"):
        return "companyinfo"
    return "send" if rest.endswith("/send") else "unknown"


def open_invoice_ids(fake: QuickBooksFake) -> Iterator[str]:
    with fake.lock:
        yield from (i for i, inv in fake.invoices.items() if inv["Balance"] > 0)
