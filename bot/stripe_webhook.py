"""POST /stripe/webhook: Stripe's signed events, applied once, cards updated in place.

The signature (`Stripe-Signature`, HMAC-SHA256 with STRIPE_WEBHOOK_SECRET, 300 s
tolerance) is checked before anything is read: a missing, forged or stale one gets 400
with the reason and changes nothing. A verified event is applied in one transaction
(services/billing_events.py); the escalations it closed get their Slack cards updated
before the answer. Status codes tell Stripe what to do: 200 = done (also for a duplicate
or an event dunning ignores), 503 = the database is down, retry later.

A Slack failure never fails the webhook: the payment is recorded, the failure logged, and
the card left for the card repost job.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio.to_thread
import stripe
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from bot.deps import Deps
from handlers.common import update_card
from services.billing_events import EventResult, apply_stripe_event
from services.cards import load_card
from services.common import Actor
from store.engine import session_scope

log = logging.getLogger(__name__)
PATH = "/stripe/webhook"
TOLERANCE_SECONDS = 300
MAX_BODY = 1_000_000  # Stripe events are far smaller
ACTOR = Actor("stripe-webhook")


def _refusal(reason: str) -> Response:
    return JSONResponse({"error": "signature verification failed", "reason": reason},
                        status_code=400)


def stripe_webhook(deps: Deps, secret: str, *, tolerance: int = TOLERANCE_SECONDS
                   ) -> Callable[[Request], Awaitable[Response]]:
    def apply(event: dict[str, Any]) -> EventResult:
        with session_scope(deps.engine) as s:
            return apply_stripe_event(
                s, event, policy=deps.policy, actor=ACTOR, now=deps.now(),
                company_timezone=deps.settings.dunning_timezone,
                company_country=deps.settings.dunning_country)

    def update_cards(escalation_ids: tuple[int, ...]) -> None:
        for escalation_id in escalation_ids:
            try:
                with session_scope(deps.engine) as s:
                    card = load_card(s, deps.policy, escalation_id, deps.today())
                update_card(deps, card)  # logs a Slack failure itself
            except Exception:  # the payment is stored; the repost job retries the card
                log.exception("card of escalation %s not updated after a Stripe event",
                              escalation_id)

    async def endpoint(request: Request) -> Response:
        body = await request.body()
        if len(body) > MAX_BODY:
            return JSONResponse({"error": "payload too large"}, status_code=413)
        header = request.headers.get("stripe-signature")
        if not header:
            return _refusal("no Stripe-Signature header")
        try:
            event = stripe.Webhook.construct_event(body, header, secret, tolerance=tolerance)
        except stripe.SignatureVerificationError as exc:
            return _refusal(exc.user_message or "the signature does not match")
        except ValueError:
            return JSONResponse({"error": "the body is not a JSON Stripe event"},
                                status_code=400)
        data: dict[str, Any] = event.to_dict()
        if not data.get("id") or not data.get("type"):
            return JSONResponse({"error": "the body is not a Stripe event"}, status_code=400)
        try:
            result = await anyio.to_thread.run_sync(apply, data)
        except IntegrityError:
            # The same event delivered twice at once: the other delivery applied it.
            return JSONResponse({"received": True, "result": "duplicate"})
        except SQLAlchemyError as exc:
            log.warning("stripe event %s not applied, database unavailable: %s",
                        data.get("id"), exc.__class__.__name__)
            return JSONResponse({"error": "database unavailable, retry later"},
                                status_code=503)
        log.info("stripe event %s (%s): %s", result.event_id, result.type, result.result)
        if result.closed_escalations:
            await anyio.to_thread.run_sync(update_cards, result.closed_escalations)
        return JSONResponse({"received": True, "result": result.result,
                             "closed_escalations": list(result.closed_escalations)})

    return endpoint


def stripe_webhook_route(deps: Deps, secret: str) -> Route:
    return Route(PATH, stripe_webhook(deps, secret), methods=["POST"])


__all__ = ["PATH", "stripe_webhook", "stripe_webhook_route"]
