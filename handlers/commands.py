"""`/dunning status <customer> | mine | digest | help`, answered ephemerally within the ack.

The answer rides on the ack itself (Slack shows it at once), so it must be ready in well
under Slack's 3 seconds: status reads one customer's invoices through indexes and the
fuzzy lookup uses the in-memory customer index.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext, Respond

from blocks import status as status_blocks
from blocks.ids import ActionId
from bot.deps import Deps
from dunning.model import Lane, Tone
from handlers.common import card_data, deps_of, person_of
from handlers.jobs import post_digest
from services.cards import open_cards_of
from services.common import ServiceError
from services.posting import owner_label
from services.status import CustomerStatus, customer_status_now, status_for_query
from store.engine import session_scope

log = logging.getLogger(__name__)
MAX_TEXT = 300
MAX_MINE = 20


def status_view(st: CustomerStatus) -> status_blocks.StatusView:
    return status_blocks.StatusView(
        customer=st.customer, risk_score=st.risk_score, tone=Tone(st.tone), reasons=st.reasons,
        sensitive_reasons=st.sensitive_reasons, totals=st.totals, today=st.today,
        lines=tuple(status_blocks.StatusLine(
            invoice=line.state, days_past_due=line.days_past_due, lane=Lane(line.lane),
            next_action_on=line.next_action_on, last_touch=None) for line in st.invoices),
    )


def _view(st: CustomerStatus) -> tuple[list[dict[str, Any]], str]:
    view = status_view(st)
    return status_blocks.build_status(view), status_blocks.status_text(view)


def answer_status(deps: Deps, customer_id: str) -> tuple[list[dict[str, Any]], str]:
    with session_scope(deps.engine) as s:
        return _view(customer_status_now(s, deps.policy, customer_id, now=deps.now()))


def _status(deps: Deps, query: str) -> tuple[list[dict[str, Any]], str]:
    # One read transaction for the lookup and the answer.
    with session_scope(deps.engine) as s:
        match, st = status_for_query(s, deps.policy, query, deps.customer_index,
                                     now=deps.now())
    if st is not None:
        return _view(st)
    candidates = [(c.customer_id, c.name, c.score) for c in match.candidates]
    return status_blocks.build_choices(query, candidates), \
        f"Several customers match “{query}”: pick one."


def _mine(deps: Deps, user_id: str) -> tuple[list[dict[str, Any]], str]:
    person = person_of(deps, user_id)
    if person.email is None:
        return status_blocks.build_usage("Your Slack profile has no email, so your cards "
                                         "cannot be found."), "No email on your profile"
    with session_scope(deps.engine) as s:
        cards = open_cards_of(s, deps.policy, person.email, deps.today(), limit=MAX_MINE)
    label = owner_label(deps.messenger, person.email)
    data = [card_data(deps, c, label) for c in cards]
    return status_blocks.build_mine(data, deps.today()), f"{len(data)} open card(s)"


def _digest(deps: Deps, user_id: str) -> tuple[list[dict[str, Any]], str]:
    """Managers and finance get today's digest now, in their DM."""
    person = person_of(deps, user_id)
    if not (person.is_in(deps.roles.managers) or person.is_in(deps.roles.finance)):
        text = "The digest is for managers and finance (DUNNING_MANAGER_USERS)."
        return status_blocks.build_usage(text), text
    channel = deps.messenger.dm_channel(user_id)
    post_digest(deps, channel)
    text = "Today's digest is in your DMs."
    return [{"type": "section", "text": {"type": "mrkdwn", "text": text}}], text


def handle_dunning(ack: Ack, command: dict[str, Any], context: BoltContext) -> None:
    deps = deps_of(context)
    text = " ".join((command.get("text") or "").split())
    verb, _, rest = text.partition(" ")
    verb = verb.lower()
    try:
        if len(text) > MAX_TEXT:
            blocks = status_blocks.build_usage(f"That is {len(text)} characters; a customer "
                                               "name or id is enough.")
            reply = "Usage: /dunning status <customer>"
        elif verb == "status" and rest:
            blocks, reply = _status(deps, rest)
        elif verb == "mine" and not rest:
            blocks, reply = _mine(deps, command["user_id"])
        elif verb == "digest" and not rest:
            blocks, reply = _digest(deps, command["user_id"])
        elif verb in ("", "help"):
            blocks, reply = status_blocks.build_usage(None), "Usage: /dunning status <customer>"
        elif verb == "status":
            blocks = status_blocks.build_usage("Which customer? e.g. `/dunning status acme`")
            reply = "Usage: /dunning status <customer>"
        else:
            blocks = status_blocks.build_usage(f"I don't know “{verb[:40]}”.")
            reply = "Usage: /dunning status <customer>"
    except ServiceError as exc:
        blocks, reply = status_blocks.build_usage(str(exc)), str(exc)
    ack(response_type="ephemeral", text=reply, blocks=blocks)


def handle_status_pick(ack: Ack, body: dict[str, Any], context: BoltContext,
                       respond: Respond) -> None:
    """A customer picked from a "several match" answer: replace it with the status."""
    ack()
    deps = deps_of(context)
    customer_id = str(body["actions"][0].get("value") or "")
    try:
        blocks, text = answer_status(deps, customer_id)
    except ServiceError as exc:
        respond(text=str(exc), response_type="ephemeral", replace_original=True)
        return
    respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=True)


def register(app: App) -> None:
    app.command("/dunning")(handle_dunning)
    app.action(ActionId.STATUS_PICK.value)(handle_status_pick)
