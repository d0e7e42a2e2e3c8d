"""`/dunning status <customer>`: find the account (fuzzy), then summarise it.

Lookup order: exact id, exact name (case-insensitive, indexed), then a fuzzy match over
an in-memory name index that is rebuilt only when customers change (a version in `meta`),
so one lookup stays well under 50 ms at 100k customers.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from rapidfuzz import fuzz, process, utils
from sqlalchemy import select as sa_select
from sqlmodel import Session, select

from dunning.aging import days_past_due, lane_for
from dunning.calendar import local_date
from dunning.escalation import next_action_on
from dunning.model import InvoiceState, PaymentHistory, Tone
from dunning.policy import Policy
from dunning.risk import assess, tone_for
from services.common import NotFoundError
from services.importing import CUSTOMERS_VERSION_KEY
from store import tables as t
from store._sql import in_ids, table_of
from store.repository import customer_context, get_meta, load_states, payment_histories

MAX_QUERY = 200
SURE = 80.0  # a single fuzzy match at or above this score is taken as the customer
CLOSE = 8.0  # ... unless another name scores within this many points
SHOWN = 60.0  # candidates below this are not worth listing
MAX_CANDIDATES = 3000  # names scored in full per query (picked by the token index)


@dataclass(frozen=True)
class Candidate:
    customer_id: str
    name: str
    score: float


@dataclass(frozen=True)
class Match:
    customer_id: str | None  # the one customer meant, when there is one
    candidates: tuple[Candidate, ...] = ()  # several close matches, best first


@dataclass
class CustomerIndex:
    """Names of every customer, rebuilt when the customers' version in `meta` changes.

    Scoring every name with WRatio costs ~100 ms at 100k customers, so a token index picks
    candidates first: names sharing a word with the query, a word it starts (someone still
    typing), or a word within a typo of it. Only those are scored.
    """

    version: str | None = None
    ids: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    keys: list[str] = field(default_factory=list)
    postings: dict[str, list[int]] = field(default_factory=dict)
    vocabulary: list[str] = field(default_factory=list)  # sorted, for prefix ranges

    def refresh(self, session: Session) -> None:
        version = get_meta(session, CUSTOMERS_VERSION_KEY) or "0"
        if version == self.version and self.ids:
            return
        rows = session.exec(select(t.Customer.id, t.Customer.name)).all()
        self.ids = [r[0] for r in rows]
        self.names = [r[1] for r in rows]
        self.keys = [utils.default_process(n) for n in self.names]
        postings: dict[str, list[int]] = defaultdict(list)
        for i, key in enumerate(self.keys):
            for token in set(key.split()):
                postings[token].append(i)
        self.postings = dict(postings)
        self.vocabulary = sorted(postings)
        self.version = version

    def candidates(self, key: str, limit: int = MAX_CANDIDATES) -> list[int]:
        """Indexes of the names worth scoring, those matching most query words first."""
        groups: list[tuple[int, set[str]]] = []
        for token in set(key.split()):
            words = set(self._prefixed(token))
            if len(token) >= 3:
                words.update(w for w, _, _ in process.extract(
                    token, self.vocabulary, scorer=fuzz.ratio, limit=10, score_cutoff=75))
            groups.append((sum(len(self.postings[w]) for w in words), words))
        hits: dict[int, int] = defaultdict(int)
        # Rare words first; a very common one ("inc", "gmbh") only ranks names already found.
        for size, words in sorted(groups, key=lambda g: g[0]):
            boost_only = bool(hits) and size > len(self.ids) // 10
            for w in words:
                for i in self.postings[w]:
                    if not boost_only or i in hits:
                        hits[i] += 1
        return heapq.nlargest(limit, hits, key=hits.__getitem__)

    def _prefixed(self, token: str, most: int = 50) -> list[str]:
        start = bisect_left(self.vocabulary, token)
        out: list[str] = []
        for word in self.vocabulary[start:start + most]:
            if not word.startswith(token):
                break
            out.append(word)
        return out


def find_customer(session: Session, query: str, index: CustomerIndex | None = None) -> Match:
    q = " ".join(query.split())
    if not q:
        raise NotFoundError("give a customer name or id, e.g. `status acme`")
    if len(q) > MAX_QUERY:
        raise NotFoundError(f"that query is {len(q)} characters long; give a customer name or "
                            f"id (at most {MAX_QUERY})")
    if session.get(t.Customer, q) is not None:
        return Match(q)
    exact = session.exec(select(t.Customer.id).where(
        t.Customer.name_normalized == q.casefold()).limit(2)).all()
    if len(exact) == 1:
        return Match(exact[0])
    index = index or CustomerIndex()
    index.refresh(session)
    key = utils.default_process(q)
    if not key:
        raise NotFoundError(f"no customer matches {query!r}")
    pool = index.candidates(key)
    hits = process.extract(key, [index.keys[i] for i in pool], scorer=fuzz.WRatio,
                           processor=None, limit=6, score_cutoff=SHOWN)
    cands = tuple(Candidate(index.ids[pool[j]], index.names[pool[j]], round(score, 1))
                  for _, score, j in hits)
    if not cands:
        raise NotFoundError(f"no customer matches {query!r}; try part of the name or the id")
    best = cands[0]
    runner_up = cands[1].score if len(cands) > 1 else 0.0
    if best.score >= SURE and best.score - runner_up > CLOSE:
        return Match(best.customer_id)
    close = tuple(c for c in cands if c.score >= best.score - 15)
    return Match(None, close)


@dataclass(frozen=True)
class InvoiceLine:
    state: InvoiceState
    days_past_due: int
    lane: str
    next_action_on: date | None
    last_touch: dict[str, Any] | None


@dataclass(frozen=True)
class CustomerStatus:
    today: date
    customer: Any  # CustomerContext
    risk_score: int
    tone: str
    reasons: tuple[str, ...]
    sensitive_reasons: tuple[str, ...]
    totals: dict[str, Decimal]
    invoices: list[InvoiceLine]


def customer_status(session: Session, policy: Policy, customer_id: str,
                    today: date) -> CustomerStatus:
    row = session.get(t.Customer, customer_id)
    if row is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    ids = list(session.exec(select(t.Invoice.id).where(
        t.Invoice.customer_id == customer_id, t.Invoice.status == "open")))
    states = load_states(session, ids)
    touches = _last_touches(session, ids)
    lines: list[InvoiceLine] = []
    totals: dict[str, Decimal] = defaultdict(Decimal)
    worst = 0
    for s in sorted(states.values(), key=lambda s: (s.due_date, s.invoice_id)):
        dpd = days_past_due(s.due_date, today)
        worst = max(worst, dpd)
        totals[s.currency] += s.amount_due
        lines.append(InvoiceLine(s, dpd, lane_for(dpd, policy.lanes).value,
                                 next_action_on(s, policy), touches.get(s.invoice_id)))
    context = customer_context(row)
    if states:
        history = next(iter(states.values())).history
    else:
        history = payment_histories(session, [customer_id]).get(customer_id, PaymentHistory())
    assessment = assess(context, history,
                        amount_due=sum(totals.values(), Decimal("0")), days_past_due=worst,
                        policy=policy)
    return CustomerStatus(
        today=today, customer=context, risk_score=assessment.score,
        tone=tone_for(Tone.FRIENDLY, assessment).value, reasons=assessment.reasons,
        sensitive_reasons=assessment.sensitivity_reasons, totals=dict(totals), invoices=lines,
    )


def customer_status_now(session: Session, policy: Policy, customer_id: str, *,
                        now: datetime) -> CustomerStatus:
    """The status as of the customer's own date at `now` (its time zone)."""
    row = session.get(t.Customer, customer_id)
    if row is None:
        raise NotFoundError(f"no customer {customer_id!r}")
    return customer_status(session, policy, customer_id, local_date(now, row.timezone))


