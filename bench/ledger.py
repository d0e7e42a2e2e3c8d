"""A deterministic, realistic accounts-receivable ledger for the benchmark, in batches.

`generate(spec)` yields `LedgerBatch`es: a block of customers with their invoices (open
and paid) plus what the bot and its users would already have recorded before the plan
day (the escalation steps taken on earlier days, a few disputes, promises to pay and
customer snoozes). Nothing holds the whole ledger: 1M invoices stream through in batches
of about `batch_invoices` open invoices each.

Shape (per 10 open invoices: 1 customer, about 1 paid invoice):
- customers in 10 countries, 12 time zones, 7 currencies, 50 account executives, 3%
  strategic, 10% autopay, 0.5% do-not-contact; mostly unique company names;
- open invoices: about 80% current (due within the next 1-90 days, net 14/30/45/60/90
  terms), 20% overdue at every age up to 120 days past due (more young than old ones);
- overdue invoices of autopay customers carry the failed automatic charge (on the due date);
- every policy step scheduled before the plan day is in the escalation history (state
  "sent" for customer messages, with a touch, "done" for owner tasks and finance decisions).

Calibration: a "typical day" is one when about `due_share` (1%) of the open invoices have
a step due. Dates are drawn from the distribution above; an invoice whose schedule would
put a step on the plan day while the running share of such invoices is already at the
target is drawn again (a quota, so the share is close to the target at every size, and
the result is still deterministic for a seed).
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from dunning.aging import lane_for
from dunning.escalation import schedule
from dunning.model import (
    DISPUTE_REVIEW_PREFIX,
    Channel,
    CustomerContext,
    InvoiceRecord,
    InvoiceState,
    InvoiceStatus,
    Kind,
)
from dunning.money import quantize
from dunning.policy import DEFAULT_POLICY, Policy

# A Thursday, a business day in every country below. Steps count calendar days from a
# business day (+10, +30, +45 shift the weekday), so some steps can never fall on some
# weekdays (on a Tuesday no +10/+30/+45 step is ever due); on a Thursday every step can.
PLAN_DAY = date(2026, 11, 19)

# (country, time zone, currency, weight)
REGIONS: tuple[tuple[str, str, str, int], ...] = (
    ("US", "America/New_York", "USD", 20), ("US", "America/Chicago", "USD", 10),
    ("US", "America/Los_Angeles", "USD", 12), ("CA", "America/Toronto", "CAD", 6),
    ("GB", "Europe/London", "GBP", 12), ("DE", "Europe/Berlin", "EUR", 10),
    ("FR", "Europe/Paris", "EUR", 7), ("NL", "Europe/Amsterdam", "EUR", 5),
    ("ES", "Europe/Madrid", "EUR", 4), ("AU", "Australia/Sydney", "AUD", 6),
    ("JP", "Asia/Tokyo", "JPY", 4), ("SG", "Asia/Singapore", "SGD", 4),
)
_LEGAL = {"US": ("Inc", "LLC", "Corp"), "CA": ("Ltd", "Inc"), "GB": ("Ltd", "PLC"),
          "DE": ("GmbH", "AG"), "FR": ("SAS", "SA"), "NL": ("B.V.",), "ES": ("S.L.", "S.A."),
          "AU": ("Pty Ltd",), "JP": ("K.K.",), "SG": ("Pte Ltd",)}
_ADJ = ("Blue", "North", "Silver", "Bright", "Summit", "Harbor", "Cedar", "Granite", "Pioneer",
        "Atlas", "Beacon", "Copper", "Evergreen", "Falcon", "Golden", "Iron", "Juniper",
        "Lakeside", "Maple", "Orbit", "Prairie", "Quantum", "Redwood", "Sterling", "Tidal",
        "Aurora", "Birch", "Cobalt", "Delta", "Ember", "Fjord", "Glacier", "Highland", "Indigo",
        "Jade", "Keystone", "Lumen", "Meridian", "Nimbus", "Oak", "Pacific", "Quarry",
        "Riverside", "Sapphire", "Timber", "Union", "Vertex", "Willow", "Zenith", "Alpine",
        "Bayside", "Crescent", "Driftwood", "Eastgate", "Frontier", "Greystone", "Horizon",
        "Ironwood", "Kestrel", "Lighthouse", "Monarch", "Northstar", "Oakridge", "Pinnacle",
        "Radiant", "Silverline", "Trailhead", "Upland", "Vanguard", "Westwind", "Yellowstone",
        "Amber", "Brightwater", "Canyon", "Dune", "Elm", "Firefly", "Granite Peak", "Hollow",
        "Ivory", "Jasper", "Kingfisher", "Larch", "Mosaic", "Nova", "Onyx", "Prism", "Quill",
        "Rowan", "Sequoia", "Thistle", "Umber", "Velvet", "Wren", "Saffron", "Cypress")
_NOUN = ("Bridge", "Point", "Field", "Stone", "Ridge", "Valley", "Peak", "Harbor", "Grove",
         "Creek", "Gate", "Hill", "Lake", "Mill", "Park", "Rock", "Shore", "Wood", "Bay", "Crest",
         "Forge", "Haven", "Isle", "Landing", "Meadow", "Port", "Spring", "Tower", "View", "Way")
_INDUSTRY = ("Logistics", "Analytics", "Foods", "Robotics", "Health", "Energy", "Media", "Labs",
             "Capital", "Retail", "Systems", "Studios", "Works", "Networks", "Mobility",
             "Software", "Consulting", "Manufacturing", "Biotech", "Freight", "Hospitality",
             "Insurance", "Marine", "Pharma", "Security", "Solar", "Telecom", "Textiles",
             "Ventures", "Wellness", "Aerospace", "Architects", "Brewing", "Construction",
             "Dental", "Education", "Engineering", "Fitness", "Games", "Holdings")
_SURNAME = ("Smith", "Garcia", "Müller", "Dubois", "Tanaka", "Nguyen", "Okafor", "Rossi",
            "Jansen", "Kowalski", "Silva", "Hughes", "Fischer", "Martin", "Lopez", "Chen",
            "Patel", "Novak", "Schmidt", "Bernard", "Sato", "Walker", "Moreau", "de Vries",
            "Fernández", "O'Brien", "Lindqvist", "Kim", "Ahmed", "Weber", "Baker", "Clarke")
_FIRST_NAMES = ("dana", "sam", "mei", "luis", "ana", "lee", "priya", "jonas", "mia", "omar",
                "sofia", "tom", "yuki", "ines", "noah", "lena", "raj", "eva", "ali", "kate",
                "ben", "zoe", "max", "ivy", "leo")
_LAST_NAMES = ("reyes", "okafor", "tanaka", "garcia", "silva", "park", "shah", "weber",
               "nguyen", "haddad", "rossi", "berg", "ito", "costa", "fox", "klein", "rao")
N_OWNERS = 50
N_CSMS = 20
_TERMS = ((30, 60), (45, 12), (60, 12), (14, 8), (90, 8))  # (net days, weight)


@dataclass(frozen=True)
class LedgerSpec:
    open_invoices: int
    seed: int = 7
    plan_day: date = PLAN_DAY
    invoices_per_customer: int = 10  # 100k customers at 1M open invoices
    overdue_share: float = 0.20
    max_days_past_due: int = 120
    due_share: float = 0.01  # open invoices with a step due on the plan day (the quota)
    dispute_share: float = 0.005  # of overdue invoices (older than 10 days)
    promise_share: float = 0.01  # of overdue invoices (older than 10 days)
    snooze_share: float = 0.002  # of customers
    batch_invoices: int = 20_000
    policy: Policy = DEFAULT_POLICY

    @property
    def customers(self) -> int:
        return max(1, self.open_invoices // self.invoices_per_customer)


@dataclass
class LedgerBatch:
    """A block of customers with all their invoices and their history before the plan day."""

    customers: list[CustomerContext]
    invoices: list[InvoiceRecord]
    # Rows for store.tables Escalation / Touch / Dispute / Promise / Snooze (column values).
    escalations: list[dict[str, Any]] = field(default_factory=list)
    touches: list[dict[str, Any]] = field(default_factory=list)
    disputes: list[dict[str, Any]] = field(default_factory=list)
    promises: list[dict[str, Any]] = field(default_factory=list)
    snoozes: list[dict[str, Any]] = field(default_factory=list)
    # Open invoices whose next action date depends on that history (to recompute).
    refresh_ids: list[str] = field(default_factory=list)
    open_count: int = 0
    due_count: int = 0  # open invoices the generator placed with a step due on the plan day


def owner_emails() -> list[str]:
    rng = random.Random(1)
    out: list[str] = []
    while len(out) < N_OWNERS:
        email = f"{rng.choice(_FIRST_NAMES)}.{rng.choice(_LAST_NAMES)}@example.com"
        if email not in out:
            out.append(email)
    return out


class _Names:
    """Company names, mostly unique: word lists first, a number suffix only when needed."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.seen: set[str] = set()

    def draw(self, country: str) -> str:
        rng = self.rng
        legal = rng.choice(_LEGAL[country])
        name = ""
        for _ in range(8):
            shape = rng.random()
            if shape < 0.45:
                name = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_INDUSTRY)} {legal}"
            elif shape < 0.75:
                name = f"{rng.choice(_ADJ)} {rng.choice(_INDUSTRY)} {legal}"
            elif shape < 0.9:
                name = f"{rng.choice(_SURNAME)} {rng.choice(_INDUSTRY)} {legal}"
            else:
                name = f"{rng.choice(_SURNAME)} & {rng.choice(_SURNAME)} {legal}"
            if name not in self.seen:
                break
        else:
            base = name.removesuffix(f" {legal}")
            n = 2
            while f"{base} {n} {legal}" in self.seen:
                n += 1
            name = f"{base} {n} {legal}"
        self.seen.add(name)
        return name


