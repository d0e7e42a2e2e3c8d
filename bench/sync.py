"""Sync benchmark: API calls and time of a full backfill and of an incremental sync.

    python -m bench.sync [--invoices 100000] [--rates 0.001,0.01,0.05] [--sizes 10000,50000]
                         [--systems stripe,quickbooks] [--backend sqlite|postgresql]
                         [--out FILE] [--seed 7]

For each billing system and ledger size: a fresh database, a vendor fake filled directly
(N open invoices of N/10 customers; through the vendor API 100k would take hours), a full
backfill (`sync_billing(full=True)`), then incremental syncs after a share of the invoices
changed: a quarter paid, a quarter voided, a quarter with a new amount, a quarter new
invoices. `--sizes` get one incremental at 1%; `--invoices` (N) gets one per `--rates`,
applied one after another on the same ledger (each run reads only the changes since the
previous one). An incremental with no change is measured first, as the floor.

What should hold, and what the table shows: the backfill's calls grow with N (one page per
100 Stripe invoices, 1,000 QuickBooks ones), an incremental run's calls with the number of
changes only. Time includes the fakes' own work (they run in this process, on loopback);
the QuickBooks fake scans its whole company for CDC and queries, which the real service
indexes, so its incremental time keeps a small part that grows with N.

The database: SQLite in a temporary folder, or PostgreSQL database `dunning_bench` on the
server of BENCH_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test), dropped
and created for each case. JSON per case on stdout as it finishes, then a table on stderr
and, with `--out`, all cases as JSON. See bench/README.md ("Sync").
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any, Protocol

from sqlalchemy import Engine, func
from sqlmodel import select

from bench.run import _admin_execute, log, postgres_admin_url
from connectors.base import BillingSource
from connectors.quickbooks_billing import MemoryTokenStore, QuickBooksBilling
from connectors.stripe_billing import StripeBilling
from dunning.policy import DEFAULT_POLICY
from services.sync import SyncReport, sync_billing
from store import tables as t
from store.engine import make_engine, migrate, session_scope
from tests.fakes.quickbooks_fake import QuickBooksFake
from tests.fakes.stripe_fake import API_KEY, StripeFake

START = datetime(2026, 11, 2, 15, tzinfo=UTC)
PG_DATABASE = "dunning_bench"
COUNTRIES = (("US", "USA", "America/New_York", "usd"), ("GB", "United Kingdom",
             "Europe/London", "gbp"), ("DE", "Germany", "Europe/Berlin", "eur"),
             ("AU", "Australia", "Australia/Sydney", "aud"))
KINDS = ("paid", "voided", "amount", "new")


class Vendor(Protocol):
    """A filled fake that can change some invoices and count the calls it served."""

    system: str
    open_ids: list[str]

    def source(self) -> BillingSource: ...

    def served(self) -> int: ...

    def change(self, kind: str, rng: random.Random) -> None: ...

    def advance(self, seconds: int) -> None: ...

    def now(self) -> datetime: ...


@dataclass
class StripeVendor:
    fake: StripeFake
    open_ids: list[str]
    customers: list[dict[str, Any]]
    system: str = "stripe"

    @staticmethod
    def fill(fake: StripeFake, n: int, rng: random.Random) -> StripeVendor:
        customers = []
        for i in range(max(1, n // 10)):
            code, _, tz, cur = COUNTRIES[i % len(COUNTRIES)]
            customers.append(fake.add_customer(name=f"Customer {i} Ltd",
                                               email=f"ap@customer{i}.example",
                                               country=code, timezone=tz, currency=cur))
        ids = []
        for _ in range(n):
            cust = rng.choice(customers)
            due = fake.now + rng.randint(-60, 60) * 86400
            ids.append(fake.add_open_invoice(cust, rng.randint(1_000, 5_000_000),
                                             due_date=due)["id"])
        return StripeVendor(fake, ids, customers)

    def source(self) -> BillingSource:
        return StripeBilling(API_KEY, self.fake.base_url, "America/New_York", "US",
                             page_size=100, clock=lambda: self.fake.now)

    def served(self) -> int:
        return self.fake.api_calls()

    def _take(self, rng: random.Random) -> dict[str, Any]:
        n = rng.randrange(len(self.open_ids))
        self.open_ids[n], self.open_ids[-1] = self.open_ids[-1], self.open_ids[n]
        return self.fake.invoices[self.open_ids.pop()]

    def change(self, kind: str, rng: random.Random) -> None:
        if kind == "paid":
            self.fake.mark_paid(self._take(rng))
        elif kind == "voided":
            self.fake.void(self._take(rng))
        elif kind == "amount":
            inv = self._take(rng)
            self.fake.change_amount(inv, int(inv["amount_due"]) + 100)
            self.open_ids.append(inv["id"])
        else:
            inv = self.fake.add_open_invoice(rng.choice(self.customers), 12_345,
                                             due_date=self.fake.now + 30 * 86400, event=True)
            self.open_ids.append(inv["id"])

    def advance(self, seconds: int) -> None:
        self.fake.advance(seconds)

    def now(self) -> datetime:
        return datetime.fromtimestamp(self.fake.now, UTC)


@dataclass
class QuickBooksVendor:
    fake: QuickBooksFake
    open_ids: list[str]
    customers: list[dict[str, Any]]
    system: str = "quickbooks"
    # One token store per company, as the database row is: the refresh token rotates.
    tokens: MemoryTokenStore = field(default_factory=MemoryTokenStore)

    @staticmethod
    def fill(fake: QuickBooksFake, n: int, rng: random.Random) -> QuickBooksVendor:
        customers = []
        for i in range(max(1, n // 10)):
            _, country, _, cur = COUNTRIES[i % len(COUNTRIES)]
            customers.append(fake.add_customer(f"Customer {i} Ltd",
                                               email=f"ap@customer{i}.example",
                                               country=country, currency=cur.upper()))
        today = fake.now.date()
        ids = []
        for _ in range(n):
            issued = today - timedelta(days=rng.randint(0, 90))
            inv = fake.add_invoice(rng.choice(customers),
                                   Decimal(rng.randint(1_000, 5_000_000)) / 100,
                                   txn_date=issued, due_date=issued + timedelta(days=30))
            ids.append(str(inv["Id"]))
        return QuickBooksVendor(fake, ids, customers)

    def source(self) -> BillingSource:
        return QuickBooksBilling(
            client_id=self.fake.client_id, client_secret=self.fake.client_secret,
            realm_id=self.fake.realm_id, refresh_token="seed-refresh-token",
            token_store=self.tokens, api_url=self.fake.api_url,
            token_url=self.fake.token_url, company_timezone="America/New_York",
            clock=lambda: self.fake.now)

    def served(self) -> int:
        return self.fake.count()

    def _take(self, rng: random.Random) -> str:
        n = rng.randrange(len(self.open_ids))
        self.open_ids[n], self.open_ids[-1] = self.open_ids[-1], self.open_ids[n]
        return self.open_ids.pop()

    def change(self, kind: str, rng: random.Random) -> None:
        if kind == "paid":
            self.fake.pay(self._take(rng))
        elif kind == "voided":
            self.fake.void(self._take(rng))
        elif kind == "amount":
            iid = self._take(rng)
            total = self.fake.invoices[iid]["TotalAmt"] + Decimal("1.00")
            self.fake.update_invoice(iid, TotalAmt=total, Balance=total)
            self.open_ids.append(iid)
        else:
            inv = self.fake.add_invoice(rng.choice(self.customers), "123.45",
                                        txn_date=self.fake.now.date())
            self.open_ids.append(str(inv["Id"]))

    def advance(self, seconds: int) -> None:
        self.fake.now += timedelta(seconds=seconds)

    def now(self) -> datetime:
        return self.fake.now


@contextmanager
def database(backend: str) -> Iterator[Engine]:
    """A fresh, migrated database for one case; removed afterwards."""
    if backend == "sqlite":
        folder = tempfile.mkdtemp(prefix="dunning-sync-bench-")
        engine = make_engine(f"sqlite:///{folder}/sync.db")
        try:
            migrate(engine)
            yield engine
        finally:
            engine.dispose()
            shutil.rmtree(folder, ignore_errors=True)
        return
    admin = postgres_admin_url()
    _admin_execute(admin, f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
    _admin_execute(admin, f'CREATE DATABASE "{PG_DATABASE}"')
    engine = make_engine(admin.set(database=PG_DATABASE).render_as_string(hide_password=False))
    try:
        migrate(engine)
        yield engine
    finally:
        engine.dispose()
        _admin_execute(admin, f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')


@contextmanager
def vendor(system: str, n: int, seed: int) -> Iterator[Vendor]:
    rng = random.Random(seed)
    # The ledger is written a day before the backfill starts, as a real one would be: a
    # backfill's hand-over (CDC from its start) must not see the whole ledger as changed.
    before = START - timedelta(days=1)
    if system == "stripe":
        # Every path the sync uses is served by the fake itself: localstripe is never asked.
        with StripeFake("http://127.0.0.1:9", now=int(before.timestamp())) as sfake:
            filled: Vendor = StripeVendor.fill(sfake, n, rng)
            sfake.set_time(START)
            yield filled
        return
    with QuickBooksFake(now=before) as qfake:
        filled = QuickBooksVendor.fill(qfake, n, rng)
        qfake.now = START
        yield filled


def measured(engine: Engine, v: Vendor, *, full: bool) -> dict[str, Any]:
    before = v.served()
    started = time.perf_counter()
    report: SyncReport = sync_billing(engine, v.source(), policy=DEFAULT_POLICY, now=v.now(),
                                      full=full)
    seconds = time.perf_counter() - started
    return {"seconds": round(seconds, 3), "api_calls": report.api_calls,
            "served_calls": v.served() - before, "pages": report.pages,
            "invoices_seen": report.invoices_seen, "totals": report.totals}


def open_in_ledger(engine: Engine) -> int:
    with session_scope(engine) as s:
        return int(s.exec(select(func.count()).select_from(t.Invoice).where(
            t.Invoice.status == "open")).one())


def run_case(system: str, backend: str, n: int, rates: Sequence[float], seed: int,
             emit: Callable[[dict[str, Any]], None]) -> None:
    with database(backend) as engine, vendor(system, n, seed) as v:
        case = {"system": system, "backend": backend, "invoices": n}
        log(f"{system}/{backend}/{n}: full backfill")
        full = measured(engine, v, full=True)
        emit({**case, "run": "full", "changes": 0, "rate": None, **full})
        rng = random.Random(seed + 1)
        for rate in (0.0, *rates):
            changes = round(n * rate)
            v.advance(3600)
            for k in range(changes):
                v.change(KINDS[k % len(KINDS)], rng)
            v.advance(60)
            log(f"{system}/{backend}/{n}: incremental, {changes} changes")
            inc = measured(engine, v, full=False)
            if rate == rates[-1]:
                inc["open_in_ledger"] = open_in_ledger(engine)
                inc["open_in_vendor"] = len(v.open_ids)
            emit({**case, "run": "incremental", "changes": changes, "rate": rate, **inc})


def table(rows: list[dict[str, Any]]) -> str:
    head = (f"{'system':<10} {'backend':<10} {'N':>7} {'run':<11} {'changes':>7} "
            f"{'calls':>6} {'pages':>5} {'seconds':>8} {'ms/change':>9}")
    lines = [head, "-" * len(head)]
    for r in rows:
        per = (f"{1000 * r['seconds'] / r['changes']:.1f}"
               if r["run"] == "incremental" and r["changes"] else "")
        lines.append(f"{r['system']:<10} {r['backend']:<10} {r['invoices']:>7} {r['run']:<11} "
                     f"{r['changes']:>7} {r['api_calls']:>6} {r['pages']:>5} "
                     f"{r['seconds']:>8.2f} {per:>9}")
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m bench.sync", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--invoices", type=int, default=100_000,
                   help="ledger size for the change-rate series (default 100000)")
    p.add_argument("--rates", default="0.001,0.01,0.05",
                   help="changed shares at --invoices, run one after another")
    p.add_argument("--sizes", default=None,
                   help="more ledger sizes, each with one incremental at 1%% "
                        "(default: N/10,N/2)")
    p.add_argument("--systems", default="stripe,quickbooks")
    p.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--out", default=None, help="write all cases as JSON to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    n = args.invoices
    sizes = ([int(x) for x in args.sizes.split(",") if x] if args.sizes is not None
             else [n // 10, n // 2])
    rates = [float(x) for x in args.rates.split(",") if x]
    rows: list[dict[str, Any]] = []

    def emit(row: dict[str, Any]) -> None:
        rows.append(row)
        print(json.dumps(row), flush=True)
        if args.out:
            with open(args.out, "w") as f:
                json.dump(rows, f, indent=1)

    for system in [s for s in args.systems.split(",") if s]:
        for size in sorted({s for s in sizes if 0 < s < n}):
            run_case(system, args.backend, size, [0.01], args.seed, emit)
        run_case(system, args.backend, n, rates, args.seed, emit)
    print(table(rows), file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