def status_for_query(session: Session, policy: Policy, query: str,
                     index: CustomerIndex | None = None, *, now: datetime
                     ) -> tuple[Match, CustomerStatus | None]:
    """`/dunning status <query>` in one read: the match and, when it names one customer,
    that customer's status as of its own date."""
    match = find_customer(session, query, index)
    if match.customer_id is None:
        return match, None
    return match, customer_status_now(session, policy, match.customer_id, now=now)


_TOUCH = table_of(t.Touch)
_ESCALATION = table_of(t.Escalation)
_TOUCHES = sa_select(_TOUCH.c.invoice_id, _TOUCH.c.occurred_at, _TOUCH.c.channel, _TOUCH.c.step,
                     _TOUCH.c.summary).where(in_ids(_TOUCH.c.invoice_id, "ids")).order_by(
    _TOUCH.c.occurred_at)
_ESCALATIONS = sa_select(_ESCALATION.c.invoice_id, _ESCALATION.c.created_at,
                         _ESCALATION.c.step, _ESCALATION.c.state).where(
    in_ids(_ESCALATION.c.invoice_id, "ids")).order_by(_ESCALATION.c.created_at)


def _last_touches(session: Session, invoice_ids: list[str]) -> dict[str, dict[str, Any]]:
    """The latest touch (a sent message or call) or escalation per invoice."""
    out: dict[str, dict[str, Any]] = {}
    if not invoice_ids:
        return out
    conn = session.connection()
    for row in conn.execute(_TOUCHES, {"ids": invoice_ids}):
        out[row.invoice_id] = {"at": row.occurred_at.isoformat(), "channel": row.channel,
                               "step": row.step, "summary": row.summary}
    for esc in conn.execute(_ESCALATIONS, {"ids": invoice_ids}):
        prev = out.get(esc.invoice_id)
        if prev is None or prev["at"] < esc.created_at.isoformat():
            out[esc.invoice_id] = {"at": esc.created_at.isoformat(), "channel": "escalation",
                                   "step": esc.step, "summary": f"{esc.step} ({esc.state})"}
    return out