def _slug(name: str) -> str:
    return "".join(ch for ch in name.split()[0].lower() if ch.isalnum()) or "co"


def _state(rec: InvoiceRecord, c: CustomerContext) -> InvoiceState:
    return InvoiceState(invoice_id=rec.invoice_id, number=rec.number, customer=c,
                        issue_date=rec.issue_date, due_date=rec.due_date, currency=rec.currency,
                        amount=rec.amount, payment_failed_on=rec.payment_failed_on)


class _Generator:
    def __init__(self, spec: LedgerSpec) -> None:
        self.spec = spec
        self.rng = random.Random(spec.seed)
        self.names = _Names(self.rng)
        self.owners = owner_emails()
        self.csms = [f"csm{i:02d}@example.com" for i in range(1, N_CSMS + 1)]
        self.region_weights = [r[3] for r in REGIONS]
        self.seq = 0
        self.open_made = 0
        self.due_made = 0
        self.terms = [t for t, _ in _TERMS]
        self.term_weights = [w for _, w in _TERMS]

    # -- customers ---------------------------------------------------------------------
    def customer(self, n: int) -> CustomerContext:
        rng = self.rng
        country, tz, currency, _ = rng.choices(REGIONS, self.region_weights)[0]
        name = self.names.draw(country)
        arr_units = int(rng.lognormvariate(10.3, 1.0))  # median ~30k, a long tail
        if currency == "JPY":
            arr_units *= 150
        arr = quantize(Decimal(max(arr_units, 1200)), currency)
        slug = _slug(name)
        return CustomerContext(
            customer_id=f"C-{n:06d}", name=name, country=country, timezone=tz,
            currency=currency, arr=arr, health=rng.choice((None, rng.randint(15, 98))),
            owner_email=self.owners[rng.randrange(len(self.owners))],
            csm_email=rng.choice((None, self.csms[rng.randrange(len(self.csms))])),
            ap_contact_name=None, ap_contact_email=f"ap@{slug}{n}.example",
            strategic=rng.random() < 0.03, autopay=rng.random() < 0.10,
            do_not_contact=rng.random() < 0.005,
        )

    # -- invoices ----------------------------------------------------------------------
    def _new_id(self) -> tuple[str, str]:
        self.seq += 1
        return f"INV-{self.seq:08d}", f"{self.spec.plan_day.year}-{self.seq:08d}"

    def _amount(self, c: CustomerContext) -> Decimal:
        monthly = (c.arr or Decimal(12000)) / 12
        return quantize(monthly * Decimal(self.rng.randint(40, 160)) / 100, c.currency)

    def _draw_dates(self, c: CustomerContext) -> tuple[date, date, date | None]:
        """(issue, due, payment_failed_on) of one open invoice."""
        rng, spec = self.rng, self.spec
        terms = rng.choices(self.terms, self.term_weights)[0]
        if rng.random() < spec.overdue_share:
            dpd = min(spec.max_days_past_due,
                      1 + int(rng.triangular(0, spec.max_days_past_due, 0)))
            due = spec.plan_day - timedelta(days=dpd)
            failed = due if c.autopay else None
        else:
            due = spec.plan_day + timedelta(days=rng.randint(1, terms))
            failed = None
        return due - timedelta(days=terms), due, failed

    def open_invoice(self, c: CustomerContext, quota: bool) -> tuple[InvoiceRecord, bool]:
        """An open invoice, and whether a policy step falls due on the plan day."""
        spec = self.spec
        rec: InvoiceRecord | None = None
        hit = False
        iid, number = self._new_id()
        amount = self._amount(c)
        for _ in range(30):
            issue, due, failed = self._draw_dates(c)
            rec = InvoiceRecord(
                invoice_id=iid, number=number, customer_id=c.customer_id, issue_date=issue,
                due_date=due, currency=c.currency, amount=amount,
                payment_link=f"https://pay.example.com/i/{iid}", payment_failed_on=failed)
            sched = schedule(_state(rec, c), spec.policy)
            hit = any(s.on == spec.plan_day for s in sched)
            if not hit or not quota or self.due_made + 1 <= spec.due_share * (self.open_made + 1):
                break
        assert rec is not None
        return rec, hit

    def paid_invoice(self, c: CustomerContext) -> InvoiceRecord:
        rng, spec = self.rng, self.spec
        iid, number = self._new_id()
        issue = spec.plan_day - timedelta(days=rng.randint(45, 330))
        due = issue + timedelta(days=30)
        late = rng.choices((0, 3, 9, 21, 40), (60, 15, 12, 9, 4))[0]
        paid = due + timedelta(days=late) if late else due - timedelta(days=rng.randint(0, 5))
        amount = self._amount(c)
        return InvoiceRecord(
            invoice_id=iid, number=number, customer_id=c.customer_id, issue_date=issue,
            due_date=due, currency=c.currency, amount=amount, amount_paid=amount,
            status=InvoiceStatus.PAID, paid_date=min(paid, spec.plan_day - timedelta(days=1)),
            payment_link=f"https://pay.example.com/i/{iid}")

    # -- history -----------------------------------------------------------------------
    def history(self, batch: LedgerBatch, rec: InvoiceRecord, c: CustomerContext,
                before: date) -> bool:
        """Escalations (and touches) of every step scheduled before `before`."""
        policy = self.spec.policy
        wrote = False
        for s in schedule(_state(rec, c), policy):
            if s.on >= before:
                break
            dpd = (s.on - rec.due_date).days
            self._escalation(batch, rec, c, s.step.key, s.step.kind, s.on, dpd,
                             s.step.tone.value if s.step.tone else None,
                             s.step.approval.value if s.step.approval else None,
                             s.step.channel)
            wrote = True
        return wrote

    def _escalation(self, batch: LedgerBatch, rec: InvoiceRecord, c: CustomerContext, key: str,
                    kind: Kind, on: date, dpd: int, tone: str | None, approval: str | None,
                    channel: Channel) -> None:
        at = datetime.combine(on, time(9, 0), UTC)
        sent = kind is Kind.CUSTOMER_MESSAGE
        batch.escalations.append({
            "invoice_id": rec.invoice_id, "step": key, "kind": kind.value, "tone": tone,
            "approval": approval, "channel": channel.value,
            "lane": lane_for(dpd, self.spec.policy.lanes).value, "days_past_due": dpd,
            "scheduled_on": on, "reasons": json.dumps([f"bench history: {key}"]),
            "owner": c.owner_email, "state": "sent" if sent else "done", "plan_date": on,
            "created_at": at, "handled_by": c.owner_email, "handled_at": at,
        })
        if sent:
            batch.touches.append({
                "invoice_id": rec.invoice_id, "customer_id": c.customer_id,
                "channel": channel.value, "step": key, "occurred_at": at,
                "summary": f"{key} email sent", "actor": "bench",
            })

    def batch(self, first: int, counts: list[int]) -> LedgerBatch:
        rng, spec = self.rng, self.spec
        batch = LedgerBatch([], [])
        day = spec.plan_day
        for offset, k in enumerate(counts):
            c = self.customer(first + offset)
            batch.customers.append(c)
            if rng.random() < 0.9:  # payment history: about one settled invoice per customer
                batch.invoices.append(self.paid_invoice(c))
            snoozed = k > 0 and rng.random() < spec.snooze_share
            if snoozed:
                batch.snoozes.append({
                    "scope": "customer", "target": c.customer_id,
                    "until": day + timedelta(days=rng.randint(7, 45)),
                    "reason": "quarter-end close: the AE asked to hold reminders",
                    "created_by": c.owner_email or "finance@example.com",
                    "created_at": datetime.combine(day - timedelta(days=2), time(15, 0), UTC),
                    "cancelled": False,
                })
            for _ in range(k):
                dpd_hold = rng.random()
                rec, hit = self.open_invoice(c, quota=True)
                batch.invoices.append(rec)
                self.open_made += 1
                batch.open_count += 1
                dpd = (day - rec.due_date).days
                event_day = day
                if dpd > 10 and dpd_hold < spec.dispute_share:
                    opened = day - timedelta(days=rng.randint(1, min(dpd - 1, 30)))
                    event_day = opened
                    batch.disputes.append({
                        "invoice_id": rec.invoice_id,
                        "reason": rng.choice(("pricing: billed at list price",
                                              "delivery: seats never provisioned",
                                              "duplicate: billed twice")),
                        "amount_minor": None, "currency": rec.currency, "note": "",
                        "status": "open", "opened_on": opened,
                        "created_by": c.owner_email or "finance@example.com",
                        "created_at": datetime.combine(opened, time(12, 0), UTC),
                    })
                    key = f"{DISPUTE_REVIEW_PREFIX}{opened.isoformat()}"
                    self._escalation(batch, rec, c, key, Kind.OWNER_TASK, opened,
                                     (opened - rec.due_date).days, None, None, Channel.SLACK)
                elif dpd > 10 and dpd_hold < spec.dispute_share + spec.promise_share:
                    logged = day - timedelta(days=rng.randint(1, 5))
                    event_day = logged
                    batch.promises.append({
                        "invoice_id": rec.invoice_id,
                        "promised_date": day + timedelta(days=rng.randint(1, 14)),
                        "amount_minor": None, "currency": rec.currency, "status": "open",
                        "note": "customer called", "created_by": c.owner_email or "finance",
                        "created_at": datetime.combine(logged, time(12, 0), UTC),
                    })
                elif hit:
                    self.due_made += 1
                    batch.due_count += 1
                wrote = self.history(batch, rec, c, event_day)
                if wrote or event_day != day or snoozed:
                    batch.refresh_ids.append(rec.invoice_id)
        return batch


def _open_counts(spec: LedgerSpec, rng: random.Random) -> list[int]:
    """Open invoices per customer: uneven (a few large accounts), exactly N in total."""
    weights = [rng.lognormvariate(0.0, 0.8) for _ in range(spec.customers)]
    total = sum(weights)
    counts: list[int] = []
    cum = 0.0
    prev = 0
    for w in weights:
        cum += w
        upto = round(cum * spec.open_invoices / total)
        counts.append(upto - prev)
        prev = upto
    counts[-1] += spec.open_invoices - prev
    return counts


def generate(spec: LedgerSpec) -> Iterator[LedgerBatch]:
    """The ledger in batches of whole customers, about `spec.batch_invoices` open each."""
    gen = _Generator(spec)
    counts = _open_counts(spec, random.Random(spec.seed + 1))
    start = 0
    while start < len(counts):
        end = start
        size = 0
        while end < len(counts) and (size < spec.batch_invoices or end == start):
            size += counts[end]
            end += 1
        yield gen.batch(start + 1, counts[start:end])
        start = end
