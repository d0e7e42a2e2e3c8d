"""A loopback Stripe for tests: localstripe for what it does, our own code for what it lacks.

localstripe (a real, stateful Stripe stand-in) serves customers, payment methods and
charges, declining test cards included. It lacks `send_invoice` collection, `due_date`,
finalize / void / mark_uncollectible, `status` filtering of invoices and a usable event
list, so `StripeFake` serves `/v1/invoices`, `/v1/invoiceitems` and `/v1/events` itself,
from Stripe's documented shapes, and forwards every other path to localstripe. Paying an
automatically collected invoice makes a real localstripe charge on the customer's default
payment method: a declining card fails the payment as Stripe would.

Timestamps of invoices and events come from the fake's own clock (`fake.now`), so tests
choose dates. Faults can be injected per path: 429 with Retry-After, 500, a slow answer
(longer than the client's timeout) and a connection dropped mid-body.

Fixtures: `localstripe_url` (one localstripe per test session, bound to 127.0.0.1 on a free
port, in a subprocess) and `stripe_fake` (a fresh fake per test in front of it).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import hmac
import http.client
import json
import os
import secrets
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

API_KEY = "sk_test_fake_123"
API_VERSION = "2026-10-28.endive"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- localstripe --------------------------------------------------------------------------

_LOCALSTRIPE = """
import sys
from aiohttp import web
import localstripe.server as server
server.store.dump_to_disk = lambda: None  # no shared /tmp pickle between runs
web.run_app(server.app, host="127.0.0.1", port=int(sys.argv[1]), print=None,
            access_log=None)