def status_json(st: CustomerStatus) -> dict[str, Any]:
    """The JSON contract of `dunning status` (issue 2)."""
    c = st.customer
    return {
        "date": st.today.isoformat(),
        "customer": {
            "id": c.customer_id, "name": c.name, "owner": c.owner_email,
            "arr": str(c.arr) if c.arr is not None else None,
            "risk_score": st.risk_score, "tone": st.tone, "reasons": list(st.reasons),
            "sensitive": list(st.sensitive_reasons),
        },
        "open_totals": {cur: str(v) for cur, v in sorted(st.totals.items())},
        "invoices": [{
            "id": line.state.invoice_id,
            "number": line.state.number,
            "due_date": line.state.due_date.isoformat(),
            "days_past_due": line.days_past_due,
            "lane": line.lane,
            "amount_due": str(line.state.amount_due),
            "currency": line.state.currency,
            "last_touch": line.last_touch,
            "promise": _promise_json(line.state),
            "dispute": _dispute_json(line.state),
            "snoozed_until": (line.state.snoozed_until.isoformat()
                              if line.state.snoozed_until and line.state.snoozed_until > st.today
                              else None),
            "next_action_on": line.next_action_on.isoformat() if line.next_action_on else None,
        } for line in st.invoices],
    }


def _promise_json(s: InvoiceState) -> dict[str, Any] | None:
    p = s.promise
    if p is None:
        return None
    return {"date": p.promised_date.isoformat(), "status": p.status.value,
            "amount": str(p.amount) if p.amount is not None else None}


def _dispute_json(s: InvoiceState) -> dict[str, Any] | None:
    d = s.dispute
    if d is None:
        return None
    return {"reason": d.reason, "opened_on": d.opened_on.isoformat() if d.opened_on else None,
            "amount": str(d.amount) if d.amount is not None else None}
