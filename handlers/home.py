"""App Home: the viewer's own queue and the recent activity on their cards."""

from __future__ import annotations

import logging
from typing import Any

from slack_bolt import Ack, App, BoltContext
from slack_sdk import WebClient

from blocks.home import build_home
from blocks.ids import ActionId
from blocks.modals import build_result_view
from connectors.errors import ConnectorError
from handlers.common import card_data, deps_of, escalation_id_from, person_of, render_card
from services.cards import load_card, open_cards_of, recent_activity
from services.common import ServiceError
from services.posting import owner_label
from store.engine import session_scope

log = logging.getLogger(__name__)
QUEUE = 40
RECENT = 50
ACTIVITY = 20


def handle_home_opened(event: dict[str, Any], client: WebClient,
                       context: BoltContext) -> None:
    if event.get("tab") not in (None, "home"):
        return
    deps = deps_of(context)
    user_id = str(event["user"])
    person = person_of(deps, user_id)
    email = (person.email or "").lower()
    with session_scope(deps.engine) as s:
        cards = open_cards_of(s, deps.policy, email, deps.today(), limit=QUEUE) if email else []
        events = recent_activity(s, email, cards=RECENT, limit=ACTIVITY) if email else []
    label = owner_label(deps.messenger, email or None)
    queue = [card_data(deps, c, label) for c in cards]
    activity = [(e.at.strftime("%Y-%m-%d %H:%M"),
                 f"card #{e.escalation_id}: {e.action} by {e.actor}") for e in events]
    view = build_home(viewer_label=f"<@{user_id}>", queue=queue, activity=activity,
                      today=deps.today())
    try:
        client.views_publish(user_id=user_id, view=view)
    except Exception:
        log.exception("App Home not published for %s", user_id)


def handle_open_card(ack: Ack, body: dict[str, Any], client: WebClient,
                     context: BoltContext) -> None:
    """"Open" on App Home: the card in a modal, with a link to where it was posted."""
    ack()
    deps = deps_of(context)
    eid = escalation_id_from(body["actions"][0].get("value"))
    try:
        if eid is None:
            raise ServiceError("this button does not name a card")
        with session_scope(deps.engine) as s:
            card = load_card(s, deps.policy, eid, deps.today())
    except ServiceError as exc:
        client.views_open(trigger_id=body["trigger_id"],
                          view=build_result_view("Card not found", str(exc)))
        return
    blocks, _ = render_card(deps, card)
    shown = [b for b in blocks if b.get("type") != "actions"]
    if card.channel and card.ts:
        try:
            link = client.chat_getPermalink(channel=card.channel, message_ts=card.ts)
            shown.append({"type": "context", "elements": [{
                "type": "mrkdwn", "text": f"<{link['permalink']}|Open the card to act on it>"}]})
        except Exception:
            log.warning("no permalink for card %s", eid)
    view = build_result_view("Escalation", card.invoice.customer.name)
    view["blocks"] = shown[:100]
    try:
        client.views_open(trigger_id=body["trigger_id"], view=view)
    except ConnectorError:
        log.exception("card modal not opened")


def register(app: App) -> None:
    app.event("app_home_opened")(handle_home_opened)
    app.action(ActionId.OPEN_CARD.value)(handle_open_card)