"""


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    """A real localstripe on 127.0.0.1 (its CLI would bind every interface)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", _LOCALSTRIPE, str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    err = proc.stderr.read().decode() if proc.stderr else ""
                    raise RuntimeError(f"localstripe did not start: {err[-2000:]}") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --- form decoding (Stripe's bracket notation) --------------------------------------------

def _nest(pairs: list[tuple[str, str]]) -> dict[str, Any]:
    """`a[b]=1&c[0]=x` -> {"a": {"b": "1"}, "c": ["x"]}."""
    root: dict[str, Any] = {}
    for key, value in pairs:
        parts = key.replace("]", "").split("[")
        cur = root
        for part in parts[:-1]:
            cur = cur.setdefault(part, {})
        last = parts[-1]
        if last == "":  # a[]=x
            cur.setdefault("__list__", []).append(value)
        else:
            cur[last] = value

    def fix(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "__list__" in node:
            return [fix(v) for v in node["__list__"]]
        if node and all(k.isdigit() for k in node):
            return [fix(node[k]) for k in sorted(node, key=int)]
        return {k: fix(v) for k, v in node.items()}

    out: dict[str, Any] = fix(root)
    return out


def _int(value: Any, default: int | None = None) -> int | None:
    if value is None or value == "":
        return default
    return int(value)


def _truthy(value: Any) -> bool:
    return str(value).lower() in ("true", "1")


# --- the fake -----------------------------------------------------------------------------

@dataclass
class Fault:
    path: str  # prefix of the request path, e.g. "/v1/invoices"
    kind: str  # "429" | "500" | "slow" | "drop"
    times: int = 1
    retry_after: str | None = "0"
    delay: float = 1.0  # for "slow"
    method: str | None = None
    skip: int = 0  # matching requests let through before the fault starts


class FakeError(Exception):
    def __init__(self, status: int, message: str, type_: str = "invalid_request_error",
                 code: str | None = None) -> None:
        self.status, self.message, self.type, self.code = status, message, type_, code
        super().__init__(message)

    def body(self) -> dict[str, Any]:
        err: dict[str, Any] = {"type": self.type, "message": self.message}
        if self.code:
            err["code"] = self.code
        return {"error": err}


class StripeFake:
    """Invoices, invoice items and events per Stripe's docs; the rest forwarded to
    localstripe. Start with `with StripeFake(url) as fake:`; `fake.base_url` is the API."""

    def __init__(self, localstripe_url: str, *, api_keys: frozenset[str] = frozenset({API_KEY}),
                 now: int | None = None) -> None:
        self.upstream = urllib.parse.urlsplit(localstripe_url)
        self.api_keys = api_keys
        self.now = now if now is not None else int(time.time())
        self.lock = threading.RLock()
        self.invoices: dict[str, dict[str, Any]] = {}
        # Customers kept here instead of localstripe (bulk loads for the benchmark).
        self.customers: dict[str, dict[str, Any]] = {}
        self._sorted: list[dict[str, Any]] | None = None  # invoices newest first
        self._position: dict[str, int] = {}
        self._order: dict[str, int] = {}  # invoice id -> creation sequence (ties in `created`)
        self.pending_items: dict[str, list[dict[str, Any]]] = {}
        self.events: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.calls: list[tuple[str, str, dict[str, Any]]] = []  # method, path, params
        self._seq = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""

    # -- life cycle

    def __enter__(self) -> StripeFake:
        fake = self

        class Handler(_Handler):
            owner = fake

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.base_url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- test controls

    def set_time(self, when: datetime | int) -> None:
        self.now = int(when.timestamp()) if isinstance(when, datetime) else int(when)

    def advance(self, seconds: int) -> None:
        self.now += seconds

    def fail(self, path: str, kind: str, *, times: int = 1, retry_after: str | None = "0",
             delay: float = 1.0, method: str | None = None, skip: int = 0) -> None:
        """Answer the next `times` requests under `path` (after `skip` good ones) with a
        fault: "429" (with Retry-After), "500", "slow" (`delay` s) or "drop"."""
        with self.lock:
            self.faults.append(Fault(path, kind, times, retry_after, delay, method, skip))

    def api_calls(self, path_prefix: str = "/v1/") -> int:
        return sum(1 for _, p, _ in self.calls if p.startswith(path_prefix))

    def event_of(self, type_: str, object_id: str | None = None) -> dict[str, Any]:
        """The newest event of this type (about this object)."""
        for ev in reversed(self.events):
            if ev["type"] == type_ and (object_id is None
                                         or ev["data"]["object"].get("id") == object_id):
                return copy.deepcopy(ev)
        raise KeyError(f"no {type_} event for {object_id}")

    def emit(self, type_: str, obj: dict[str, Any],
             previous: dict[str, Any] | None = None) -> dict[str, Any]:
        """Record an event with a snapshot of `obj` at the fake's current time."""
        with self.lock:
            self._seq += 1
            event: dict[str, Any] = {
                "id": f"evt_{secrets.token_hex(8)}", "object": "event",
                "api_version": API_VERSION, "created": self.now, "type": type_,
                "livemode": False, "pending_webhooks": 0,
                "request": {"id": None, "idempotency_key": None},
                "data": {"object": copy.deepcopy(obj)},
                "_seq": self._seq,
            }
            if previous:
                event["data"]["previous_attributes"] = previous
            self.events.append(event)
            return self._public(event)

    @staticmethod
    def _public(event: dict[str, Any]) -> dict[str, Any]:
        return {k: copy.deepcopy(v) for k, v in event.items() if not k.startswith("_")}

    # -- upstream (localstripe)

    def forward(self, method: str, path: str, body: bytes | None, headers: dict[str, str]
                ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(self.upstream.hostname or "127.0.0.1",
                                          self.upstream.port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {"Content-Type": resp.getheader("Content-Type") or
                                 "application/json"}, data
        finally:
            conn.close()

    def _upstream_json(self, method: str, path: str, auth: str,
                       form: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
        body = urllib.parse.urlencode(form).encode() if form is not None else None
        headers = {"Authorization": auth}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        status, _, data = self.forward(method, path, body, headers)
        parsed: dict[str, Any] = json.loads(data) if data.strip() else {}
        return status, parsed

    # -- invoices

    def _customer(self, customer_id: str, auth: str) -> dict[str, Any]:
        local = self.customers.get(customer_id)
        if local is not None:
            return copy.deepcopy(local)
        status, obj = self._upstream_json("GET", f"/v1/customers/{customer_id}", auth)
        if status != 200:
            raise FakeError(404, f"No such customer: '{customer_id}'", code="resource_missing")
        return obj

    def _invoice(self, invoice_id: str) -> dict[str, Any]:
        inv = self.invoices.get(invoice_id)
        if inv is None:
            raise FakeError(404, f"No such invoice: '{invoice_id}'", code="resource_missing")
        return inv

    def create_item(self, p: dict[str, Any]) -> dict[str, Any]:
        customer = p.get("customer")
        if not customer:
            raise FakeError(400, "Missing required param: customer.")
        amount = _int(p.get("amount"))
        if amount is None:
            amount = (_int(p.get("unit_amount"), 0) or 0) * (_int(p.get("quantity"), 1) or 1)
        item = {"id": f"ii_{secrets.token_hex(8)}", "object": "invoiceitem",
                "customer": customer, "amount": amount,
                "currency": str(p.get("currency") or "usd").lower(),
                "description": p.get("description"), "date": self.now, "invoice": None,
                "livemode": False, "metadata": p.get("metadata") or {}}
        self.pending_items.setdefault(customer, []).append(item)
        return item

    def create_invoice(self, p: dict[str, Any], auth: str) -> dict[str, Any]:
        cid = p.get("customer")
        if not cid:
            raise FakeError(400, "Missing required param: customer.")
        customer = self._customer(str(cid), auth)
        method = p.get("collection_method") or "charge_automatically"
        if method not in ("charge_automatically", "send_invoice"):
            raise FakeError(400, f"Invalid collection_method: {method}")
        due_date = _int(p.get("due_date"))
        days = _int(p.get("days_until_due"))
        if method == "send_invoice" and due_date is None and days is None:
            raise FakeError(400, "Invoices with collection_method send_invoice need "
                                 "due_date or days_until_due.")
        if method == "charge_automatically" and (due_date is not None or days is not None):
            raise FakeError(400, "due_date and days_until_due are only for send_invoice.")
        items = self.pending_items.pop(str(cid), [])
        currency = str(p.get("currency") or (items[0]["currency"] if items else "usd")).lower()
        total = sum(int(i["amount"]) for i in items)
        self._seq += 1
        iid = f"in_{secrets.token_hex(8)}"
        for it in items:
            it["invoice"] = iid
        inv: dict[str, Any] = {
            "id": iid, "object": "invoice", "customer": cid,
            "customer_name": customer.get("name"), "customer_email": customer.get("email"),
            "customer_address": customer.get("address"), "currency": currency,
            "collection_method": method, "status": "draft", "number": None,
            "created": self.now, "due_date": due_date, "days_until_due": days,
            "amount_due": total, "amount_paid": 0, "amount_remaining": total,
            "subtotal": total, "total": total, "attempt_count": 0, "attempted": False,
            "auto_advance": _truthy(p.get("auto_advance", "true")),
            "hosted_invoice_url": None, "invoice_pdf": None, "next_payment_attempt": None,
            "description": p.get("description"), "metadata": p.get("metadata") or {},
            "livemode": False, "effective_at": None,
            "lines": {"object": "list", "data": [
                {"id": f"il_{it['id'][3:]}", "object": "line_item", "amount": it["amount"],
                 "currency": it["currency"], "description": it["description"]}
                for it in items], "has_more": False, "url": f"/v1/invoices/{iid}/lines"},
            "status_transitions": {"finalized_at": None, "paid_at": None,
                                   "voided_at": None, "marked_uncollectible_at": None},
        }
        self.invoices[iid] = inv
        self._order[iid] = self._seq
        self._sorted = None
        self.emit("invoice.created", inv)
        return inv

    # -- bulk loads (the benchmark: 100k invoices through localstripe would take too long)

    def add_customer(self, *, name: str, email: str, country: str, timezone: str | None = None,
                     currency: str = "usd") -> dict[str, Any]:
        """A customer kept by the fake itself, shaped as Stripe returns one."""
        with self.lock:
            self._seq += 1
            cid = f"cus_b{self._seq:09d}"
            cust: dict[str, Any] = {
                "id": cid, "object": "customer", "name": name, "email": email,
                "address": {"country": country}, "currency": currency,
                "metadata": {"timezone": timezone} if timezone else {},
                "invoice_settings": {"default_payment_method": None},
                "default_source": None, "created": self.now, "livemode": False,
                "deleted": False}
            self.customers[cid] = cust
            return cust

    def add_open_invoice(self, customer: dict[str, Any], amount: int, *, due_date: int,
                         number: str | None = None, event: bool = False) -> dict[str, Any]:
        """A finalized `send_invoice` invoice created at `now`, written straight into the
        store (`event=True` also records `invoice.finalized`, as a new invoice would)."""
        with self.lock:
            self._seq += 1
            iid = f"in_b{self._seq:010d}"
            inv: dict[str, Any] = {
                "id": iid, "object": "invoice", "customer": customer["id"],
                "customer_name": customer.get("name"),
                "customer_email": customer.get("email"),
                "customer_address": customer.get("address"),
                "currency": customer.get("currency") or "usd",
                "collection_method": "send_invoice", "status": "open",
                "number": number or f"BULK-{self._seq:07d}", "created": self.now,
                "due_date": due_date, "days_until_due": None, "amount_due": amount,
                "amount_paid": 0, "amount_remaining": amount, "subtotal": amount,
                "total": amount, "attempt_count": 0, "attempted": False,
                "auto_advance": True,
                "hosted_invoice_url": f"https://invoice.stripe.test/i/acct_fake/{iid}",
                "invoice_pdf": None, "next_payment_attempt": None, "description": None,
                "metadata": {}, "livemode": False, "effective_at": self.now,
                "lines": {"object": "list", "data": [], "has_more": False,
                          "url": f"/v1/invoices/{iid}/lines"},
                "status_transitions": {"finalized_at": self.now, "paid_at": None,
                                       "voided_at": None, "marked_uncollectible_at": None},
            }
            self.invoices[iid] = inv
            self._order[iid] = self._seq
            self._sorted = None
            if event:
                self.emit("invoice.finalized", inv)
            return inv

    def change_amount(self, inv: dict[str, Any], amount: int) -> dict[str, Any]:
        """An open invoice's amount revised (credit note or edit): `invoice.updated`."""
        with self.lock:
            previous = {"amount_due": inv["amount_due"]}
            inv["amount_due"] = inv["total"] = inv["subtotal"] = amount
            inv["amount_remaining"] = amount - int(inv["amount_paid"])
            self.emit("invoice.updated", inv, previous)
            return inv

    def mark_paid(self, inv: dict[str, Any]) -> None:
        """Paid out of band at `now` (`invoice.paid`)."""
        with self.lock:
            self._mark_paid(inv, out_of_band=True)

    def _ordered(self) -> list[dict[str, Any]]:
        """Invoices newest first (`created`, then creation order), cached between writes."""
        if self._sorted is None:
            self._sorted = sorted(self.invoices.values(),
                                  key=lambda i: (i["created"], self._order[i["id"]]),
                                  reverse=True)
            self._position = {inv["id"]: n for n, inv in enumerate(self._sorted)}
        return self._sorted

    def finalize(self, inv: dict[str, Any]) -> dict[str, Any]:
        if inv["status"] != "draft":
            raise FakeError(400, f"This invoice is already {inv['status']}.",
                            code="invoice_not_editable")
        inv["status"] = "open"
        inv["number"] = f"FAKE-{self._order[inv['id']]:04d}"
        inv["hosted_invoice_url"] = f"https://invoice.stripe.test/i/acct_fake/{inv['id']}"
        inv["invoice_pdf"] = inv["hosted_invoice_url"] + "/pdf"
        inv["status_transitions"]["finalized_at"] = self.now
        inv["effective_at"] = self.now
        if inv["collection_method"] == "send_invoice" and inv["due_date"] is None:
            inv["due_date"] = self.now + int(inv["days_until_due"] or 30) * 86400
        if inv["collection_method"] == "charge_automatically":
            inv["next_payment_attempt"] = self.now + 3600
        self.emit("invoice.finalized", inv)
        return inv

    def pay(self, inv: dict[str, Any], p: dict[str, Any], auth: str) -> dict[str, Any]:
        if inv["status"] not in ("open", "uncollectible"):
            raise FakeError(400, f"Invoice is already {inv['status']}.",
                            code="invoice_not_open" if inv["status"] != "paid"
                            else "invoice_already_paid")
        if _truthy(p.get("paid_out_of_band", "false")):
            self._mark_paid(inv, out_of_band=True)
            return inv
        form = {"customer": str(inv["customer"]), "amount": str(inv["amount_remaining"]),
                "currency": inv["currency"], "description": f"Invoice {inv['number']}"}
        if p.get("payment_method"):
            form["source"] = str(p["payment_method"])
        status, charge = self._upstream_json("POST", "/v1/charges", auth, form)
        inv["attempted"] = True
        inv["attempt_count"] += 1
        if status == 200:
            inv["charge"] = charge.get("id")
            self._mark_paid(inv, out_of_band=False)
            return inv
        inv["next_payment_attempt"] = self.now + 3 * 86400
        self.emit("invoice.payment_failed", inv)
        message = (charge.get("error") or {}).get("message") or "Your card was declined."
        raise FakeError(402, message, type_="card_error", code="card_declined")

    def _mark_paid(self, inv: dict[str, Any], *, out_of_band: bool) -> None:
        inv["status"] = "paid"
        inv["amount_paid"] = inv["amount_due"]
        inv["amount_remaining"] = 0
        inv["paid_out_of_band"] = out_of_band
        inv["next_payment_attempt"] = None
        inv["status_transitions"]["paid_at"] = self.now
        if not out_of_band:
            self.emit("invoice.payment_succeeded", inv)
        self.emit("invoice.paid", inv)

    def void(self, inv: dict[str, Any]) -> dict[str, Any]:
        if inv["status"] not in ("open", "uncollectible"):
            raise FakeError(400, f"You can only void open invoices, not {inv['status']}.")
        inv["status"] = "void"
        inv["status_transitions"]["voided_at"] = self.now
        inv["next_payment_attempt"] = None
        self.emit("invoice.voided", inv)
        return inv

    def mark_uncollectible(self, inv: dict[str, Any]) -> dict[str, Any]:
        if inv["status"] != "open":
            raise FakeError(400, f"You can only mark open invoices, not {inv['status']}.")
        inv["status"] = "uncollectible"
        inv["status_transitions"]["marked_uncollectible_at"] = self.now
        self.emit("invoice.marked_uncollectible", inv)
        return inv

    def update_invoice(self, inv: dict[str, Any], p: dict[str, Any]) -> dict[str, Any]:
        previous: dict[str, Any] = {}
        for key in ("description", "due_date", "metadata", "auto_advance"):
            if key not in p:
                continue
            value: Any = p[key]
            if key == "due_date":
                if inv["collection_method"] != "send_invoice":
                    raise FakeError(400, "due_date is only for send_invoice invoices.")
                value = _int(value)
            elif key == "auto_advance":
                value = _truthy(value)
            elif key == "metadata":
                value = {**inv["metadata"], **value}
            previous[key] = inv.get(key)
            inv[key] = value
        if inv["status"] != "draft":
            self.emit("invoice.updated", inv, previous)
        return inv

    def list_invoices(self, p: dict[str, Any], auth: str) -> dict[str, Any]:
        ordered = self._ordered()
        start = 0
        after = p.get("starting_after")
        if after:
            if after not in self.invoices:
                raise FakeError(400, f"No such invoice: '{after}'", code="resource_missing")
            start = self._position[after] + 1
        wanted = {k: p[k] for k in ("status", "customer", "collection_method") if p.get(k)}
        created = p.get("created")
        bounds: list[tuple[Any, int]] = []
        if isinstance(created, dict):
            bounds = [(test, int(created[op])) for op, test in (
                ("gte", int.__ge__), ("gt", int.__gt__), ("lte", int.__le__),
                ("lt", int.__lt__)) if op in created]
        elif created is not None:
            bounds = [(int.__eq__, int(created))]
        limit = min(max(_int(p.get("limit"), 10) or 10, 1), 100)
        chosen: list[dict[str, Any]] = []
        has_more = False
        for n in range(start, len(ordered)):  # walk from the cursor: cost follows the page
            inv = ordered[n]
            if any(inv[k] != v for k, v in wanted.items()) or not all(
                    test(int(inv["created"]), bound) for test, bound in bounds):
                continue
            if len(chosen) == limit:
                has_more = True
                break
            chosen.append(inv)
        page = [copy.deepcopy(i) for i in chosen]
        expand = p.get("expand") or []
        if "data.customer" in expand:
            cache: dict[str, dict[str, Any]] = {}
            for inv in page:
                cid = str(inv["customer"])
                if cid not in cache:
                    cache[cid] = self._customer(cid, auth)
                inv["customer"] = cache[cid]
        return {"object": "list", "url": "/v1/invoices", "has_more": has_more, "data": page}

    def list_events(self, p: dict[str, Any]) -> dict[str, Any]:
        events = sorted(self.events, key=lambda e: (e["created"], e["_seq"]), reverse=True)
        after = p.get("starting_after")
        if after:
            ids = [e["id"] for e in events]
            if after not in ids:
                raise FakeError(400, f"No such event: '{after}'", code="resource_missing")
            events = events[ids.index(after) + 1:]
        if p.get("type"):
            pattern = str(p["type"])
            if pattern.endswith("*"):
                events = [e for e in events if e["type"].startswith(pattern[:-1])]
            else:
                events = [e for e in events if e["type"] == pattern]
        if p.get("types"):
            if len(p["types"]) > 20:
                raise FakeError(400, "types accepts at most 20 event types.")
            events = [e for e in events if e["type"] in set(p["types"])]
        created = p.get("created")
        if isinstance(created, dict):
            for op, test in (("gte", int.__ge__), ("gt", int.__gt__), ("lte", int.__le__),
                             ("lt", int.__lt__)):
                if op in created:
                    bound = int(created[op])
                    events = [e for e in events if test(int(e["created"]), bound)]
        elif created is not None:
            events = [e for e in events if e["created"] == int(created)]
        limit = min(max(_int(p.get("limit"), 10) or 10, 1), 100)
        return {"object": "list", "url": "/v1/events", "has_more": len(events) > limit,
                "data": [self._public(e) for e in events[:limit]]}

    # -- dispatch of owned paths; None = forward to localstripe

    def handle(self, method: str, path: str, p: dict[str, Any], auth: str
               ) -> dict[str, Any] | None:
        parts = path.strip("/").split("/")
        with self.lock:
            if parts[:2] == ["v1", "invoiceitems"] and method == "POST" and len(parts) == 2:
                return self.create_item(p)
            if parts[:2] == ["v1", "events"]:
                if len(parts) == 2 and method == "GET":
                    return self.list_events(p)
                if len(parts) == 3 and method == "GET":
                    for e in self.events:
                        if e["id"] == parts[2]:
                            return self._public(e)
                    raise FakeError(404, f"No such event: '{parts[2]}'",
                                    code="resource_missing")
            if (parts[:2] == ["v1", "customers"] and len(parts) == 3 and method == "GET"
                    and parts[2] in self.customers):
                return copy.deepcopy(self.customers[parts[2]])
            if parts[:2] != ["v1", "invoices"]:
                return None
            if len(parts) == 2:
                if method == "GET":
                    return self.list_invoices(p, auth)
                if method == "POST":
                    return copy.deepcopy(self.create_invoice(p, auth))
            if len(parts) == 3 and parts[2] not in ("upcoming",):
                inv = self._invoice(parts[2])
                if method == "GET":
                    return copy.deepcopy(inv)
                if method == "POST":
                    return copy.deepcopy(self.update_invoice(inv, p))
            if len(parts) == 4 and method == "POST":
                inv = self._invoice(parts[2])
                action = parts[3]
                if action == "finalize":
                    return copy.deepcopy(self.finalize(inv))
                if action == "pay":
                    return copy.deepcopy(self.pay(inv, p, auth))
                if action == "void":
                    return copy.deepcopy(self.void(inv))
                if action == "mark_uncollectible":
                    return copy.deepcopy(self.mark_uncollectible(inv))
                if action == "send":
                    return copy.deepcopy(inv)
            raise FakeError(404, f"Unrecognized request URL ({method}: {path}).")

    def take_fault(self, method: str, path: str) -> Fault | None:
        with self.lock:
            for fault in self.faults:
                if fault.times > 0 and path.startswith(fault.path) and (
                        fault.method is None or fault.method == method):
                    if fault.skip > 0:
                        fault.skip -= 1
                        return None
                    fault.times -= 1
                    return fault
        return None


class _Handler(BaseHTTPRequestHandler):
    owner: StripeFake
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: with Nagle on, the body waits for the client's
    # delayed ACK (~40 ms a request on Linux loopback).
    disable_nagle_algorithm = True

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", (headers or {}).get("Content-Type",
                                                             "application/json"))
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Request-Id", f"req_{secrets.token_hex(6)}")
        for k, v in (headers or {}).items():
            if k != "Content-Type":
                self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _serve(self, method: str) -> None:
        fake = self.owner
        split = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        pairs = urllib.parse.parse_qsl(split.query, keep_blank_values=True)
        if raw and "json" not in (self.headers.get("Content-Type") or ""):
            pairs += urllib.parse.parse_qsl(raw.decode(), keep_blank_values=True)
        params = _nest(pairs)
        with fake.lock:
            fake.calls.append((method, split.path, params))
        auth = self.headers.get("Authorization") or ""
        key = auth.removeprefix("Bearer ").strip()
        if split.path.startswith("/v1/") and key not in fake.api_keys:
            shown = (key[:8] + "*" * 4) if key else "(none)"
            self._json(401, {"error": {"type": "invalid_request_error",
                                       "message": f"Invalid API Key provided: {shown}"}})
            return
        fault = fake.take_fault(method, split.path)
        if fault is not None and fault.kind == "429":
            headers = {"Retry-After": fault.retry_after} if fault.retry_after else {}
            self._json(429, {"error": {"type": "invalid_request_error", "code": "rate_limit",
                                       "message": "Too many requests hit the API too "
                                                  "quickly."}}, headers)
            return
        if fault is not None and fault.kind == "500":
            self._json(500, {"error": {"type": "api_error",
                                       "message": "Something went wrong on Stripe's end."}})
            return
        if fault is not None and fault.kind == "slow":
            time.sleep(fault.delay)
        try:
            result = fake.handle(method, split.path, params, auth)
        except FakeError as err:
            self._json(err.status, err.body())
            return
        if result is None:
            status, headers, body = fake.forward(
                method, self.path, raw or None,
                {"Authorization": auth,
                 "Content-Type": self.headers.get("Content-Type") or
                 "application/x-www-form-urlencoded"})
            if status == 200 and method == "POST" and split.path.startswith("/v1/customers"):
                obj = json.loads(body)
                if obj.get("object") == "customer":
                    segments = split.path.strip("/").split("/")
                    if len(segments) == 2:
                        fake.emit("customer.created", obj)
                    elif len(segments) == 3:
                        fake.emit("customer.updated", obj)
        else:
            status, headers, body = 200, {}, json.dumps(result).encode()
        if fault is not None and fault.kind == "drop":
            # Announce the whole body, send half of it, hang up: a connection lost mid-page.
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body[: len(body) // 2])
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(status, body, headers)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_DELETE(self) -> None:
        self._serve("DELETE")


@pytest.fixture
def stripe_fake(localstripe_url: str) -> Iterator[StripeFake]:
    with StripeFake(localstripe_url) as fake:
        yield fake


# --- webhooks -----------------------------------------------------------------------------

def sign(payload: str, secret: str, timestamp: int | None = None) -> str:
    """The `Stripe-Signature` header: `t=<ts>,v1=<hex HMAC-SHA256 of "<ts>.<payload>">`."""
    ts = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{ts}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={ts},v1={mac}"


def send_webhook(url: str, event: dict[str, Any], secret: str | None, *,
                 timestamp: int | None = None, signature: str | None = None,
                 timeout: float = 10) -> tuple[int, str]:
    """POST `event` to `url` as Stripe does; `secret=None` sends no signature header,
    `signature` sends that header as given (a forged one)."""
    payload = json.dumps(event)
    req = urllib.request.Request(url, data=payload.encode(), method="POST")
    req.add_header("Content-Type", "application/json; charset=utf-8")
    req.add_header("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)")
    if signature is not None:
        req.add_header("Stripe-Signature", signature)
    elif secret is not None:
        req.add_header("Stripe-Signature", sign(payload, secret, timestamp))
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def at(year: int, month: int, day: int, hour: int = 12, minute: int = 0) -> int:
    """A UTC moment as a Unix timestamp (for `fake.set_time` and due dates)."""
    return int(datetime(year, month, day, hour, minute, tzinfo=UTC).timestamp())
