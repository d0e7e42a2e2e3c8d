"""What every use case shares: the clock-free context, audit writes, next-action refresh."""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import bindparam, update
from sqlmodel import Session, col, select

from dunning.calendar import local_date
from dunning.escalation import next_action_on
from dunning.policy import Policy
from store import tables as t
from store.audit import EventIn, defer_event
from store.repository import get_meta, load_states, set_meta

CHUNK = 500


class ServiceError(Exception):
    """A use case refused: the message is for the person who asked, as is."""


class NotFoundError(ServiceError):
    """An invoice or customer that the ledger does not have."""


@dataclass(frozen=True)
class Actor:
    """Who acts: a person (email or Slack id) or the bot itself ("scheduler", "cli")."""

    id: str

    def __str__(self) -> str:
        return self.id


def chunks(items: Iterable[str], size: int = CHUNK) -> Iterable[list[str]]:
    batch: list[str] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


def audit(session: Session, *, actor: Actor, action: str, entity: str, entity_id: str,
          at: datetime, before: dict[str, Any] | None = None,
          after: dict[str, Any] | None = None) -> None:
    """Record the change in the audit log; the event is chained when the session commits
    (store.audit.defer_event), so the log's lock is held only for the insert."""
    defer_event(session, EventIn(actor=actor.id, action=action, entity_type=entity,
                                 entity_id=entity_id, before=before, after=after, at=at))


def refresh_next_actions(session: Session, policy: Policy,
                         invoice_ids: Collection[str]) -> dict[str, date | None]:
    """Recompute and store next_action_on for these invoices; return the new dates."""
    out: dict[str, date | None] = {}
    for batch in chunks(invoice_ids):
        states = load_states(session, batch)
        values = []
        for iid in batch:
            state = states.get(iid)
            nxt = next_action_on(state, policy) if state is not None else None
            out[iid] = nxt
            values.append({"_id": iid, "_next": nxt})
        if values:
            stmt = (update(t.Invoice).where(col(t.Invoice.id) == bindparam("_id"))
                    .values(next_action_on=bindparam("_next")))
            session.connection().execute(stmt, values)
    return out


POLICY_KEY = "policy_fingerprint"


def ensure_policy_current(session: Session, policy: Policy) -> int:
    """After a policy change, recompute every open invoice's next action date once.

    Stored dates depend on the policy; the fingerprint in `meta` says which policy made
    them. Returns how many invoices were recomputed (0 when the policy is unchanged).
    """
    fingerprint = policy.fingerprint()
    if get_meta(session, POLICY_KEY) == fingerprint:
        return 0
    ids = list(session.exec(select(t.Invoice.id).where(t.Invoice.status == "open")))
    refresh_next_actions(session, policy, ids)
    set_meta(session, POLICY_KEY, fingerprint)
    return len(ids)


def customer_today(timezone: str, now: datetime) -> date:
    """The customer's own calendar date at `now` (an aware datetime from the shell)."""
    return local_date(now, timezone)
